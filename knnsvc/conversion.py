"""One conversion of a file: a recording in, the converted recording written out.

    source file ─► checked recording ─► `KnnSvc.analyse` (+ an F0 curve file) ─► `match` ─►
    `vocode_blocks` ─► `AudioWriter` (block by block, atomic, optional loudness target)

Every application that converts files (knnsvc-convert, knnsvc-cover, the web demo, the
evaluation) goes through `convert_file`, so a recording is checked, converted and written the same
way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knnsvc.audio import AudioError, AudioWriter, check_disk_space, output_bytes
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
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


@dataclass
class Converted:
    """What `convert_file` did: the output, its length and the match (for reports and plots)."""

    output: Path
    seconds: float
    result: MatchResult

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
    """Convert the recording `source` into `output` (written block by block, atomically).

    Raises:
        AudioError, ValueError: the source cannot be used, or the output cannot be written.
    """
    wav_16k = usable_recording(source, converter, nonfinite="repair" if options.repair_audio else "error")
    n_samples = converter.encoder.num_frames(wav_16k.numel()) * HOP_LENGTH
    check_disk_space(output, output_bytes(n_samples, output, loudness=options.loudness is not None))

    features = converter.analyse(wav_16k, progress)
    del wav_16k
    try:
        if options.f0_file is not None:
            features.f0_hz = load_f0_curve(options.f0_file, features.num_frames)
        if needs_voicing(converter) and not bool((features.f0_hz > 0).any()):
            raise AudioError(source, "no voiced frames, so the automatic pitch shift to the reference is "
                                     "undefined (use --pitch-shift 0 or none)")
        result = converter.match(features, pool, progress)
        with AudioWriter(output, loudness_lufs=options.loudness) as writer:
            for block in converter.vocode_blocks(result, progress):
                writer.write(block)
    finally:
        features.close()
    return Converted(output, writer.samples_written / SAMPLE_RATE, result)
