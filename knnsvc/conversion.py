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
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from knnsvc.audio import AudioError, AudioWriter, check_disk_space, no_voiced_frames, output_bytes
from knnsvc.config import SAMPLE_RATE
from knnsvc.pipeline import KnnSvc, MatchResult, Progress
from knnsvc.pitch import load_f0_curve
from knnsvc.pool import ReferencePool
from knnsvc.references import usable_recording


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


def convert_file(converter: KnnSvc, pool: ReferencePool, source: Path, output: Path, options: Options,
                 progress: Progress | None = None) -> Converted:
    """Convert the recording `source` into `output` (written block by block, atomically), at the
    vocoder's rate `converter.sample_rate`: T * `samples_per_frame(converter)` samples for the T
    frames of the 16 kHz source. Samples beyond ±1 (a Vocos vocoder's iSTFT output is not
    tanh-bounded) are clipped in integer formats by `AudioWriter`, or peak-limited with a loudness target.

    Raises:
        AudioError, ValueError: the source cannot be used, or the output cannot be written.
        F0FileError: `options.f0_file` cannot be used (the message names the CSV, not the source).
    """
    limits = {} if options.max_seconds is None or not accepts(usable_recording, "max_seconds") else {
        "max_seconds": options.max_seconds}
    wav_16k = usable_recording(source, converter, nonfinite="repair" if options.repair_audio else "error", **limits)
    rate = converter.sample_rate
    n_samples = converter.encoder.num_frames(wav_16k.numel()) * samples_per_frame(converter)
    check_disk_space(output, output_bytes(n_samples, output, rate, options.subtype,
                                          loudness=options.loudness is not None))

    features = converter.analyse(wav_16k, progress)
    del wav_16k
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
