"""The only audio I/O of the project: decode any file in blocks, resample, write atomically, loudness.

    file ─► AudioReader (header checked, (n, C) blocks) ─► mix ─► Resampler ─► load_audio: mono 16 kHz
    (n, C) or (L,) blocks ─► AudioWriter (temporary file beside the output, renamed at the end)

Song-scale audio is handled in blocks of `BLOCK_SECONDS`: `load_audio` decodes, mixes and
resamples block by block (peak memory: the 16 kHz result plus one block of the file),
`AudioWriter` takes the output as it is produced, and `LoudnessMeter` measures BS.1770 loudness
as blocks go by. Mono is the case C = 1 of the multichannel reader, resampler and writer (the
song's stems in `knnsvc.separation` use C = 1 or 2). Files are recognised by suffix
(case-insensitive); the format written follows the suffix of the output path.

Readers check before they allocate: a header's sample rate must lie in [`MIN_SAMPLE_RATE`,
`MAX_SAMPLE_RATE`], its frame count is believed only as far as the file's size allows (PCM) or
not at all (compressed formats, decoded until the decoder stops), a block never exceeds
`MAX_BLOCK_BYTES`, and a recording longer than `MAX_SECONDS` is refused (from a trustworthy header
at once, else as soon as decoding passes the limit).
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, Generator, Iterable, Iterator, Protocol, TypeVar

import numpy as np
import soundfile as sf
import soxr
import torch

from knnsvc.config import SAMPLE_RATE
from knnsvc.files import atomic_path, scratch_path
from knnsvc.runtime import first_line

log = logging.getLogger(__name__)

_CODECS = {
    ".wav": ("WAV", "PCM_32"),  # 32-bit PCM, as the reference writes its outputs
    ".flac": ("FLAC", "PCM_24"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".aiff": ("AIFF", "PCM_24"),
    ".aif": ("AIFF", "PCM_24"),
}
"""suffix: (libsndfile format, subtype written by default)."""


def _codec_available(suffix: str) -> bool:
    fmt, subtype = _CODECS[suffix]
    return fmt in sf.available_formats() and subtype in sf.available_subtypes(fmt)


AUDIO_SUFFIXES = tuple(suffix for suffix in _CODECS if _codec_available(suffix))
"""File types read by `load_audio` and picked up by `find_audio` (case-insensitive): those of
.wav .flac .mp3 .ogg .opus .aiff .aif that this machine's libsndfile decodes (MP3 needs
libsndfile >= 1.1, Opus >= 1.0.29). libsndfile identifies a file by its content, not its suffix."""

OUTPUT_SUFFIXES = AUDIO_SUFFIXES
"""File types `AudioWriter` and `save_audio` write, chosen by the output path's suffix. libsndfile
builds each codec with both directions, so these are the readable ones. Opus takes only 8, 12, 16,
24 or 48 kHz and MPEG audio 8 to 48 kHz in the standard steps: 16 kHz output is written natively
in every format (no resampling); another rate a format cannot hold is refused with an
`AudioError` naming the rates it can."""

SILENCE_PEAK = 1e-4
"""A recording whose absolute peak stays below this (-80 dBFS) counts as silent."""

BLOCK_SECONDS = 4.0
"""Seconds of audio decoded (at the file's rate) or copied at a time."""

MAX_BLOCK_BYTES = 32 * 2**20
"""At most this many bytes of decoded samples in one block (a header may claim 1024 channels)."""

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
"""Sample rates accepted from a file's header (Hz): from 1 kHz to 768 kHz, beyond any real
recording's range on either side; a header outside them is damaged or forged, and is refused
before anything is allocated from it (2147483647 Hz would make a 4 s block 32 GiB)."""

MAX_SECONDS = 4 * 3600.0
"""Longest recording (seconds) a reader decodes unless told otherwise: 4 hours, above any song
or concert recording; as mono 16 kHz float32 it is 0.9 GB. `load_audio(max_seconds=None)` lifts it."""

_NONFINITE_MODES = ("error", "repair")
_SFE_SYSTEM = 2  # libsndfile's "System error": a failed read/write call, errno not passed on
_FULL_DISK_BYTES = 1 << 20  # a system error with less than this free is taken for a full disk
_HEADER_BYTES = 64 * 1024
_PCM_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
_FIXED_FRAME_BYTES = {**_PCM_BYTES, "ULAW": 1, "ALAW": 1}  # subtypes whose size gives their length ...
_COMPRESSED_FORMATS = {"FLAC", "OGG", "MPEG", "MP3"}  # ... except in these containers (FLAC holds "PCM_16")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_CODED_BITS_PER_SECOND = 128_000  # above libsndfile's default Vorbis/Opus/MP3 rates at <= 48 kHz mono

_GATE_BLOCK_S = 0.4  # BS.1770-4 gating block: 400 ms ...
_GATE_STEP = 1.0 - 0.75  # ... with 75 % overlap: a new block every 100 ms
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
_LOUDNESS_OFFSET = -0.691  # BS.1770 eq. 2: LUFS = -0.691 + 10 log10(mean square after K-weighting)


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    nonfinite: str = "error",
    max_seconds: float | None = MAX_SECONDS,
) -> torch.Tensor:
    """Read an audio file (see `AUDIO_SUFFIXES`) as a mono waveform at `sample_rate`, in blocks.

    Decode blocks (`AudioReader`) -> mix (the channels averaged, as the reference does) ->
    resample (`Resampler`, soxr VHQ, streamed). Peak memory is the result plus one block, not the
    decoded file (a 20-minute 44.1 kHz stereo file would be 423 MB as float32). The streamed
    result equals `soxr.resample` of the whole mixed signal sample for sample, its length included
    (python-soxr's one-shot `resample` feeds libsoxr in pieces itself; tests compare them bit for
    bit). The header is checked before anything is allocated (see `AudioReader`): the result
    buffer is sized from the frame count only where the file's size vouches for it (PCM), and
    otherwise grows as blocks are decoded.

    Args:
        nonfinite: "error": a file holding NaN or inf samples (possible in float WAV/AIFF), or
            float64 samples beyond the float32 range, is rejected; "repair": they are replaced by
            0 before mixing, with one warning.
        max_seconds: refuse files longer than this (`MAX_SECONDS` by default; None: no limit).

    Returns:
        wav: (L,) float32, in [-1, 1] for integer formats.

    Raises:
        AudioError: the file is missing, not audio, has a sample rate outside
            [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`], is longer than `max_seconds`, has no samples,
            or holds non-finite or out-of-range samples.
        ValueError: `nonfinite` is not "error" or "repair", or `max_seconds` is not positive.
    """
    if nonfinite not in _NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {_NONFINITE_MODES}, not {nonfinite!r}")
    with AudioReader(path, max_seconds) as reader:
        resampler = Resampler(reader.sample_rate, sample_rate, 1)
        wav = np.empty(_output_capacity(reader, sample_rate), dtype=np.float32)  # grown in place when short
        length = 0

        def put(values: np.ndarray) -> None:
            nonlocal wav, length
            if length + values.size > wav.size:
                wav.resize(max(length + values.size, wav.size + wav.size // 2), refcheck=False)
            wav[length:length + values.size] = values
            length += values.size

        for block in reader.blocks():
            put(resampler(block.mean(axis=1, keepdims=True))[:, 0])  # (n, C) -> (n, 1) -> (n', 1)
        put(resampler.flush()[:, 0])
        if reader.frames_read == 0:
            raise AudioError(reader.path, "contains no samples")
        reader.check_values(nonfinite, "load it with nonfinite='repair'")
    wav.resize(length, refcheck=False)
    return torch.from_numpy(wav)


def _output_capacity(reader: AudioReader, sample_rate: int) -> int:
    """Samples to allocate for `load_audio`'s result at first: all of them when the header's frame
    count is vouched for by the file size, else one block's worth (the buffer grows)."""
    frames = reader.frames if reader.frames is not None else reader.block_frames
    return math.ceil(frames * sample_rate / reader.sample_rate) + 1


class AudioReader:
    """An audio file opened for decoding in blocks of (n, C) frames, its header checked first.

    ``with AudioReader(path) as reader: for block in reader.blocks(): ...``. Nothing is allocated
    from the header before it is checked:

    - the sample rate must lie in [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`];
    - for PCM subtypes (WAV, AIFF, ...: a fixed number of bytes a frame) the frame count is
      trusted only up to what the file's size can hold, and a file whose count says it is longer
      than `max_seconds` is refused at once;
    - for compressed formats (FLAC, MP3, Ogg, ADPCM) the header's count is not used at all
      (`frames` is None): decoding runs until the decoder stops, and stops with an AudioError as
      soon as more than `max_seconds` have come out;
    - a block holds at most `BLOCK_SECONDS` of audio, at most `MAX_BLOCK_BYTES`, and, for PCM,
      at most the frames the file can hold (plus one).

    NaN/inf samples and float64 samples beyond the float32 range are replaced by 0 in the blocks
    and counted; `check_values` then refuses the file or reports the repair.

    Attributes:
        sample_rate, channels, format, subtype: from the (checked) header.
        header_frames: the frame count as the header gives it, unchecked (only for estimates).
        frames: the number of frames the header gives, capped by the file size; None for
            compressed formats (unknown until decoded).
        frames_read: frames decoded so far.

    Raises (from the constructor):
        AudioError: missing, not audio, a sample rate out of range, or longer than `max_seconds`.
        ValueError: `max_seconds` is not a positive number or None.
    """

    def __init__(self, path: str | os.PathLike, max_seconds: float | None = MAX_SECONDS) -> None:
        if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number or None, not {max_seconds!r}")
        self.path = Path(path)
        self.max_seconds = max_seconds
        if not self.path.is_file():
            raise AudioError(self.path, "file not found")
        try:
            self._file: sf.SoundFile | None = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise AudioError(self.path, f"not a readable audio file ({first_line(err)})") from None
        try:
            self._check_header(self._file)
        except BaseException:
            self.close()
            raise
        self.frames_read = 0
        self.num_nonfinite = 0
        self.num_out_of_range = 0
        self.largest_out_of_range = 0.0

    def _check_header(self, file: sf.SoundFile) -> None:
        self.sample_rate = int(file.samplerate)
        self.channels = int(file.channels)
        self.format = str(file.format)
        self.subtype = str(file.subtype)
        self.header_frames = int(file.frames)  # as the header says: not to be trusted
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise AudioError(self.path, f"the header gives a sample rate of {self.sample_rate} Hz, outside the "
                                        f"supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz (a damaged file?)")
        if self.channels < 1:
            raise AudioError(self.path, f"the header gives {self.channels} channels")
        fixed = self.format not in _COMPRESSED_FORMATS and self.subtype in _FIXED_FRAME_BYTES
        frame_bytes = _FIXED_FRAME_BYTES[self.subtype] * self.channels if fixed else 0
        self.frames: int | None = None
        room = None  # frames the file's size can hold (PCM)
        if frame_bytes:
            room = self.path.stat().st_size // frame_bytes
            self.frames = max(0, min(int(file.frames), room))
            if self.max_seconds is not None and self.frames > self.max_seconds * self.sample_rate:
                raise AudioError(self.path, too_long(self.frames / self.sample_rate, self.max_seconds))
        self._dtype = np.float64 if self.subtype == "DOUBLE" else np.float32  # float64: to see what float32 cannot hold
        block = int(BLOCK_SECONDS * self.sample_rate)
        block = min(block, MAX_BLOCK_BYTES // (self.channels * np.dtype(self._dtype).itemsize))
        if room is not None:
            block = min(block, room + 1)
        self.block_frames = max(1, block)

    @property
    def seconds(self) -> float | None:
        """Duration from the header when it can be trusted (PCM), else None."""
        return None if self.frames is None else self.frames / self.sample_rate

    def blocks(self) -> Iterator[np.ndarray]:
        """Decode the rest of the file: fresh (n, C) float32 arrays, n <= `block_frames`.

        Raises:
            AudioError: the decoder fails, or more than `max_seconds` have been decoded.
        """
        if self._file is None:
            raise RuntimeError(f"{self.path}: AudioReader is closed")
        limit = None if self.max_seconds is None else self.max_seconds * self.sample_rate
        while True:
            buffer = np.empty((self.block_frames, self.channels), dtype=self._dtype)
            try:
                count = _read_into(self._file, buffer)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(self.path, f"not a readable audio file ({first_line(err)})") from None
            if count == 0:
                return
            self.frames_read += count
            if limit is not None and self.frames_read > limit:
                assert self.max_seconds is not None
                raise AudioError(self.path, too_long(self.frames_read / self.sample_rate, self.max_seconds,
                                                     at_least=True))
            yield self._cleaned(buffer[:count])

    def _cleaned(self, block: np.ndarray) -> np.ndarray:
        """`block` (n, C) as float32 with NaN/inf and values beyond float32 zeroed (and counted)."""
        finite = np.isfinite(block)
        if not finite.all():
            self.num_nonfinite += block.size - int(np.count_nonzero(finite))
            block[~finite] = 0.0
        if block.dtype == np.float64:
            beyond = np.abs(block) > _FLOAT32_MAX
            if beyond.any():
                self.num_out_of_range += int(np.count_nonzero(beyond))
                self.largest_out_of_range = max(self.largest_out_of_range, float(np.abs(block[beyond]).max()))
                block[beyond] = 0.0
            return block.astype(np.float32)
        return block

    def value_problem(self) -> str | None:
        """What is wrong with the samples decoded so far ("4 non-finite samples (NaN or inf) of 88200",
        "2 samples out of range (|x| up to 1e+300) of 10"), or None."""
        total = self.frames_read * self.channels
        problems = []
        if self.num_nonfinite:
            problems.append(_nonfinite(self.num_nonfinite, total))
        if self.num_out_of_range:
            problems.append(f"{self.num_out_of_range} samples out of range (|x| up to "
                            f"{self.largest_out_of_range:.3g}) of {total}")
        return " and ".join(problems) or None

    def check_values(self, nonfinite: str, repair_hint: str) -> None:
        """Refuse ("error") or report the repair ("repair", one WARNING) of the bad samples decoded.

        Raises:
            AudioError: ``"<path>: contains <problem>; re-export it, or <repair_hint> to replace them by 0"``.
        """
        problem = self.value_problem()
        if problem is None:
            return
        if nonfinite == "error":
            raise AudioError(self.path, f"contains {problem}; re-export it, or {repair_hint} to replace them by 0")
        log.warning("%s: replaced %s by 0", self.path, problem)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def audio_blocks(path: str | os.PathLike, max_seconds: float | None = None) -> Generator[np.ndarray, None, None]:
    """Decode `path` in (n, C) float32 blocks, NaN/inf zeroed without a word: for files this
    program wrote (stems); use `AudioReader` for the user's files. Raises AudioError."""
    with AudioReader(path, max_seconds) as reader:
        yield from reader.blocks()


_RAW_READ = all(hasattr(sf, name) for name in ("_snd", "_ffi"))
"""Whether soundfile exposes its libsndfile binding (`_snd`, `_ffi`: every release since 0.9)."""


def _read_into(file: sf.SoundFile, out: np.ndarray) -> int:
    """Decode up to len(out) frames into `out` (n, C) (float32 or float64); the number decoded.

    This is libsndfile's ``sf_readf_float``/``sf_readf_double`` through soundfile's own binding,
    which is what `SoundFile.read` calls, without the seek `SoundFile.read` makes after each read:
    in a compressed file whose header overstates its length (or gives none: a streamed FLAC), that
    seek fails past the last real frame, and the end of the file would be lost. A soundfile
    without that binding (`_RAW_READ` false) falls back to `SoundFile.read`: every honest file
    still decodes, one with such a header ends in an AudioError.
    """
    assert out.flags.c_contiguous and out.ndim == 2 and out.shape[1] == file.channels
    if not _RAW_READ:
        return len(file.read(out=out))
    ctype = "double" if out.dtype == np.float64 else "float"
    read = getattr(sf._snd, f"sf_readf_{ctype}")
    count = int(read(file._file, sf._ffi.cast(f"{ctype} *", out.ctypes.data), len(out)))
    code = int(sf._snd.sf_error(file._file))
    if code:
        raise sf.LibsndfileError(code)
    return count


# ----------------------------------------------------------------------------------- wording of recording checks
# One wording for each check a recording can fail, for every module and command: each returns
# the problem, to be put after the file's name (``AudioError(path, problem)``) or a subject
# ("the reference", "source").

def too_long(seconds: float, max_seconds: float, at_least: bool = False) -> str:
    """``"12345.0 s long, longer than the limit of 14400 s; raise it with --max-duration"``."""
    more = "at least " if at_least else ""
    return (f"{more}{seconds:.1f} s long, longer than the limit of {max_seconds:g} s; raise it with "
            "--max-duration")


def too_short(seconds: float, needed: float | None = None, frames: int | None = None) -> str:
    """``"too short: 0.40 s (20 frames); at least 0.64 s"`` (the parts in brackets and after ';' when given)."""
    text = f"too short: {seconds:.2f} s"
    if frames is not None:
        text += f" ({frames} frames)"
    if needed is not None:
        text += f"; at least {needed:.2f} s"
    return text


MEDIAN_UNDEFINED = "its median pitch is undefined"
"""What an automatic pitch shift lacks without voiced frames (`no_voiced_frames(MEDIAN_UNDEFINED)`)."""


def no_voiced_frames(consequence: str | None = None) -> str:
    """``"no voiced frames"``, or ``"no voiced frames, so <consequence>"``."""
    return "no voiced frames" + (f", so {consequence}" if consequence else "")


def silent() -> str:
    """``"the recording is silent (peak below -80 dBFS)"``: the problem of a waveform `is_silent` accepts."""
    return f"the recording is silent (peak below {20 * math.log10(SILENCE_PEAK):.0f} dBFS)"


class Resampler:
    """Streaming soxr (VHQ) conversion of (n, C) float32 blocks from `rate_in` to `rate_out`.

    ``out = [resampler(block) for block in blocks] + [resampler.flush()]`` equals, sample for
    sample and in length, ``soxr.resample`` of the whole signal; at equal rates it is the identity.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        self.channels = channels
        self.stream = None
        if rate_in != rate_out:
            self.stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="VHQ")

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """(n, C) -> (n', C) float32."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        return block if self.stream is None else self.stream.resample_chunk(block)

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler, (n, C) (none at equal rates)."""
        empty = np.zeros((0, self.channels), dtype=np.float32)
        return empty if self.stream is None else self.stream.resample_chunk(empty, last=True)


FINITE_CHECK_ROWS = 1 << 20
"""Rows (samples, or frames of a multichannel block) per slice of `check_finite`."""


def check_finite(wav: torch.Tensor | np.ndarray, what: str) -> None:
    """Raise ValueError("<what>: N non-finite samples (NaN or inf) of M") if any sample is NaN or inf.

    Counted `FINITE_CHECK_ROWS` rows of the first axis at a time, so the temporaries stay one
    slice's size however long `wav` is.
    """
    if isinstance(wav, torch.Tensor):
        rows_t = wav.reshape(1) if wav.dim() == 0 else wav
        total = wav.numel()
        num_bad = total - sum(int(torch.isfinite(rows_t[a : a + FINITE_CHECK_ROWS]).sum())
                              for a in range(0, rows_t.shape[0], FINITE_CHECK_ROWS))
    else:
        rows_a = np.atleast_1d(wav)
        total = int(rows_a.size)
        num_bad = total - sum(int(np.count_nonzero(np.isfinite(rows_a[a : a + FINITE_CHECK_ROWS])))
                              for a in range(0, rows_a.shape[0], FINITE_CHECK_ROWS))
    if num_bad:
        raise ValueError(f"{what}: {_nonfinite(num_bad, total)}")


def _peak(wav: torch.Tensor) -> float:
    """The largest magnitude of a non-empty waveform, max(-min, max) (no whole-length abs() copy;
    NaN if it holds NaN, as ``wav.abs().max()``)."""
    low, high = torch.aminmax(wav)
    return max(-float(low), float(high))


def is_silent(wav: torch.Tensor) -> bool:
    """True if the waveform never rises above -80 dBFS."""
    return wav.numel() == 0 or _peak(wav) < SILENCE_PEAK


def peak_limit(wav: torch.Tensor) -> torch.Tensor:
    """Divide by the peak if it exceeds 1 (the reference's only output level control)."""
    peak = _peak(wav) if wav.numel() else 0.0
    return wav / peak if peak > 1.0 else wav


class LoudnessMeter:
    """Integrated loudness (ITU-R BS.1770-4) of a mono signal fed in blocks of any size.

    K-weighting uses pyloudnorm's own two biquads (high shelf, then high pass; their state is
    carried from block to block with `lfilter(..., zi=...)`); 400 ms gating blocks start every
    100 ms, and a gating block that straddles two calls is completed by the next; absolute gate
    -70 LUFS, relative gate -10 LU. The result equals
    `pyloudnorm.Meter(sample_rate).integrated_loudness(whole)` for any split (tested to 1e-6 LU),
    pyloudnorm's block grid included: block j spans samples
    [int(0.4 (j/4) rate), int(0.4 (j/4 + 1) rate)), there are round((T - 0.4) / 0.1) + 1 blocks for
    T seconds, and a last block that runs past the end holds the energy of the samples present
    (over a full block's length).

    Memory: the filtered samples of the gating block in progress and one float per 100 ms.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        import pyloudnorm  # here, as scipy.signal below: seconds to import, and few callers measure

        self.sample_rate = sample_rate
        self.num_samples = 0
        # pyloudnorm keeps its K-weighting stages, in the order it applies them, in Meter._filters.
        stages = pyloudnorm.Meter(sample_rate)._filters.values()
        self._stages = [(stage.b, stage.a, stage.passband_gain) for stage in stages]
        self._states = [np.zeros(max(len(a), len(b)) - 1) for b, a, _ in self._stages]
        self._sums: list[float] = []  # sum of squares of each complete gating block
        self._pending = np.zeros(0)  # K-weighted samples from `_pending_start` on
        self._pending_start = 0

    def add(self, block: torch.Tensor | np.ndarray) -> None:
        """Measure the next `block` (L,) of the signal."""
        from scipy.signal import lfilter

        weighted = _samples(block, np.float64)
        if weighted.size == 0:
            return
        for i, (b, a, gain) in enumerate(self._stages):
            weighted, self._states[i] = lfilter(b, a, weighted, zi=self._states[i])
            weighted = gain * weighted
        self._pending = np.concatenate([self._pending, weighted])
        self.num_samples += weighted.size
        while True:
            start, stop = self._block_bounds(len(self._sums))
            if stop > self.num_samples:
                break
            self._sums.append(self._sum_of_squares(start, stop))
        start = self._block_bounds(len(self._sums))[0]
        self._pending = self._pending[start - self._pending_start:]
        self._pending_start = start

    def integrated_lufs(self) -> float:
        """Gated loudness of everything added so far; -inf when silent or shorter than 400 ms."""
        if self.num_samples < _GATE_BLOCK_S * self.sample_rate:
            return -math.inf
        seconds = self.num_samples / self.sample_rate
        num_blocks = int(np.round((seconds - _GATE_BLOCK_S) / (_GATE_BLOCK_S * _GATE_STEP))) + 1
        sums = self._sums[:num_blocks] + [
            self._sum_of_squares(self._block_bounds(j)[0], self.num_samples)
            for j in range(len(self._sums), num_blocks)
        ]
        mean_squares = np.asarray(sums) / (_GATE_BLOCK_S * self.sample_rate)
        with np.errstate(divide="ignore"):
            block_lufs = _LOUDNESS_OFFSET + 10.0 * np.log10(mean_squares)
        above_absolute = mean_squares[block_lufs >= _ABSOLUTE_GATE_LUFS]
        if above_absolute.size == 0:
            return -math.inf
        relative_gate = _LOUDNESS_OFFSET + 10.0 * np.log10(above_absolute.mean()) + _RELATIVE_GATE_LU
        gated = mean_squares[(block_lufs > relative_gate) & (block_lufs > _ABSOLUTE_GATE_LUFS)]
        if gated.size == 0:
            return -math.inf
        return float(_LOUDNESS_OFFSET + 10.0 * np.log10(gated.mean()))

    def _block_bounds(self, j: int) -> tuple[int, int]:
        """Sample range of gating block j, computed as pyloudnorm computes it."""
        start = int(_GATE_BLOCK_S * (j * _GATE_STEP) * self.sample_rate)
        stop = int(_GATE_BLOCK_S * (j * _GATE_STEP + 1) * self.sample_rate)
        return start, stop

    def _sum_of_squares(self, start: int, stop: int) -> float:
        return float(np.sum(np.square(self._pending[start - self._pending_start:stop - self._pending_start])))


def _loudness_gain(meter: LoudnessMeter, lufs: float, what: str) -> float:
    """Gain that brings the measured signal to `lufs`; 1 (with a warning if too short) if unmeasurable."""
    if meter.num_samples < _GATE_BLOCK_S * meter.sample_rate:
        log.warning("%s too short to measure loudness (%.3f s); left unchanged", what,
                    meter.num_samples / meter.sample_rate)
        return 1.0
    measured = meter.integrated_lufs()
    if not math.isfinite(measured):  # silent
        return 1.0
    return 10.0 ** ((lufs - measured) / 20.0)


def loudness_normalise(wav: torch.Tensor, lufs: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Scale `wav` (L,) to an integrated loudness of `lufs` (ITU-R BS.1770, as kNN-VC's output stage).

    Audio too short (under 400 ms, with a warning) or too quiet to measure is returned unchanged.
    """
    meter = LoudnessMeter(sample_rate)
    meter.add(wav.reshape(-1))
    gain = _loudness_gain(meter, lufs, "audio")
    return wav if gain == 1.0 else wav * gain


class AudioWriter:
    """Write a waveform that arrives in blocks to `path`, atomically: mono, or C channels.

    ``with AudioWriter(path) as writer: writer.write(block)`` with (L,) float blocks in order
    (``channels=C`` > 1: (n, C) blocks, e.g. the stems of a song). The
    file appears at `path` only when the `with` block ends without an exception; on any exception
    (KeyboardInterrupt and SystemExit included) the temporary files are removed and nothing
    exists at `path` (an existing file there is left as it was). Format from the suffix (see
    `OUTPUT_SUFFIXES`): WAV 32-bit PCM (as the reference), FLAC and AIFF 24-bit PCM, OGG Vorbis,
    OPUS Opus in an Ogg container, MP3 layer III; `subtype` overrides the default.

    Level, without `loudness_lufs`: blocks go straight into the final format; samples beyond ±1
    are clipped (except in float subtypes, FLOAT and DOUBLE, which hold them) and counted, and one
    warning at the end reports how many. Unlike `peak_limit`
    (which divides the whole waveform by its peak and so needs all of it), this keeps the level
    of the samples within range; the HiFi-GAN vocoders' outputs are tanh-bounded, so it rarely
    matters for them (a Vocos output is not bounded, and its clipped samples are counted).

    With `loudness_lufs`: blocks are spooled as float32 into a temporary file beside `path` while
    a `LoudnessMeter` measures them; at the end the gain to the target is applied block by block
    while copying into the output, and the result is peak-limited to 1 (divided by its peak if the
    gain would push it above, as `peak_limit`). Disk use at the end: the spool (4 bytes a sample)
    plus the output (see `output_bytes`). Mono only.

    Blocks holding NaN or inf are refused (ValueError). A full disk gives one line,
    ``AudioError(path, "no space left on the device ...")``, and leaves nothing behind.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int = SAMPLE_RATE,
        subtype: str | None = None,
        loudness_lufs: float | None = None,
        channels: int = 1,
    ) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        if not (isinstance(channels, int) and channels >= 1):
            raise ValueError(f"channels must be a positive integer, not {channels!r}")
        self.channels = channels
        self.format, self.subtype = _output_format(self.path, subtype)
        what = f"{self.format} {self.subtype} at {sample_rate} Hz" + (f", {channels} channels" if channels > 1 else "")
        with _write_errors(self.path, f"cannot write {what}"):  # refuse now, before any file exists
            sf.SoundFile(io.BytesIO(), "w", sample_rate, channels, self.subtype, format=self.format).close()
        if loudness_lufs is not None and not math.isfinite(loudness_lufs):
            raise ValueError(f"loudness_lufs must be a finite number, not {loudness_lufs}")
        if loudness_lufs is not None and channels != 1:
            raise ValueError("loudness_lufs is for mono output only")
        self.loudness_lufs = loudness_lufs
        self.samples_written = 0
        self._meter = LoudnessMeter(sample_rate) if loudness_lufs is not None else None
        self._peak = 0.0
        self._clipped = 0
        self._clip = self.subtype not in ("FLOAT", "DOUBLE")
        self._stack: ExitStack | None = None
        self._output: sf.SoundFile | None = None  # without loudness_lufs: the output, written as blocks come
        self._spool: Path | None = None  # with loudness_lufs: the float32 samples, copied out at the end
        self._spool_file: BinaryIO | None = None

    def __enter__(self) -> AudioWriter:
        if self._stack is not None:
            raise RuntimeError(f"{self.path}: AudioWriter is already open")
        stack = ExitStack()
        try:
            with _write_errors(self.path):
                if self._meter is None:
                    self._output = self._open_output(stack.enter_context(atomic_path(self.path)))
                    stack.enter_context(_closing(self._output))
                else:
                    self._spool = stack.enter_context(scratch_path(self.path))
                    self._spool_file = open(self._spool, "wb")
                    stack.enter_context(_closing(self._spool_file))
        except BaseException as err:
            stack.__exit__(type(err), err, err.__traceback__)
            raise
        self._stack = stack
        return self

    @property
    def frames_written(self) -> int:
        """Frames (samples per channel) written so far; `samples_written` for mono."""
        return self.samples_written

    def write(self, block: torch.Tensor | np.ndarray) -> None:
        """Append `block`: (L,) (or (L, 1)) for mono, (n, C) for C channels."""
        if self._stack is None:
            raise RuntimeError(f"{self.path}: AudioWriter.write outside its with block")
        if self.channels == 1:
            if block.ndim == 2 and block.shape[1] == 1:
                block = block[:, 0]  # (L, 1) -> (L,)
            samples = _samples(block, np.float32)
            check_finite(samples, f"{self.path}: block at sample {self.samples_written}")
        else:
            samples = _frames(block, self.channels, self.path)
            check_finite(samples, f"{self.path}: block at frame {self.samples_written}")
        magnitude = np.abs(samples)
        if samples.size:
            self._peak = max(self._peak, float(magnitude.max()))
        with _write_errors(self.path):
            if self._output is not None:
                beyond = int(np.count_nonzero(magnitude > 1.0)) if self._clip else 0
                if beyond:
                    self._clipped += beyond
                    samples = np.clip(samples, -1.0, 1.0)
                self._output.write(samples)
            else:
                assert self._meter is not None and self._spool_file is not None  # __enter__ opened the spool
                self._meter.add(samples)
                self._spool_file.write(samples.data)
        self.samples_written += len(samples)

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._stack = self._stack, None
        assert stack is not None  # set by __enter__
        if exc_type is not None:
            stack.__exit__(exc_type, exc, tb)
            return
        with stack, _write_errors(self.path):
            if self._output is not None:
                self._output.close()
            else:
                self._copy_spool()
        if self._clipped:
            log.warning("%s: %d of %d samples were beyond ±1 and clipped (peak %.3f)",
                        self.path, self._clipped, self.samples_written * self.channels, self._peak)

    def _open_output(self, tmp: Path) -> sf.SoundFile:
        return sf.SoundFile(str(tmp), "w", self.sample_rate, self.channels, self.subtype, format=self.format)

    def _copy_spool(self) -> None:
        """Close the spool, then copy it into the output with the loudness gain and the peak limit."""
        assert self._spool_file is not None and self._spool is not None  # __enter__ opened the spool
        assert self._meter is not None and self.loudness_lufs is not None  # the spool is kept for them
        self._spool_file.close()
        gain = _loudness_gain(self._meter, self.loudness_lufs, f"{self.path}:")
        limited = self._peak * gain > 1.0
        buffer = np.empty(max(1, int(BLOCK_SECONDS * self.sample_rate)), dtype=np.float32)
        with atomic_path(self.path) as tmp, _closing(self._open_output(tmp)) as out, open(self._spool, "rb") as spool:
            while count := spool.readinto(buffer.data) // buffer.itemsize:
                scaled = buffer[:count] / self._peak if limited else buffer[:count] * gain
                out.write(np.clip(scaled, -1.0, 1.0, out=scaled))  # clip: float32 rounding of the gain only
            out.close()


def save_audio(
    path: str | os.PathLike, wav: torch.Tensor, sample_rate: int = SAMPLE_RATE, subtype: str | None = None
) -> Path:
    """Write `wav` (L,) atomically, peak-limited first (see `AudioWriter` for formats and errors)."""
    with AudioWriter(path, sample_rate, subtype) as writer:
        writer.write(peak_limit(wav.detach().float().cpu().reshape(-1)))
    return Path(path)


def output_bytes(
    num_samples: int, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, subtype: str | None = None,
    loudness: bool = False,
) -> int:
    """Upper estimate of the disk space `AudioWriter` needs for `num_samples` at `path`, for a pre-check.

    PCM subtypes (WAV, AIFF; FLAC, whose frames never exceed PCM by much): their sample width;
    other codecs: 1 byte a sample or 128 kbit/s, whichever is more (libsndfile's default Vorbis,
    Opus and MP3 rates stay under 80 kbit/s on white noise at <= 48 kHz mono); plus 64 KiB of
    headers and metadata. `loudness`: add the float32 spool kept beside the file until the end.
    """
    _, subtype = _output_format(Path(path), subtype)
    if subtype in _PCM_BYTES:
        body = num_samples * _PCM_BYTES[subtype]
    else:
        body = max(num_samples, math.ceil(num_samples / sample_rate * _CODED_BITS_PER_SECOND / 8))
    return body + _HEADER_BYTES + (4 * num_samples if loudness else 0)


def check_disk_space(path: str | os.PathLike, num_bytes: int) -> None:
    """Raise AudioError if the device that will hold `path` has less than `num_bytes` free."""
    free = _free_bytes(Path(path).parent)
    if free < num_bytes:
        raise AudioError(path, f"not enough free disk space: about {_mib(num_bytes)} needed, {_mib(free)} free")


def find_audio(folder: str | os.PathLike[str], exclude: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """All audio files (`AUDIO_SUFFIXES`) under `folder`, recursively, in sorted order.

    Skipped: hidden files and folders (name starting with "."; this covers the temporary files of
    `knnsvc.files`, which are hidden and end in ".partial"), anything inside the `exclude`
    folders (e.g. an output folder within the source folder), and symbolic links to folders.
    """
    excluded = [Path(p).resolve() for p in exclude]

    def is_excluded(here: Path) -> bool:
        return bool(excluded) and any(here.resolve().is_relative_to(p) for p in excluded)

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if is_excluded(here):
            dirnames.clear()
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            here / name for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES and (here / name).is_file()
        )
    return sorted(found)


def _output_format(path: Path, subtype: str | None) -> tuple[str, str]:
    """(libsndfile format, subtype) for writing `path`; AudioError if it cannot be written."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        kind = f"{suffix!r} files" if suffix else "a file without a suffix"
        raise AudioError(path, f"cannot write {kind} (writable: {', '.join(OUTPUT_SUFFIXES)})")
    fmt, default = _CODECS[suffix]
    subtype = default if subtype is None else subtype.upper()
    if subtype not in sf.available_subtypes(fmt):
        raise AudioError(path, f"{fmt} files cannot hold subtype {subtype!r} "
                               f"(available: {', '.join(sorted(sf.available_subtypes(fmt)))})")
    return fmt, subtype


@contextmanager
def _write_errors(path: Path, failure: str = "could not write") -> Iterator[None]:
    """Turn a full disk into one AudioError line, and libsndfile's errors into AudioError.

    libsndfile reports a failed write() as a bare "System error", without errno, so a system error
    with (almost) no free space left in the folder is taken for a full disk.
    """
    try:
        yield
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise AudioError(path, "no space left on the device; nothing was written") from None
        raise
    except sf.LibsndfileError as err:
        if err.code == _SFE_SYSTEM and _free_bytes(path.parent) < _FULL_DISK_BYTES:
            raise AudioError(path, "no space left on the device; nothing was written") from None
        message = err.error_string.strip().removeprefix("Error : ") or str(err)
        raise AudioError(path, f"{failure} ({first_line(message)})") from None


class _Closable(Protocol):
    def close(self) -> None: ...


_ClosableT = TypeVar("_ClosableT", bound=_Closable)


@contextmanager
def _closing(file: _ClosableT) -> Iterator[_ClosableT]:
    """Close `file` at exit; when an exception is already on its way out, errors of closing are moot."""
    try:
        yield file
    except BaseException:
        try:
            file.close()
        except (OSError, RuntimeError):
            pass
        raise
    file.close()


def _free_bytes(folder: Path) -> int:
    """Free bytes on the device of `folder`, or of its nearest existing parent."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _samples(block: torch.Tensor | np.ndarray, dtype: type[np.float32] | type[np.float64]) -> np.ndarray:
    """`block` (L,) as a contiguous numpy array of `dtype` (float32 or float64)."""
    if isinstance(block, torch.Tensor):
        block = block.detach().to("cpu", torch.float64 if dtype is np.float64 else torch.float32).numpy()
    values = np.ascontiguousarray(block, dtype=dtype)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D waveform (L,), got shape {tuple(values.shape)}")
    return values


def _frames(block: torch.Tensor | np.ndarray, channels: int, path: Path) -> np.ndarray:
    """`block` (n, C) as a contiguous float32 numpy array; ValueError for another shape."""
    if isinstance(block, torch.Tensor):
        block = block.detach().to("cpu", torch.float32).numpy()
    values = np.ascontiguousarray(block, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != channels:
        raise ValueError(f"{path}: expected blocks of shape (n, {channels}), got {tuple(values.shape)}")
    return values


def _nonfinite(num_bad: int, total: int) -> str:
    return f"{num_bad} non-finite samples (NaN or inf) of {total}"


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"
