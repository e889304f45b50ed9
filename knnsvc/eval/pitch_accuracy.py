"""Pitch accuracy of a conversion against the F0 it was asked to sing.

The expected contour is the key-shifted source F0 the converter used (``MatchResult.f0_hz``), or,
for audio converted by another system, the source F0 shifted the same way (median log-F0 of the
source moved onto the target speaker's, spec §6.1). The converted audio's F0 is measured with the
same Harvest settings (spec §5). Frames are the 50 Hz WavLM frames; both contours are truncated to
the shorter one.

Metrics:
- ``f0_rmse_cents``: RMS of 1200·log2(F0_converted / F0_expected) over frames voiced in both;
- ``vuv_error``: fraction of frames whose voiced/unvoiced decisions differ;
- ``f0_corr``: Pearson correlation of the two F0 contours (Hz) over frames voiced in both;
- ``gross_pitch_error``: fraction of frames voiced in both that are off by more than 50 cents
  (RMSE is dominated by a few octave jumps; this counts them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from knnsvc.pitch import harvest_f0, shift_semitones, shift_to_reference

MIN_FRAMES_FOR_CORRELATION = 3
GROSS_ERROR_CENTS = 50.0


@dataclass
class PitchScores:
    """Pitch agreement of one utterance (None where undefined, e.g. no frame voiced in both)."""

    f0_rmse_cents: float | None
    vuv_error: float | None
    f0_corr: float | None
    gross_pitch_error: float | None
    voiced_both: int
    frames: int


def f0_scores(expected_f0_hz: torch.Tensor, measured_f0_hz: torch.Tensor) -> PitchScores:
    """Compare two F0 contours frame by frame.

    Args:
        expected_f0_hz: (T,) contour the conversion should follow; 0 = unvoiced.
        measured_f0_hz: (T',) contour measured on the converted audio; 0 = unvoiced.

    Returns:
        PitchScores over the first min(T, T') frames.
    """
    frames = min(expected_f0_hz.numel(), measured_f0_hz.numel())
    expected = expected_f0_hz.reshape(-1)[:frames].double()
    measured = measured_f0_hz.reshape(-1)[:frames].double()
    if frames == 0:
        return PitchScores(None, None, None, None, 0, 0)
    voiced_expected = expected > 0
    voiced_measured = measured > 0
    both = voiced_expected & voiced_measured
    vuv_error = float((voiced_expected != voiced_measured).double().mean())
    n_both = int(both.sum())
    rmse = corr = gross = None
    if n_both:
        cents = 1200.0 * torch.log2(measured[both] / expected[both])
        rmse = float(torch.sqrt(torch.mean(cents**2)))
        gross = float((cents.abs() > GROSS_ERROR_CENTS).double().mean())
    if n_both >= MIN_FRAMES_FOR_CORRELATION:
        corr = _pearson(expected[both], measured[both])
    return PitchScores(rmse, vuv_error, corr, gross, n_both, frames)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if denom == 0.0:
        return None
    return float((a * b).sum()) / denom


def expected_f0(
    source_f0_hz: torch.Tensor,
    target_f0_hz: Sequence[torch.Tensor] | torch.Tensor | None = None,
    pitch_shift: str | float | None = "auto",
) -> torch.Tensor:
    """The contour a converter should produce from the source's F0.

    Args:
        source_f0_hz: (T,) Harvest F0 of the source.
        target_f0_hz: F0 of the target speaker's recordings, (N,) or a list of (N_i,); needed for
            ``"auto"``.
        pitch_shift: ``"auto"`` (median log-F0 onto the target's, as the converter does), a number
            of semitones, or None / ``"none"`` (no shift).

    Raises:
        ValueError: ``"auto"`` without target F0, or no voiced frame in the source or target.
    """
    if pitch_shift is None or pitch_shift == "none":
        return source_f0_hz.clone()
    if pitch_shift == "auto":
        if target_f0_hz is None:
            raise ValueError("pitch_shift='auto' needs the target speaker's F0")
        if not isinstance(target_f0_hz, torch.Tensor):
            target_f0_hz = torch.cat([f.reshape(-1) for f in target_f0_hz])
        return shift_to_reference(source_f0_hz, target_f0_hz)
    return shift_semitones(source_f0_hz, float(pitch_shift))


def pitch_accuracy(converted_wav_16k: torch.Tensor, expected_f0_hz: torch.Tensor) -> PitchScores:
    """Measure the converted audio's F0 with Harvest and compare it with `expected_f0_hz` (T,)."""
    return f0_scores(expected_f0_hz, harvest_f0(converted_wav_16k))
