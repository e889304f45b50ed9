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


def harvest_f0(wav_16k: torch.Tensor) -> torch.Tensor:
    """WORLD Harvest F0 at the WavLM frame rate (spec §5).

    Args:
        wav_16k: (L,) waveform at 16 kHz.

    Returns:
        f0_hz: (L // 320 + 1,) float32; frame n is centred at n * 20 ms; 0 marks unvoiced frames.
    """
    with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import pyworld

    samples = wav_16k.detach().cpu().double().numpy()
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


def _shift_log(f0_hz: torch.Tensor, log_from: torch.Tensor, log_to: torch.Tensor) -> torch.Tensor:
    voiced = f0_hz > 0
    shifted = torch.zeros_like(f0_hz)
    shifted[voiced] = torch.exp(torch.log(f0_hz[voiced]) + log_to - log_from)
    return shifted
