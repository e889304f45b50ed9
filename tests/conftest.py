"""Shared fixtures: the golden reference run and the tiny checkpoints in the official formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"

# The tests run tiny models: one intra-op thread avoids thread contention on shared 2-core machines.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def golden() -> dict:
    """Inputs, intermediates and outputs of one reference conversion (see golden/README.md)."""
    return torch.load(GOLDEN / "golden_pipeline.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


def sung_vowel(
    seconds: float,
    f0_hz: float,
    sample_rate: int = 16_000,
    vibrato_hz: float = 5.0,
    vibrato_cents: float = 30.0,
    formants_hz: tuple[float, ...] = (700.0, 1200.0, 2600.0),
    seed: int = 0,
) -> torch.Tensor:
    """A harmonic-rich sung vowel with vibrato (Harvest needs harmonics; pure sines fail).

    Returns:
        (L,) float32 waveform with peak 0.5.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = f0_hz * 2.0 ** (vibrato_cents / 1200.0 * np.sin(2 * np.pi * vibrato_hz * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wav = np.zeros_like(t)
    for k in range(1, int(7600 // (f0_hz * 1.1))):
        gain = sum(np.exp(-(((k * f0_hz) - f) / 150.0) ** 2) for f in formants_hz) + 0.05 / k
        wav += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    wav += 0.002 * rng.standard_normal(len(t))
    return torch.from_numpy((0.5 * wav / np.abs(wav).max()).astype(np.float32))
