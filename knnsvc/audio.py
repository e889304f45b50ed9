"""The only audio I/O of the project: load anything as mono 16 kHz, write atomically, loudness.

Song-scale audio is handled in blocks of `BLOCK_SECONDS`: `load_audio` decodes, mixes and
resamples block by block (peak memory: the 16 kHz result plus one block of the file),
`AudioWriter` takes the output as it is produced, and `LoudnessMeter` measures BS.1770 loudness
as blocks go by. Files are recognised by suffix (case-insensitive); the format written follows
the suffix of the output path.
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
from typing import BinaryIO, Iterable, Iterator, Protocol, TypeVar

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

_NONFINITE_MODES = ("error", "repair")
_SFE_SYSTEM = 2  # libsndfile's "System error": a failed read/write call, errno not passed on
_FULL_DISK_BYTES = 1 << 20  # a system error with less than this free is taken for a full disk
_HEADER_BYTES = 64 * 1024
_PCM_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
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


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, nonfinite: str = "error") -> torch.Tensor:
    """Read an audio file (see `AUDIO_SUFFIXES`) as a mono waveform at `sample_rate`, in blocks.

    The file is decoded `BLOCK_SECONDS` at a time; each block's channels are averaged (as the
    reference does) and, at another rate, fed to a streaming soxr resampler (VHQ). Peak memory is
    the result plus one block, not the decoded file (a 20-minute 44.1 kHz stereo file would be
    423 MB as float32). The streamed result equals `soxr.resample` of the whole mixed signal
    sample for sample, its length included (python-soxr's one-shot `resample` feeds libsoxr in
    pieces itself; tests compare them bit for bit).

    Args:
        nonfinite: "error": a file holding NaN or inf samples (possible in float WAV/AIFF) is
            rejected; "repair": they are replaced by 0 before mixing, with one warning.

    Returns:
        wav: (L,) float32, in [-1, 1] for integer formats.

    Raises:
        AudioError: the file is missing, not audio, has no samples, or holds non-finite samples.
        ValueError: `nonfinite` is not "error" or "repair".
    """
    if nonfinite not in _NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {_NONFINITE_MODES}, not {nonfinite!r}")
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    try:
        with sf.SoundFile(str(path)) as file:
            wav, num_read, num_bad = _read_mono(file, sample_rate)
            num_values = num_read * file.channels
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(path, f"not a readable audio file ({first_line(err)})") from None
    if num_read == 0:
        raise AudioError(path, "contains no samples")
    if num_bad and nonfinite == "error":
        raise AudioError(path, f"contains {_nonfinite(num_bad, num_values)}; re-export it, or load it "
                               "with nonfinite='repair' to replace them by 0")
    if num_bad:
        log.warning("%s: replaced %s by 0", path, _nonfinite(num_bad, num_values))
    return torch.from_numpy(wav)


def _read_mono(file: sf.SoundFile, sample_rate: int) -> tuple[np.ndarray, int, int]:
    """Decode, mix to mono and resample `file` block by block; non-finite values are zeroed.

    Returns:
        (wav (L,) float32 at `sample_rate`, frames read from the file, non-finite values zeroed).
    """
    resampler = None
    capacity = max(file.frames, 0)
    if file.samplerate != sample_rate:
        resampler = soxr.ResampleStream(file.samplerate, sample_rate, 1, dtype="float32", quality="VHQ")
        capacity = math.ceil(capacity * sample_rate / file.samplerate) + 1
    wav = np.empty(capacity, dtype=np.float32)  # grown in place should the header undercount
    length = 0

    def put(values: np.ndarray) -> None:
        nonlocal length
        if length + values.size > wav.size:
            wav.resize(max(length + values.size, wav.size + wav.size // 2), refcheck=False)
        wav[length:length + values.size] = values
        length += values.size

    buffer = np.empty((max(1, int(BLOCK_SECONDS * file.samplerate)), file.channels), dtype=np.float32)
    num_read = num_bad = 0
    while True:
        block = file.read(out=buffer)  # (frames, C), a view of `buffer`
        if len(block) == 0:
            break
        num_read += len(block)
        finite = np.isfinite(block)
        if not finite.all():
            num_bad += block.size - int(np.count_nonzero(finite))
            block[~finite] = 0.0
        mono = block.mean(axis=1)  # (frames, C) -> (frames,)
        put(resampler.resample_chunk(mono) if resampler is not None else mono)
    if resampler is not None:
        put(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    wav.resize(length, refcheck=False)
    return wav, num_read, num_bad


def check_finite(wav: torch.Tensor | np.ndarray, what: str) -> None:
    """Raise ValueError("<what>: N non-finite samples (NaN or inf) of M") if any sample is NaN or inf."""
    if isinstance(wav, torch.Tensor):
        num_bad = wav.numel() - int(torch.isfinite(wav).sum())
        total = wav.numel()
    else:
        num_bad = int(np.size(wav) - np.count_nonzero(np.isfinite(wav)))
        total = int(np.size(wav))
    if num_bad:
        raise ValueError(f"{what}: {_nonfinite(num_bad, total)}")


def is_silent(wav: torch.Tensor) -> bool:
    """True if the waveform never rises above -80 dBFS."""
    return wav.numel() == 0 or float(wav.abs().max()) < SILENCE_PEAK


def peak_limit(wav: torch.Tensor) -> torch.Tensor:
    """Divide by the peak if it exceeds 1 (the reference's only output level control)."""
    peak = float(wav.abs().max()) if wav.numel() else 0.0
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
    """Write a mono waveform that arrives in blocks to `path`, atomically.

    ``with AudioWriter(path) as writer: writer.write(block)`` with (L,) float blocks in order. The
    file appears at `path` only when the `with` block ends without an exception; on any exception
    (KeyboardInterrupt and SystemExit included) the temporary files are removed and nothing
    exists at `path` (an existing file there is left as it was). Format from the suffix (see
    `OUTPUT_SUFFIXES`): WAV 32-bit PCM (as the reference), FLAC and AIFF 24-bit PCM, OGG Vorbis,
    OPUS Opus in an Ogg container, MP3 layer III; `subtype` overrides the default.

    Level, without `loudness_lufs`: blocks go straight into the final format; samples beyond ±1
    are clipped and counted, and one warning at the end reports how many. Unlike `peak_limit`
    (which divides the whole waveform by its peak and so needs all of it), this keeps the level
    of the samples within range; vocoder outputs are tanh-bounded, so it rarely matters.

    With `loudness_lufs`: blocks are spooled as float32 into a temporary file beside `path` while
    a `LoudnessMeter` measures them; at the end the gain to the target is applied block by block
    while copying into the output, and the result is peak-limited to 1 (divided by its peak if the
    gain would push it above, as `peak_limit`). Disk use at the end: the spool (4 bytes a sample)
    plus the output (see `output_bytes`).

    Blocks holding NaN or inf are refused (ValueError). A full disk gives one line,
    ``AudioError(path, "no space left on the device ...")``, and leaves nothing behind.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int = SAMPLE_RATE,
        subtype: str | None = None,
        loudness_lufs: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.format, self.subtype = _output_format(self.path, subtype)
        with _write_errors(self.path, f"cannot write {self.format} {self.subtype} at {sample_rate} Hz"):
            sf.SoundFile(io.BytesIO(), "w", sample_rate, 1, self.subtype, format=self.format).close()  # refuse now
        if loudness_lufs is not None and not math.isfinite(loudness_lufs):
            raise ValueError(f"loudness_lufs must be a finite number, not {loudness_lufs}")
        self.loudness_lufs = loudness_lufs
        self.samples_written = 0
        self._meter = LoudnessMeter(sample_rate) if loudness_lufs is not None else None
        self._peak = 0.0
        self._clipped = 0
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

    def write(self, block: torch.Tensor | np.ndarray) -> None:
        """Append `block` (L,) to the output."""
        if self._stack is None:
            raise RuntimeError(f"{self.path}: AudioWriter.write outside its with block")
        samples = _samples(block, np.float32)
        check_finite(samples, f"{self.path}: block at sample {self.samples_written}")
        magnitude = np.abs(samples)
        if samples.size:
            self._peak = max(self._peak, float(magnitude.max()))
        with _write_errors(self.path):
            if self._output is not None:
                beyond = int(np.count_nonzero(magnitude > 1.0))
                if beyond:
                    self._clipped += beyond
                    samples = np.clip(samples, -1.0, 1.0)
                self._output.write(samples)
            else:
                assert self._meter is not None and self._spool_file is not None  # __enter__ opened the spool
                self._meter.add(samples)
                self._spool_file.write(samples.data)
        self.samples_written += samples.size

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
                        self.path, self._clipped, self.samples_written, self._peak)

    def _open_output(self, tmp: Path) -> sf.SoundFile:
        return sf.SoundFile(str(tmp), "w", self.sample_rate, 1, self.subtype, format=self.format)

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


def _nonfinite(num_bad: int, total: int) -> str:
    return f"{num_bad} non-finite samples (NaN or inf) of {total}"


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"
