"""One conversion of a file: a recording in, the converted recording written out.

    source file ─► checked recording ─► `KnnSvc.analyse` (+ an F0 curve file) ─► `match` ─►
    `vocode_blocks` ─► `AudioWriter` (block by block, atomic, optional loudness target)

The input is read at 16 kHz (WavLM and F0); the output is written at the vocoder's rate
(`KnnSvc.sample_rate`: 16 kHz for the released vocoders, 24 or 44.1 kHz for the families trained
at a higher rate), T frames of `samples_per_frame` samples each.

Every application that converts files (knnsvc-convert, knnsvc-cover, the web demo, the
evaluation) goes through `convert_file`, so a recording is checked, converted and written the same
way everywhere.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from knnsvc.audio import AudioError, AudioWriter, check_disk_space, no_voiced_frames, output_bytes
from knnsvc.config import SAMPLE_RATE
from knnsvc.pipeline import F0Job, KnnSvc, MatchResult, Progress
from knnsvc.pitch import load_f0_curve
from knnsvc.pool import ReferencePool
from knnsvc.references import usable_recording

logger = logging.getLogger(__name__)


@dataclass
class Options:
    """Per-file output settings of a conversion."""

    loudness: float | None = None
    f0_file: Path | None = None
    repair_audio: bool = False
    max_seconds: float | None = None  # cap on the decoded duration (None: `knnsvc.audio`'s default)
    subtype: str | None = None  # the output's sample format, e.g. "PCM_16" (None: the format's default)


class F0FileError(ValueError):
    """An F0 curve file cannot be used; the message begins with the CSV's name (and line)."""


def accepts(function: Callable, keyword: str) -> bool:
    """Whether `function` takes the keyword argument `keyword` (for options newer than a callee)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return keyword in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def read_f0_file(path: Path, num_frames: int) -> torch.Tensor:
    """The (T,) F0 curve in `path` on the frame grid (see `knnsvc.pitch.load_f0_curve`).

    Raises:
        F0FileError: one line naming the CSV (and its line, where the problem is in a row).
    """
    try:
        return load_f0_curve(path, num_frames)
    except UnicodeDecodeError as err:
        raise F0FileError(f"{os.fspath(path)}: not a UTF-8 text file (byte {err.start})") from None
    except OSError as err:
        raise F0FileError(f"{os.fspath(path)}: cannot read the F0 curve ({err.strerror or err})") from None
    except ValueError as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else "not an F0 curve"
        if not message.startswith(os.fspath(path)):
            message = f"{os.fspath(path)}: {message}"
        raise F0FileError(message) from None


def samples_per_frame(converter: KnnSvc) -> int:
    """Output samples per feature frame of `converter`'s vocoder (320 at 16 kHz, 480 at 24 kHz, 882 at
    44.1 kHz; `HOP_LENGTH` without a vocoder)."""
    return converter.samples_per_frame


@dataclass
class Converted:
    """What `convert_file` did: the output, its length in seconds, the match (for reports and plots)
    and the output's rate (the vocoder's)."""

    output: Path
    seconds: float
    result: MatchResult
    sample_rate: int = SAMPLE_RATE

    def describe(self, uses_pitch: bool) -> str:
        """A short description for the log (duration, pitch shift)."""
        if not uses_pitch:
            return f"{self.seconds:.1f} s"
        return (f"{self.seconds:.1f} s, pitch shift {self.result.semitones:+.2f} semitones "
                f"(x{self.result.shift_ratio:.4f})")


def needs_voicing(converter: KnnSvc) -> bool:
    """Whether an automatic pitch shift applies (it needs voiced frames in source and reference)."""
    return isinstance(converter.config.pitch_shift, str) and converter.kind.uses_pitch


def read_source(converter: KnnSvc, source: Path, options: Options) -> torch.Tensor:
    """The checked (L,) 16 kHz waveform of the recording `source` (`knnsvc.references.usable_recording`).

    Raises:
        AudioError, ValueError: the source cannot be used (one line naming it).
    """
    limits = {} if options.max_seconds is None or not accepts(usable_recording, "max_seconds") else {
        "max_seconds": options.max_seconds}
    return usable_recording(source, converter, nonfinite="repair" if options.repair_audio else "error", **limits)


READ_LOGGERS = ("knnsvc.audio", "knnsvc.references")
"""The loggers a source's reading logs to (`read_source`): a look-ahead holds their records back until
the file's turn, so the log reads as without look-ahead."""


class _HeldLogs(logging.Filter):
    """A logger filter that holds back the records made on a thread while it reads ahead."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        held: list[logging.LogRecord] | None = getattr(self.local, "records", None)
        if held is None:
            return True
        held.append(record)
        return False


@dataclass
class _Ahead:
    """A file read ahead: its (L,) 16 kHz waveform and started F0, or the read's error; the log
    records of the read, for its turn."""

    wav_16k: torch.Tensor | None
    f0: F0Job | None
    records: list[logging.LogRecord]
    error: Exception | None = None


class Prefetch:
    """A batch's look-ahead: while one file is matched and vocoded, the next one is read and its F0
    computed (on the F0 worker processes, idle by then), so that its turn starts with both ready.

    At most one file is ahead (its 16 kHz waveform and F0 curve: memory stays bounded), and what
    is used is what its turn would compute itself (the outputs are identical with or without it).
    The read's log lines and error come at the file's turn (`take`), as without look-ahead.
    `close` (or leaving the ``with`` block, Ctrl-C included) stops the look-ahead and waits for its
    threads, so no F0 worker keeps running.

    The batch loop names the file that comes next (`announce`); `convert_file` starts it once the
    current file is analysed (`start`) and takes it at its turn (`take`).
    """

    def __init__(self, converter: KnnSvc, options: Options) -> None:
        self.converter = converter
        self.options = options
        self.following: Path | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knnsvc-prefetch")
        self._ahead: tuple[Path, Future[_Ahead]] | None = None
        self._taken: Future[_Ahead] | None = None
        self._held = _HeldLogs()
        for name in READ_LOGGERS:
            logging.getLogger(name).addFilter(self._held)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def announce(self, source: Path | None) -> None:
        """The file the batch converts after the current one (None: none)."""
        self.following = source

    def start(self) -> None:
        """Start reading the announced file and its F0 (nothing if it is already ahead, or none is)."""
        if self.following is None or self._ahead is not None:
            return
        source = self.following
        logger.debug("prefetching %s", source)
        self._ahead = (source, self._reader.submit(self._prepare, source))

    def take(self, source: Path) -> tuple[torch.Tensor, F0Job] | None:
        """The (L,) 16 kHz waveform of `source` and its started `F0Job`, once read, or None when `source`
        is not the file ahead (a file ahead that is not `source` is dropped). The read's log records
        are logged now.

        Raises:
            AudioError, ValueError: the read's error (see `read_source`).
        """
        self._drop(self._taken)
        self._taken = None
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        if ahead[0] != source:
            self._drop(ahead[1])
            return None
        self._taken = ahead[1]
        ready = ahead[1].result()
        for record in ready.records:
            logging.getLogger(record.name).handle(record)
        if ready.error is not None:
            raise ready.error
        wav_16k, ready.wav_16k, ready.records = ready.wav_16k, None, []  # held by the caller alone from now on
        assert wav_16k is not None and ready.f0 is not None
        return wav_16k, ready.f0

    def close(self) -> None:
        """Stop what is ahead, wait for the threads (no F0 worker keeps running) and free it."""
        for job in (self._taken, None if self._ahead is None else self._ahead[1]):
            self._drop(job, wait=True)
        self._taken, self._ahead = None, None
        self._reader.shutdown(wait=True, cancel_futures=True)
        for name in READ_LOGGERS:
            logging.getLogger(name).removeFilter(self._held)

    def _prepare(self, source: Path) -> _Ahead:
        records: list[logging.LogRecord] = []
        self._held.local.records = records
        try:
            wav_16k = read_source(self.converter, source, self.options)
        except Exception as err:  # noqa: BLE001  (raised at the file's turn, by `take`)
            return _Ahead(None, None, records, err)
        finally:
            self._held.local.records = None
        return _Ahead(wav_16k, self.converter.start_f0(wav_16k), records)

    @staticmethod
    def _drop(job: Future[_Ahead] | None, wait: bool = False) -> None:
        """Stop the F0 of a look-ahead that will not be used (with `wait`: also its read)."""
        if job is None or job.cancel():
            return
        if wait:
            futures.wait([job])
        if job.done():
            _stop_f0(job, wait)
        else:
            job.add_done_callback(_stop_f0)


def _stop_f0(job: Future[_Ahead], wait: bool = False) -> None:
    ready = None if job.exception() is not None else job.result()
    if ready is not None and ready.f0 is not None:
        ready.f0.cancel(wait=wait)


def convert_file(converter: KnnSvc, pool: ReferencePool, source: Path, output: Path, options: Options,
                 progress: Progress | None = None, ahead: Prefetch | None = None) -> Converted:
    """Convert the recording `source` into `output` (written block by block, atomically), at the
    vocoder's rate `converter.sample_rate`: T * `samples_per_frame(converter)` samples for the T
    frames of the 16 kHz source. Samples beyond ±1 (a Vocos vocoder's iSTFT output is not
    tanh-bounded) are clipped in integer formats by `AudioWriter`, or peak-limited with a loudness target.

    With `ahead` (a batch's `Prefetch`), the source's waveform and F0 come from it when they were
    prepared ahead, and the next file's are started once this one is analysed; the output is the same.

    Raises:
        AudioError, ValueError: the source cannot be used, or the output cannot be written.
        F0FileError: `options.f0_file` cannot be used (the message names the CSV, not the source).
    """
    f0_job: F0Job | None = None
    ready = ahead.take(source) if ahead is not None else None  # this file's read error is raised at its turn
    if ready is not None:
        wav_16k, f0_job = ready
        del ready
    else:
        wav_16k = read_source(converter, source, options)
    try:
        rate = converter.sample_rate
        n_samples = converter.encoder.num_frames(wav_16k.numel()) * samples_per_frame(converter)
        check_disk_space(output, output_bytes(n_samples, output, rate, options.subtype,
                                              loudness=options.loudness is not None))
    except BaseException:
        if f0_job is not None:
            f0_job.cancel()
        raise

    features = converter.analyse(wav_16k, progress, **({} if f0_job is None else {"f0": f0_job}))
    del wav_16k, f0_job
    if ahead is not None:
        ahead.start()  # the next file's decoding and F0, while this one is matched and vocoded
    try:
        if options.f0_file is not None:
            features.f0_hz = read_f0_file(options.f0_file, features.num_frames)
        if needs_voicing(converter) and not bool((features.f0_hz > 0).any()):
            raise AudioError(source, no_voiced_frames("the automatic pitch shift to the reference is undefined "
                                                      "(use --pitch-shift 0 or none)"))
        result = converter.match(features, pool, progress)
        with AudioWriter(output, rate, subtype=options.subtype, loudness_lufs=options.loudness) as writer:
            for block in converter.vocode_blocks(result, progress):
                writer.write(block)
    finally:
        features.close()
    return Converted(output, writer.samples_written / rate, result, rate)
