"""Vocal separation of a mixed song with HTDemucs, in bounded memory.

    song (L, C) at its rate ─► mono mix statistics (one pass) ─► C -> 2 channels, soxr to 44.1 kHz,
        normalised ─► HTDemucs windows of 7.8 s every 5.85 s, triangle-weighted overlap-add
        ─► vocals (2, L') ─► soxr back to the song's rate, 2 -> C channels ─► vocals.wav
                                          song − vocals ─► accompaniment.wav

The model is Demucs v4's ``htdemucs`` (Hybrid Transformer Demucs, 4 stems: drums, bass, other,
vocals; 41,984,456 parameters), run through `demucs-infer`, the inference-only fork of Demucs for
PyTorch 2.x, which imports without torchaudio. Only its vocal stem is kept: the accompaniment is
the song minus the vocals at the song's own rate, so ``vocals + accompaniment`` is the song
exactly (up to float32 rounding) and the model's other three stems are not needed.

The song is separated as it streams: `VocalSeparator` computes what
``demucs_infer.apply.apply_model(model, mix, shifts=0, split=True, overlap=0.25)`` computes for
the whole song (the same windows, weights and padding), but holds only about two windows of input
and output at a time, and both stems are written block by block. Peak memory therefore does not
grow with the song's length (see the README for the measured figures); ``shifts=0`` (no random
time shift) keeps the result deterministic.

Weights: the released ``955717e8-8726e21a.th`` (the file demucs-infer itself downloads for
``htdemucs``) is fetched once into ``torch.hub.get_dir()/checkpoints`` and read with
``torch.load(weights_only=True)``. It is a pickled Demucs "package" dict whose only non-plain
objects are a reference to the class ``demucs.htdemucs.HTDemucs`` and ``fractions.Fraction`` (its
7.8 s segment), and exactly those two are allowlisted (`torch.serialization.safe_globals`); any
other pickled object makes the file refused.

`write_remix` puts stems back together: accompaniment plus a converted vocal, streamed, at the
song's rate and channel count, peak-limited. All decoding, resampling and writing goes through
`knnsvc.audio` (`AudioReader`, `Resampler`, `AudioWriter` with C channels), so a song's header is
checked as any recording's: sample rate range, frame count against the file size, duration cap.

Offline route: `save_tiny_separator` writes a seeded random HTDemucs of `TINY_HTDEMUCS_KWARGS`
(about 25k parameters, 1 s windows) in the release's package format; ``tests/golden/
htdemucs_tiny.th`` is one, so ``knnsvc-cover SONG REF --separator tests/golden/htdemucs_tiny.th``
runs without a download (its "vocals" are noise-shaped: for trying the command, not for covers).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import nn

from knnsvc.audio import (
    MAX_SECONDS,
    SILENCE_PEAK,
    AudioError,
    AudioReader,
    AudioWriter,
    LoudnessMeter,
    Resampler,
    audio_blocks,
    silent,
)
from knnsvc.checkpoints import cache_dir
from knnsvc.download import DownloadError, download_file
from knnsvc.files import atomic_path
from knnsvc.runtime import first_line

log = logging.getLogger(__name__)

HTDEMUCS_URL = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
"""Where demucs-infer downloads ``htdemucs`` from (its ``config/checkpoints.toml``, artifact 955717e8)."""

HTDEMUCS_SHA256 = "8726e21a993978c7ba086d3872e7608d7d5bfca646ca4aca459ffda844faa8b4"
"""sha256 of that file, checked after the download."""

SOURCES = ["drums", "bass", "other", "vocals"]
"""The stems of ``htdemucs``, in the order of its output."""

VOCALS = "vocals"

HTDEMUCS_KWARGS: dict = {
    "sources": SOURCES,
    "audio_channels": 2,
    "samplerate": 44100,
    "segment": Fraction(39, 5),
    "channels": 48,
    "depth": 4,
    "nfft": 4096,
    "dconv_mode": 3,
    "bottom_channels": 512,
    "t_layers": 5,
    "t_sparse_attn_window": 400,
}
"""`HTDemucs` arguments of the released ``htdemucs`` that differ from the class defaults (the
full-size architecture, for models with random weights: tests and benchmarks)."""

TINY_HTDEMUCS_KWARGS: dict = {
    "channels": 4,
    "depth": 3,
    "nfft": 512,
    "t_layers": 1,
    "t_heads": 1,
    "dconv_comp": 4,
    "bottom_channels": 0,
    "segment": Fraction(1),
}
"""Overrides of `HTDEMUCS_KWARGS` for a tiny HTDemucs (about 25k parameters, 1 s windows): the
code paths of the real one at milliseconds a window, for tests and the offline route."""

OVERLAP = 0.25
"""Fraction of a window shared with the next one (Demucs's default)."""

STEM_SUBTYPE = "FLOAT"
"""The stems are 32-bit float WAV: no clipping, so vocals + accompaniment give the song back."""

_PACKAGE_KEYS = {"klass", "args", "kwargs", "state"}
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_INSTALL = 'pip install -e ".[cover]" (or: pip install --no-deps demucs-infer==4.4.0 julius==0.2.8)'


class SeparationError(ValueError):
    """The separation model cannot be found, fetched or used; the message is one line."""


# ----------------------------------------------------------------------------------- weights
def separator_weights(path: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The weights file to load: `path`, or the released ``htdemucs`` (downloaded on first use).

    Args:
        path: a local file in the official Demucs package format; None: the release, cached in
            ``torch.hub.get_dir()/checkpoints`` under its released name.
        progress: show a download progress bar on stderr.

    Raises:
        SeparationError: `path` is not a file, or the download failed (one line naming the URL and
            the exact path to save the file under).
    """
    if path is not None:
        local = Path(path).expanduser()
        if not local.is_file():
            raise SeparationError(f"{path}: separation model file not found")
        return local
    url = HTDEMUCS_URL
    target = cache_dir() / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    log.info("downloading the separation model (htdemucs) from %s to %s", url, target)
    try:
        download_file(url, target, progress=progress, sha256=HTDEMUCS_SHA256)
    except DownloadError as err:
        raise SeparationError(
            f"cannot download the separation model (htdemucs) from {url} to {target} ({err.reason}): download "
            "it yourself and save it there, or pass the downloaded file with --separator PATH"
        ) from None
    return target


def _htdemucs_class() -> type[nn.Module]:
    try:
        from demucs_infer.htdemucs import HTDemucs
    except ImportError as err:
        raise SeparationError(f"vocal separation needs demucs-infer ({first_line(err)}): {_INSTALL}") from None
    return HTDemucs


def load_separation_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Build the HTDemucs model stored in a Demucs package file, strictly loaded, eval mode.

    The file is read with ``torch.load(weights_only=True)``, allowing only the `HTDemucs` class
    (under the name the release uses, ``demucs.htdemucs.HTDemucs``, or demucs-infer's own) and
    ``fractions.Fraction``; anything else pickled in it is refused, never executed.

    Raises:
        SeparationError: unreadable file, other pickled objects, not an HTDemucs package, no vocal
            stem, or weights that do not fit the architecture.
    """
    htdemucs = _htdemucs_class()
    from demucs_infer.states import load_model

    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (htdemucs, "demucs.htdemucs.HTDemucs"), htdemucs, Fraction,
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            package = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError,
            KeyError) as err:
        log.debug("torch.load(%s) failed: %s", path, err)
        found = _REFUSED_GLOBAL.search(str(err))
        if found:
            raise SeparationError(
                f"{path}: refused to load: the file holds pickled Python objects ({found.group(1)}) besides the "
                "HTDemucs class and Fraction, and loading it could run code"
            ) from None
        raise SeparationError(
            f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or another kind of file)") from None
    if not isinstance(package, dict) or not _PACKAGE_KEYS <= package.keys() or package["klass"] is not htdemucs:
        raise SeparationError(f"{path}: not an HTDemucs model in the Demucs package format "
                              "(a dict with klass=HTDemucs, args, kwargs, state)")
    if package["state"].get("__quantized"):
        raise SeparationError(f"{path}: quantized Demucs models are not supported")
    try:
        model = load_model(package)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise SeparationError(f"{path}: cannot load the separation model ({first_line(err)})") from None
    if VOCALS not in model.sources:
        raise SeparationError(f"{path}: the model separates {', '.join(model.sources)}, but no {VOCALS!r} stem")
    return model.to(device).eval()


def random_separation_model(seed: int = 0, **overrides: object) -> nn.Module:
    """HTDemucs with seeded random weights: the released architecture (`HTDEMUCS_KWARGS`), or a
    smaller one through `overrides` (e.g. ``channels=4, depth=3, nfft=512, t_layers=1``). Offline."""
    htdemucs = _htdemucs_class()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return htdemucs(**{**HTDEMUCS_KWARGS, **overrides}).eval()


def save_separation_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write an HTDemucs `model` as a Demucs package file that `load_separation_model` reads.

    The package is the release's format: ``{"klass": HTDemucs, "args", "kwargs", "state"}`` with
    the class pickled under the released name ``demucs.htdemucs.HTDemucs`` and float16 weights
    (as Demucs exports them). Written atomically.

    Args:
        model: built by `HTDemucs(...)` (demucs-infer records its arguments in ``_init_args_kwargs``).
    """
    htdemucs = _htdemucs_class()
    if type(model) is not htdemucs:
        raise TypeError(f"expected an HTDemucs model, got {type(model).__name__}")
    args, kwargs = cast(tuple, model._init_args_kwargs)
    state = {name: value.half() if value.is_floating_point() else value for name, value in model.state_dict().items()}
    package = {"klass": htdemucs, "args": args, "kwargs": kwargs, "state": state}
    target = Path(path)
    module = htdemucs.__module__
    htdemucs.__module__ = "demucs.htdemucs"  # the name in the released file; demucs-infer aliases it to itself
    try:
        with atomic_path(target) as tmp:
            torch.save(package, tmp)
    finally:
        htdemucs.__module__ = module
    return target


def save_tiny_separator(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a seeded random tiny HTDemucs (`TINY_HTDEMUCS_KWARGS`) as a package file (about 60 KB).

    ``knnsvc-cover SONG REF --separator PATH`` then runs offline. Its separation is meaningless
    (random weights): for trying the command and for tests."""
    return save_separation_model(random_separation_model(seed, **TINY_HTDEMUCS_KWARGS), path)


# ----------------------------------------------------------------------------------- the model, streamed
@runtime_checkable
class _DemucsAttributes(Protocol):
    """What `VocalSeparator` reads off its model besides calling it (HTDemucs has all four)."""

    samplerate: int
    audio_channels: int
    sources: Sequence[str]
    segment: float | Fraction


class VocalSeparator:
    """A Demucs model applied to a signal of any length, as it streams by.

    The signal is cut into windows of the model's training length W (``segment`` seconds: 7.8 s,
    343,980 samples for htdemucs) starting every ``int(0.75 W)`` samples; each window's output is
    weighted by a triangle peaking at its centre, overlap-added, and divided by the summed weights.
    A window running past the end takes W samples centred on what is left (earlier samples as
    left context, zeros after the end) and keeps the middle. This is exactly
    ``demucs_infer.apply.apply_model(model, mix, shifts=0, split=True, overlap=overlap)``, but
    holding about two windows of input and of output instead of the whole signal and its stems.

    Args:
        model: an HTDemucs-like module: ``(B, C, W) -> (B, S, C, W)`` with attributes
            `samplerate`, `audio_channels`, `sources` and `segment` (seconds).
        device: where the model runs; windows go there, results come back to the CPU.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", overlap: float = OVERLAP) -> None:
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if not isinstance(model, _DemucsAttributes):
            raise TypeError(f"{type(model).__name__} has no samplerate, audio_channels, sources and segment")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.sample_rate = int(model.samplerate)
        self.channels = int(model.audio_channels)
        self.sources = list(model.sources)
        self.window = int(model.samplerate * model.segment)
        self.stride = int((1 - overlap) * self.window)
        half = self.window // 2
        weight = torch.cat([torch.arange(1, half + 1), torch.arange(self.window - half, 0, -1)]).float()
        self.weight = weight / weight.max()  # (W,)

    @property
    def vocal_index(self) -> int:
        return self.sources.index(VOCALS)

    def stream(self, blocks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Separate a signal that arrives in blocks.

        Args:
            blocks: consecutive (C, n) float32 pieces of the (normalised) mix at `sample_rate`.

        Yields:
            Consecutive (S, C, m) float32 CPU pieces of the separated stems; in all, as many
            samples as came in. A piece is yielded as soon as no later window overlaps it.
        """
        width, stride = self.window, self.stride
        held = torch.zeros(self.channels, 0)  # input from `held_start` on
        held_start = received = offset = 0  # offset: the next window's start
        acc = _OverlapAdd(len(self.sources), self.channels)
        for block in blocks:
            held = torch.cat([held, block.float()], dim=1)
            received += block.shape[-1]
            while offset + width <= received:
                window = held[:, offset - held_start: offset - held_start + width]
                acc.add(self._run(window), self.weight, offset)
                offset += stride
                yield acc.take(offset)
                keep = max(offset - width // 2, 0)  # a tail window reaches back at most W/2
                held, held_start = held[:, keep - held_start:], keep
        while offset < received:  # windows that run past the end
            length = received - offset
            start = offset - (width - length) // 2
            window = torch.zeros(self.channels, width)
            lo, hi = max(start, 0), min(start + width, received)
            window[:, lo - start: hi - start] = held[:, lo - held_start: hi - held_start]
            left = offset - start
            acc.add(self._run(window)[..., left: left + length], self.weight[:length], offset)
            offset += stride
        if received:
            yield acc.take(received)

    def _run(self, window: torch.Tensor) -> torch.Tensor:
        """(C, W) -> (S, C, W) on the CPU."""
        with torch.inference_mode():
            return self.model(window[None].to(self.device))[0].float().cpu()


class _OverlapAdd:
    """Weighted sums of overlapping pieces and their weights, from `start` on."""

    def __init__(self, n_sources: int, channels: int) -> None:
        self.sums = torch.zeros(n_sources, channels, 0)  # (S, C, n)
        self.weights = torch.zeros(0)  # (n,)
        self.start = 0

    def add(self, piece: torch.Tensor, weight: torch.Tensor, offset: int) -> None:
        """Add `weight` (n,) times `piece` (S, C, n) at absolute sample `offset` (>= `start`)."""
        end = offset + piece.shape[-1] - self.start
        grow = end - self.weights.numel()
        if grow > 0:
            self.sums = torch.cat([self.sums, self.sums.new_zeros(*self.sums.shape[:2], grow)], dim=-1)
            self.weights = torch.cat([self.weights, self.weights.new_zeros(grow)])
        begin = offset - self.start
        self.sums[..., begin:end] += weight * piece
        self.weights[begin:end] += weight

    def take(self, stop: int) -> torch.Tensor:
        """The finished average (S, C, stop - start) up to absolute sample `stop`, dropped from here."""
        count = stop - self.start
        out = self.sums[..., :count] / self.weights[:count]
        self.sums, self.weights, self.start = self.sums[..., count:], self.weights[count:], stop
        return out


# ----------------------------------------------------------------------------------- songs
@dataclass
class SongInfo:
    """What a song's header says, checked: a readable mono or stereo file with samples.

    `frames` is the header's count where it can be trusted (PCM: capped by the file size;
    compressed: when it is within `max_seconds`), else the count found by decoding the file; the
    exact length comes from `scan_song`. `max_seconds` is the duration cap every later read of the
    song keeps to (None: no cap).
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    max_seconds: float | None = MAX_SECONDS

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass
class SongLevels:
    """Statistics of a song's mono mix from a full decoding pass (exact length included)."""

    frames: int
    mean: float
    std: float
    peak: float


def song_info(path: str | os.PathLike, max_seconds: float | None = MAX_SECONDS) -> SongInfo:
    """The header of a song file, checked (see `SongInfo` and `knnsvc.audio.AudioReader`).

    Raises:
        AudioError: missing, not audio, a sample rate out of range, longer than `max_seconds`,
            empty, or more than two channels.
    """
    with AudioReader(path, max_seconds) as reader:
        if reader.channels not in (1, 2):
            raise AudioError(reader.path, f"has {reader.channels} channels; only mono and stereo songs can be "
                                          "separated")
        frames = reader.frames
        if frames is None:  # compressed: the header's count is used only when it is plausible
            limit = (max_seconds if max_seconds is not None else MAX_SECONDS) * reader.sample_rate
            frames = reader.header_frames
            if not 0 < frames <= limit:
                frames = sum(len(block) for block in reader.blocks())
        if frames <= 0:
            raise AudioError(reader.path, "contains no samples")
        return SongInfo(reader.path, reader.sample_rate, reader.channels, frames, max_seconds)


def scan_song(info: SongInfo, nonfinite: str = "error") -> SongLevels:
    """One decoding pass: exact length, and mean, standard deviation and peak of the mono mix.

    Args:
        nonfinite: "error" refuses a file holding NaN/inf (or beyond float32) samples, "repair"
            counts them as 0 (with a warning).

    Raises:
        AudioError: unreadable, longer than `info.max_seconds`, no samples, non-finite samples
            ("error"), or silent.
    """
    frames = 0
    total = squares = 0.0
    peak = 0.0
    with AudioReader(info.path, info.max_seconds) as reader:
        for block in reader.blocks():
            mono = block.mean(axis=1, dtype=np.float64)
            frames += len(mono)
            total += float(mono.sum())
            squares += float(np.dot(mono, mono))
            peak = max(peak, float(np.abs(block).max()))
        if frames == 0:
            raise AudioError(info.path, "contains no samples")
        reader.check_values(nonfinite, "use --repair-audio")
    if peak < SILENCE_PEAK:
        raise AudioError(info.path, silent())
    mean = total / frames
    variance = max(squares - frames * mean * mean, 0.0) / max(frames - 1, 1)
    return SongLevels(frames, mean, max(math.sqrt(variance), 1e-8), peak)


def separate_song(
    separator: VocalSeparator,
    info: SongInfo,
    levels: SongLevels,
    vocals: Path | None,
    accompaniment: Path | None,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """Write the vocal stem and the accompaniment (song − vocals) of a song, block by block.

    Both files have the song's rate, channel count and exact length (`levels.frames`: the
    resampled vocals are cut or zero-padded by the one or two samples the round trip through the
    model's rate may add or lose), as 32-bit float WAV, written atomically.

    The model sees the song as demucs does: channels made stereo (a mono song duplicated),
    resampled to the model's rate (soxr VHQ, streamed), minus the mono mix's mean and divided by
    its standard deviation; its outputs are scaled back (times the deviation, plus the mean).

    Args:
        vocals, accompaniment: where to write each stem; None: that stem is not written.
        progress: called as ``progress("separate", seconds done, seconds in all)``.
    """
    song_rate, model_rate = info.sample_rate, separator.sample_rate
    frames, mean, std = levels.frames, levels.mean, levels.std
    total_seconds = math.ceil(frames / song_rate)

    def model_input() -> Iterator[torch.Tensor]:
        to_model = Resampler(song_rate, model_rate, separator.channels)
        for block in audio_blocks(info.path, info.max_seconds):
            x = to_model(_channels(block, separator.channels))  # (n', C_model)
            yield torch.from_numpy(((x - mean) / std).T.copy())
        yield torch.from_numpy(((to_model.flush() - mean) / std).T.copy())

    back = Resampler(model_rate, song_rate, separator.channels)
    song_again = audio_blocks(info.path, info.max_seconds)  # a generator: closed below
    song = _FrameQueue(song_again, info.channels)
    written = 0
    separated = 0

    def write(stem: np.ndarray) -> None:
        nonlocal written
        stem = stem[: frames - written]
        original = song.take(len(stem))
        if vocal_writer is not None:
            vocal_writer.write(stem)
        if accompaniment_writer is not None:
            accompaniment_writer.write(original - stem)
        written += len(stem)

    with ExitStack() as stack:
        stack.enter_context(closing(song_again))
        vocal_writer = accompaniment_writer = None
        if vocals is not None:
            vocal_writer = stack.enter_context(StemWriter(vocals, song_rate, info.channels, STEM_SUBTYPE))
        if accompaniment is not None:
            accompaniment_writer = stack.enter_context(
                StemWriter(accompaniment, song_rate, info.channels, STEM_SUBTYPE))
        for stems in separator.stream(model_input()):
            separated += stems.shape[-1]
            vocal = (stems[separator.vocal_index] * std + mean).T.numpy()  # (m, C_model)
            write(_channels(back(vocal), info.channels))
            if progress is not None:
                progress("separate", min(int(separated / model_rate), total_seconds), total_seconds)
        write(_channels(back.flush(), info.channels))
        if written < frames:
            write(np.zeros((frames - written, info.channels), dtype=np.float32))
        if progress is not None:
            progress("separate", total_seconds, total_seconds)


def _channels(block: np.ndarray, channels: int) -> np.ndarray:
    """(n, C) -> (n, channels) float32: mono duplicated, or stereo averaged to mono."""
    if block.shape[1] == channels:
        return block
    if channels == 1:
        return block.mean(axis=1, keepdims=True, dtype=np.float32)
    return np.repeat(block[:, :1], channels, axis=1)


class _FrameQueue:
    """Reads of exactly n frames from a sequence of (n, C) blocks; zeros once it is exhausted."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int) -> None:
        self.blocks = blocks
        self.pending = np.zeros((0, channels), dtype=np.float32)

    def take(self, count: int) -> np.ndarray:
        """The next `count` frames, (count, C) float32."""
        parts = [self.pending]
        have = len(self.pending)
        while have < count:
            block = next(self.blocks, None)
            if block is None:
                parts.append(np.zeros((count - have, self.pending.shape[1]), dtype=np.float32))
                break
            parts.append(block)
            have += len(block)
        joined = np.concatenate(parts) if len(parts) > 1 else self.pending
        self.pending = joined[count:]
        return joined[:count]


class StemWriter(AudioWriter):
    """`knnsvc.audio.AudioWriter` for (n, C) blocks, with the channel count as third argument:
    ``StemWriter(path, sample_rate, channels, subtype)``. Samples beyond ±1 are clipped unless
    the subtype is a float one.

    Raises (from the constructor, before anything is written):
        AudioError: a suffix, subtype, sample rate or channel count the format cannot hold.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int, subtype: str | None = None) -> None:
        super().__init__(path, sample_rate, subtype, channels=channels)


# ----------------------------------------------------------------------------------- stems back together
def stem_loudness(path: str | os.PathLike) -> float:
    """Integrated loudness (BS.1770, LUFS) of a file's mono mix at its own rate, streamed; -inf if silent."""
    with AudioReader(path, max_seconds=None) as reader:
        meter = LoudnessMeter(reader.sample_rate)
        for block in reader.blocks():
            meter.add(block.mean(axis=1, dtype=np.float64))
    return meter.integrated_lufs()


def write_remix(
    accompaniment: Path,
    vocal: Path,
    remix: Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> float:
    """Mix a (mono) vocal into every channel of an accompaniment, at the accompaniment's rate,
    channel count and length, peak-limited, into `remix` (format from its suffix, atomic).

    The vocal is resampled (soxr VHQ, streamed) and then cut, or zero-padded, to the
    accompaniment's length. Two streamed passes: the first finds the mix's peak, the second
    writes it divided by that peak when it exceeds 1 (as `knnsvc.audio.peak_limit`).

    Args:
        progress: called as ``progress("remix", seconds written, seconds in all)``.

    Returns:
        The gain of the peak limiter (1.0 when the mix stays within ±1).
    """
    with AudioReader(accompaniment, max_seconds=None) as reader:
        rate, channels, frames = reader.sample_rate, reader.channels, reader.header_frames
    writer = AudioWriter(remix, rate, channels=channels)  # refuses the format before any work
    peak = max((float(np.abs(block).max()) for block in _remix_blocks(accompaniment, vocal)), default=0.0)
    gain = 1.0 / peak if peak > 1.0 else 1.0
    total_seconds = math.ceil(frames / rate)
    with writer:
        for block in _remix_blocks(accompaniment, vocal):
            writer.write(block * np.float32(gain) if gain != 1.0 else block)
            if progress is not None:
                progress("remix", min(int(writer.frames_written / rate), total_seconds), total_seconds)
    if progress is not None:
        progress("remix", total_seconds, total_seconds)
    return gain


def _remix_blocks(accompaniment: Path, vocal: Path) -> Iterator[np.ndarray]:
    """Accompaniment blocks (n, C) plus the vocal, resampled to their rate, in every channel."""
    with AudioReader(accompaniment, max_seconds=None) as song, AudioReader(vocal, max_seconds=None) as voice_file:
        upsample = Resampler(voice_file.sample_rate, song.sample_rate, 1)

        def vocal_blocks() -> Iterator[np.ndarray]:
            for block in voice_file.blocks():
                yield upsample(_channels(block, 1))
            yield upsample.flush()

        voice = _FrameQueue(vocal_blocks(), 1)
        for block in song.blocks():
            yield block + voice.take(len(block))  # (n, C) + (n, 1)
