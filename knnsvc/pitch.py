"""F0 extraction (WORLD Harvest, as the released vocoders were trained with) and key shift."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from knnsvc.config import HOP_LENGTH, SAMPLE_RATE

F0_FLOOR_HZ = 65.0
F0_CEIL_HZ = 1047.0
VOICED_MIN_HZ = 80.0
"""Harvest values below this are set to 0 (= unvoiced), as in the reference."""


F0_BLOCK_MARGIN_SECONDS = 1.0
"""Audio analysed on each side of a block beyond what it keeps (Harvest's filters settle within it)."""

DC_TAIL_SECONDS = 1.0
"""Minimum length of the constant tail that gives a block the whole recording's mean (see below)."""


def harvest_f0(wav_16k: torch.Tensor, block_seconds: float | None = None) -> torch.Tensor:
    """WORLD Harvest F0 at the WavLM frame rate (spec §5), optionally in blocks.

    Harvest's memory grows about quadratically with the length of what it analyses (9 GB for six
    minutes), so long recordings are analysed in blocks of `block_seconds`, each with
    `F0_BLOCK_MARGIN_SECONDS` of extra audio on both sides whose frames are discarded. Two
    properties of Harvest that span the whole recording are reproduced for every block, which
    makes the blocks agree with the whole-recording analysis (on the real singing clips: no
    frame differs for 30 s blocks):

    - Harvest removes the *mean of what it is given* before filtering. A block is therefore
      extended by a constant tail, on the side that is not an end of the recording and beyond the
      discarded margin, chosen so that the block's mean is the whole recording's mean.
    - Harvest decimates to 8 kHz on a grid that depends on the parity of the length; a block is
      cut with the parity of the whole recording, so it samples the same grid.

    Args:
        wav_16k: (L,) waveform at 16 kHz.
        block_seconds: analyse in blocks of this length; None or 0 analyses the whole recording
            at once (the reference's behaviour; memory grows with the length).

    Returns:
        f0_hz: (L // 320 + 1,) float32; frame n is centred at n * 20 ms; 0 marks unvoiced frames.
    """
    samples = wav_16k.detach().cpu().double().numpy()
    n_samples = samples.shape[0]
    block = round((block_seconds or 0.0) * SAMPLE_RATE / HOP_LENGTH) * HOP_LENGTH
    margin = round(F0_BLOCK_MARGIN_SECONDS * SAMPLE_RATE / HOP_LENGTH) * HOP_LENGTH
    if block <= 0 or n_samples <= block + margin:
        return _harvest(samples)

    mean = float(samples.mean())
    f0_hz = np.empty(n_samples // HOP_LENGTH + 1, dtype=np.float32)
    for start in range(0, n_samples, block):
        stop = min(start + block, n_samples)
        lo, hi = max(start - margin, 0), min(stop + margin, n_samples)
        if hi < n_samples and (hi - lo) % 2 != n_samples % 2:
            hi += 1  # same decimation grid as the whole recording
        segment = samples[lo:hi]
        tail_at_end = hi < n_samples
        tail = _dc_tail(segment, mean)
        segment = np.concatenate([segment, tail] if tail_at_end else [tail, segment])
        first_frame = (lo - (0 if tail_at_end else tail.shape[0])) // HOP_LENGTH
        frames = _harvest(segment)
        keep = slice(start // HOP_LENGTH, stop // HOP_LENGTH if stop < n_samples else f0_hz.shape[0])
        f0_hz[keep] = frames[keep.start - first_frame : keep.stop - first_frame]
    return torch.from_numpy(f0_hz)


def _dc_tail(segment: np.ndarray, mean: float) -> np.ndarray:
    """A constant run that brings `segment`'s mean to `mean`: a whole number of frames long (so a
    tail in front keeps the frame grid), at least `DC_TAIL_SECONDS`, its level within ±0.5."""
    excess = mean * segment.shape[0] - float(segment.sum())
    length = max(round(DC_TAIL_SECONDS * SAMPLE_RATE), math.ceil(abs(excess) / 0.5))
    length = -(-length // HOP_LENGTH) * HOP_LENGTH
    level = (mean * (segment.shape[0] + length) - float(segment.sum())) / length
    return np.full(length, level)


def _harvest(samples: np.ndarray) -> torch.Tensor:
    """Harvest with the reference's settings on float64 samples; values below 80 Hz -> 0."""
    with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import pyworld

    f0, _ = pyworld.harvest(
        samples,
        SAMPLE_RATE,
        f0_floor=F0_FLOOR_HZ,
        f0_ceil=F0_CEIL_HZ,
        frame_period=HOP_LENGTH / SAMPLE_RATE * 1000.0,
    )
    f0[f0 < VOICED_MIN_HZ] = 0.0
    return torch.from_numpy(f0.astype(np.float32))


def median_log_f0(f0_hz: torch.Tensor) -> torch.Tensor:
    """Lower median of ln F0 over voiced frames (torch.median semantics, as the reference).

    Returns:
        A 0-d tensor in the dtype of `f0_hz`.

    Raises:
        ValueError: no frame is voiced, so the median is undefined.
    """
    voiced = f0_hz[f0_hz > 0]
    if voiced.numel() == 0:
        raise ValueError("no voiced frames: the median pitch is undefined")
    return torch.log(voiced).median()


def shift_to_reference(source_f0_hz: torch.Tensor, reference_f0_hz: torch.Tensor) -> torch.Tensor:
    """Move the source melody so its median log-F0 equals the reference's (spec §6.1).

    F0_tgt = exp(ln F0_src + mu_ref - mu_src) on voiced frames, evaluated in the source's dtype
    in the reference's order of operations; unvoiced frames stay 0.
    """
    return _shift_log(source_f0_hz, median_log_f0(source_f0_hz), median_log_f0(reference_f0_hz))


def shift_semitones(f0_hz: torch.Tensor, semitones: float) -> torch.Tensor:
    """Transpose voiced frames by a fixed number of semitones; unvoiced frames stay 0."""
    log_to = torch.tensor(semitones / 12.0 * math.log(2.0), dtype=f0_hz.dtype)
    return _shift_log(f0_hz, torch.zeros((), dtype=f0_hz.dtype), log_to)


AUTO_SHIFTS = ("auto", "auto-semitone", "auto-octave")
"""Automatic shifts: the paper's continuous one, and the same rounded to semitones or octaves."""

MAX_SHIFT_SEMITONES = 48.0
"""Largest transposition accepted (four octaves); beyond it the vocoders leave their range."""

PitchShift = str | float | None
"""One of `AUTO_SHIFTS`, a number of semitones, or None (keep the source pitch)."""


def parse_pitch_shift(value: object) -> PitchShift:
    """Canonical form of a pitch-shift setting: an `AUTO_SHIFTS` name, finite semitones, or None.

    Accepts the strings "auto", "auto-semitone", "auto-octave", "none" (any case), None, numbers
    and numeric strings ("-3", "+12").

    Raises:
        ValueError: anything else, a non-finite number, or more than `MAX_SHIFT_SEMITONES`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in AUTO_SHIFTS:
            return text
        if text in ("none", "null", "off"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"pitch shift must be {', '.join(AUTO_SHIFTS)}, none or a number of semitones, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"pitch shift must be a name or a number of semitones, got {value!r}")
    semitones = float(value)
    if not math.isfinite(semitones) or abs(semitones) > MAX_SHIFT_SEMITONES:
        raise ValueError(
            f"pitch shift must be a finite number of semitones within ±{MAX_SHIFT_SEMITONES:g}, got {value!r}"
        )
    return semitones


def apply_pitch_shift(
    source_f0_hz: torch.Tensor, reference_f0_hz: torch.Tensor, shift: PitchShift
) -> tuple[torch.Tensor, float]:
    """The source F0 transposed as `shift` says, and the transposition in semitones.

    "auto" is the paper's shift (:func:`shift_to_reference`, bit for bit); "auto-semitone" and
    "auto-octave" round its interval to whole semitones / octaves (an octave shift keeps a song's
    key); a number transposes by that many semitones; None keeps the source pitch.

    Raises:
        ValueError: an automatic shift and no voiced frame in the source or the reference.
    """
    shift = parse_pitch_shift(shift)
    if shift is None:
        return source_f0_hz.clone(), 0.0
    if isinstance(shift, float):
        return shift_semitones(source_f0_hz, shift), shift
    log_source, log_reference = median_log_f0(source_f0_hz), median_log_f0(reference_f0_hz)
    semitones = 12.0 * float(log_reference - log_source) / math.log(2.0)
    if shift == "auto":
        return _shift_log(source_f0_hz, log_source, log_reference), semitones
    step = 12.0 if shift == "auto-octave" else 1.0
    rounded = step * round(semitones / step)
    return shift_semitones(source_f0_hz, rounded), rounded


def _shift_log(f0_hz: torch.Tensor, log_from: torch.Tensor, log_to: torch.Tensor) -> torch.Tensor:
    voiced = f0_hz > 0
    shifted = torch.zeros_like(f0_hz)
    shifted[voiced] = torch.exp(torch.log(f0_hz[voiced]) + log_to - log_from)
    return shifted
