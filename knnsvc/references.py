"""Reference pools from audio files: a per-file cache, the checks a recording must pass, composition.

One module builds pools for every caller (the convert CLI, the evaluation, prematching): each
recording becomes a one-file `ReferencePool`, read from the cache when its entry is valid, and a
singer's pool is the concatenation of the files' pools. A converter whose vocoder writes above
16 kHz measures the harmonic amplitudes from the file read at `KnnSvc.amplitude_rate` of its own
rate (min(file rate, output rate), at least 16 kHz), so a 44.1 kHz recording gives it harmonics
above 8 kHz and a 16 kHz one does not; features and F0 always come from the file read at 16 kHz.
The cache is content-addressed per file (the audio bytes, the encoder weights and every analysis
setting, the output rate and the number of harmonic columns included), so adding a recording to a
folder encodes only that recording, and each entry is written as soon as its file is done, so a
failure loses nothing already encoded. A cache entry that is unreadable, foreign or corrupt is
reported in one WARNING line and rebuilt; any failure to write an entry (a folder that cannot
be written, a full disk, an error of the serializer) is reported once and the run goes on
without caching; a partly written entry is never left behind (entries are written atomically).

The wording of the checks a recording can fail ("too short", "no voiced frames", "silent", "longer
than the limit") is one set of functions in `knnsvc.audio` (`too_short`, `no_voiced_frames`,
`silent`, `too_long`), re-exported here for the callers that check recordings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from knnsvc.audio import (
    MAX_SECONDS,
    AudioError,
    AudioReader,
    is_silent,
    load_audio,
    no_voiced_frames,
    silent,
    too_long,
    too_short,
)
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.harmonics import amplitude_rate
from knnsvc.pipeline import KnnSvc, Progress
from knnsvc.pool import POOL_FORMAT_VERSION, PoolFileError, ReferencePool
from knnsvc.runtime import first_line

log = logging.getLogger(__name__)

__all__ = ["ENTRY_PREFIX", "PoolCache", "build_reference_pool", "file_pool", "measuring_recording",
           "no_voiced_frames", "silent", "too_long", "too_short", "usable_recording"]

ENTRY_PREFIX = "file-"
"""Cache entries are ``<cache>/file-<key>.pt``."""


class PoolCache:
    """Per-file reference-pool cache in `folder` (created on first write).

    Args:
        folder: the cache folder. A path that is a file, or a folder that cannot be written, is
            reported once (WARNING) and the cache is then read-only or off.
        settings: what, besides the audio bytes, determines a pool (`KnnSvc.pool_settings`).
    """

    def __init__(self, folder: str | Path, settings: dict) -> None:
        self.folder = Path(folder).expanduser()
        self.settings = dict(settings)
        self._settings_text = json.dumps(self.settings, sort_keys=True, default=str)
        self.writable = True
        self.readable = True
        self._entries: dict[tuple[Path, int, int], Path] = {}
        if self.folder.exists() and not self.folder.is_dir():
            log.warning("pool cache %s is not a folder: continuing without caching", self.folder)
            self.writable = self.readable = False

    def entry(self, audio: Path) -> Path:
        """Where the pool of `audio` is kept: its key covers the bytes and the settings."""
        stat = audio.stat()
        memo = (audio.resolve(), stat.st_size, stat.st_mtime_ns)
        if memo not in self._entries:
            self._entries[memo] = self._entry(audio)
        return self._entries[memo]

    def _entry(self, audio: Path) -> Path:
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"pool-v{POOL_FORMAT_VERSION}|{self._settings_text}|".encode())
        with open(audio, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return self.folder / f"{ENTRY_PREFIX}{digest.hexdigest()}.pt"

    def load(self, audio: Path, dim: int, n_harmonics: int | None = None) -> ReferencePool | None:
        """The cached pool of `audio`, or None (absent, or invalid: reported; the rebuilt pool's `store`
        replaces the entry atomically, so a good entry another process has just written in its place
        is never deleted).

        Args:
            dim: the converter's feature dimension; n_harmonics: its amplitude columns (None: any).
        """
        if not self.readable:
            return None
        path = self.entry(audio)
        if not path.is_file():
            return None
        try:
            pool = ReferencePool.load(path, dim=dim, n_harmonics=n_harmonics)
        except PoolFileError as err:
            log.warning("ignoring the cached pool of %s and rebuilding it: %s", audio, err)
            return None
        if len(pool.names) != 1:
            log.warning("ignoring the cached pool of %s and rebuilding it: %s holds %d files", audio, path,
                        len(pool.names))
            return None
        pool.names = [str(audio)]
        return pool

    def store(self, audio: Path, pool: ReferencePool) -> None:
        """Keep `pool` as the entry of `audio`.

        Any failure to write it (OSError, a full disk, a RuntimeError or other error of the
        serializer) is one WARNING, and writing is off for the rest of the run: the run goes on
        uncached. Interrupts (KeyboardInterrupt, SystemExit) go through.
        """
        if not self.writable:
            return
        try:
            pool.save(self.entry(audio), settings=self.settings)
        except Exception as err:  # noqa: BLE001 - a cache must never end the run
            log.warning("cannot write the pool cache in %s (%s): continuing without caching", self.folder,
                        first_line(err) or type(err).__name__)
            log.debug("writing the pool cache entry of %s failed", audio, exc_info=True)
            self.writable = False


def usable_recording(
    path: Path, converter: KnnSvc, nonfinite: str = "error", max_seconds: float | None = MAX_SECONDS
) -> torch.Tensor:
    """Load `path` as a reference or source recording, checking it can be used.

    Args:
        nonfinite: "error" refuses NaN/inf (or out-of-range) samples, "repair" replaces them by 0
            (see `load_audio`).
        max_seconds: refuse recordings longer than this (None: no limit; see `load_audio`).

    Returns:
        wav_16k: (L,) float32 mono at 16 kHz.

    Raises:
        AudioError: unreadable, a damaged header, longer than `max_seconds`, non-finite samples,
            silent, or too short for one frame.
    """
    wav_16k = load_audio(path, nonfinite=nonfinite, max_seconds=max_seconds)
    if is_silent(wav_16k):
        raise AudioError(path, silent())
    if converter.encoder.num_frames(wav_16k.numel()) == 0:
        raise AudioError(path, too_short(wav_16k.numel() / SAMPLE_RATE, needed=(HOP_LENGTH + 1) / SAMPLE_RATE))
    return wav_16k


def file_pool(
    converter: KnnSvc, path: Path, cache: PoolCache | None = None, max_seconds: float | None = MAX_SECONDS
) -> ReferencePool:
    """The one-file pool of `path`: from the cache when valid, else encoded (and cached).

    A converter above 16 kHz also reads the file at its `amplitude_rate` for the harmonic
    amplitudes (see the module docstring); at 16 kHz the file is read once, at 16 kHz.

    Args:
        max_seconds: refuse recordings longer than this (None: no limit); a cached pool of a longer
            recording is refused too.

    Raises:
        AudioError: the recording cannot be used (see `usable_recording`).
    """
    if cache is not None:
        pool = cache.load(path, converter.encoder.dim, converter.n_harmonics)
        if pool is not None:
            if max_seconds is not None and pool.seconds > max_seconds:
                raise AudioError(path, too_long(pool.seconds, max_seconds, at_least=True))
            return pool
    wav_16k = usable_recording(path, converter, max_seconds=max_seconds)
    wav, wav_rate = measuring_recording(path, converter.sample_rate, max_seconds)
    if wav is None:  # amplitudes measured at 16 kHz: the 16 kHz recording is all it takes
        pool = converter.reference_pool(wav_16k, name=str(path))
    else:
        pool = converter.reference_pool(wav_16k, name=str(path), wav=wav, wav_rate=wav_rate)
    if cache is not None:
        cache.store(path, pool)
    return pool


def measuring_recording(
    path: Path, output_rate: int, max_seconds: float | None = MAX_SECONDS
) -> tuple[torch.Tensor | None, int | None]:
    """The recording the harmonic amplitudes for a vocoder at `output_rate` are measured from, when
    it is not the 16 kHz one: ((L,) float32 at `amplitude_rate(file rate, output_rate)`, that rate);
    (None, None) when they are measured at 16 kHz (a 16 kHz vocoder, or a file at or below 16 kHz).

    Raises:
        AudioError: as `load_audio`.
    """
    if output_rate <= SAMPLE_RATE:
        return None, None
    with AudioReader(path, max_seconds) as reader:
        rate = amplitude_rate(reader.sample_rate, output_rate)
    if rate == SAMPLE_RATE:
        return None, None
    return load_audio(path, sample_rate=rate, max_seconds=max_seconds), rate


def build_reference_pool(
    converter: KnnSvc,
    files: Sequence[Path],
    cache: PoolCache | None,
    on_bad_file: Callable[[AudioError], None],
    progress: Progress | None = None,
    max_seconds: float | None = MAX_SECONDS,
) -> tuple[ReferencePool | None, int]:
    """A singer's pool: the files' pools (cached per file) joined in order.

    Each unusable file (unreadable, silent, too short, or longer than `max_seconds`; None: no limit)
    goes to `on_bad_file` (which may raise to stop) and is left out; so does a file whose analysis
    failed with a RuntimeError (e.g. "F0 worker died ..."), as an AudioError naming it.

    Returns:
        (the pool, or None if no file was usable; the number of files left out).
    """
    pools: list[ReferencePool] = []
    left_out = 0
    for done, path in enumerate(files):
        try:
            pools.append(file_pool(converter, path, cache, max_seconds))
        except AudioError as err:
            on_bad_file(err)
            left_out += 1
        except RuntimeError as err:  # that file's analysis failed (a crashed worker): the others go on
            log.debug("analysing the reference %s failed", path, exc_info=True)
            on_bad_file(AudioError(path, first_line(err) or type(err).__name__))
            left_out += 1
        if progress is not None:
            progress("reference", done + 1, len(files))
    if not pools:
        return None, left_out
    return ReferencePool.join(pools), left_out
