"""The excitation signals of the harmonic vocoders: additive synthesis U(t) and the f0 sinusoid.

They live with the generators that consume them (this layer imports nothing of `knnsvc`); the
pipeline and vocoder training reach them through `knnsvc.harmonics`, so there is one copy of this
DSP. Everything is plain torch, works on batches and on any device, and reproduces the official
kNN-SVC discretisation (the inclusive float64 phase cumsum, the ``round`` wrap, the multiplicative
anti-alias mask), because the released vocoders were trained on exactly this signal.

Shape letters: B batch, T frames (50 Hz), H harmonics, L samples (16 kHz).
"""

import math

import torch

SAMPLE_RATE = 16_000
"""Sample rate of the signal path the released checkpoints were trained on."""

HOP_LENGTH = 320
"""Samples per feature frame: 20 ms, 50 frames per second."""

NYQUIST_HZ = SAMPLE_RATE / 2
"""Harmonics at or above this frequency are suppressed by the anti-alias mask."""

MASK_PASS = 1.0 + 1e-7
"""Anti-alias mask value for harmonics below Nyquist (the official value, not exactly 1)."""

MASK_STOP = 1e-7
"""Anti-alias mask value for harmonics at or above Nyquist (attenuated, not exactly 0)."""


def running_cycles(f0_hz: torch.Tensor, start_cycles: torch.Tensor | None = None) -> torch.Tensor:
    """Phase of nearest-upsampled f0, in cycles, as an inclusive float64 running sum.

    Phi[s] = start + sum_{u <= s} f0_up[u] / fs: sample 0 already has f0[0] / fs. The sum runs
    sample by sample from `start_cycles`, so a signal synthesised block by block, each block
    starting from the previous block's last value, has exactly the phase of the whole signal.

    Args:
        f0_hz: (B, T) frame-rate f0.
        start_cycles: (B,) phase accumulated before the first sample; None = 0.

    Returns:
        (B, T * 320) float64 cycles.
    """
    steps = torch.repeat_interleave(f0_hz.to(torch.float64), HOP_LENGTH, dim=1) / SAMPLE_RATE
    if start_cycles is None:
        return torch.cumsum(steps, dim=1)
    start = start_cycles.to(device=steps.device, dtype=torch.float64).reshape(-1, 1)
    return torch.cumsum(torch.cat([start.expand(steps.shape[0], 1), steps], dim=1), dim=1)[:, 1:]


def _wrap(cycles: torch.Tensor) -> torch.Tensor:
    """Cycles -> radians wrapped to [-pi, pi], float32 (the reference's ``round`` wrap)."""
    return (2 * math.pi * (cycles - torch.round(cycles))).to(torch.float32)


def _check_f0(f0_hz: torch.Tensor, name: str) -> None:
    if f0_hz.dim() != 2:
        raise ValueError(f"{name} expects f0_hz of shape (B, T), got {tuple(f0_hz.shape)}")


CUBIC_A = -0.75
"""Coefficient of PyTorch's bicubic kernel, which the amplitudes were upsampled with."""


def _bicubic_weights(device: torch.device) -> torch.Tensor:
    """(320, 4) float32 weights of the 4 frames that bicubic upsampling by 320 mixes per sample.

    With ``align_corners=False`` sample s = 320 j + r reads the frame position j + (r - 159.5) / 320:
    for r < 160 the taps are frames j-2..j+1, from r = 160 on frames j-1..j+2. The weights depend
    on r only, so every frame (and every block of frames) is upsampled with the same table.
    """
    r = torch.arange(HOP_LENGTH, dtype=torch.float64)
    t = torch.where(r < HOP_LENGTH // 2, (r + 160.5) / HOP_LENGTH, (r - 159.5) / HOP_LENGTH)

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)
    return weights.to(device=device, dtype=torch.float32)


def upsample_bicubic(values: torch.Tensor) -> torch.Tensor:
    """Frame-rate values to the sample rate, as PyTorch's bicubic ``interpolate`` (align_corners=False).

    Frames beyond the ends are clamped to the first/last frame. The weights are a fixed (320, 4)
    table and the sum is written out term by term, so a sample's value depends only on its own
    four frames: upsampling a block with two frames of context on each side gives exactly the
    samples of the whole sequence.

    Args:
        values: (B, T) frame-rate values.

    Returns:
        (B, T * 320) float32.
    """
    batch, n_frames = values.shape
    weights = _bicubic_weights(values.device)  # (320, 4)
    index = torch.arange(-2, n_frames + 2, device=values.device).clamp(0, max(n_frames - 1, 0))
    padded = values.to(torch.float32)[:, index]  # (B, T + 4): frames j - 2 .. j + 2 at column j + m
    taps = [padded[:, m : m + n_frames, None] for m in range(5)]  # each (B, T, 1)
    half = HOP_LENGTH // 2
    early, late = weights[:half], weights[half:]
    first = taps[0] * early[:, 0] + taps[1] * early[:, 1] + taps[2] * early[:, 2] + taps[3] * early[:, 3]
    second = taps[1] * late[:, 0] + taps[2] * late[:, 1] + taps[3] * late[:, 2] + taps[4] * late[:, 3]
    return torch.cat([first, second], dim=2).reshape(batch, n_frames * HOP_LENGTH)


def additive_synth(
    f0_hz: torch.Tensor, amps: torch.Tensor, start_cycles: torch.Tensor | None = None
) -> torch.Tensor:
    """Additive-synthesis waveform U(t) at the target pitch (spec §8.4, faithful).

    U[s] = sum_k A_k[s] * M_k[s] * sin(k * phi[s]) with f0 nearest-upsampled to the sample rate,
    amplitudes upsampled by bicubic interpolation (may overshoot), the phase from a float64
    inclusive running sum wrapped with ``round``, and M_k = 1 + 1e-7 where k * f0 < 8 kHz, else
    1e-7. Unvoiced frames freeze the phase (a DC-like step driven by A_1), as the released
    vocoders were trained with.

    Works in blocks: given the phase reached before a block (`start_cycles`), the block's samples
    are those of the whole signal, except within two frames of a block edge that is not an end of
    the signal (where bicubic interpolation would need the neighbouring frames). Harmonics are
    added one at a time, so memory is a few copies of the output.

    Args:
        f0_hz: (B, T) target f0, 0 = unvoiced.
        amps: (B, T, H) harmonic amplitudes.
        start_cycles: (B,) phase in cycles accumulated before the first sample (None = 0).

    Returns:
        (B, T * 320) float32 waveform.
    """
    _check_f0(f0_hz, "additive_synth")
    if amps.dim() != 3 or amps.shape[:2] != f0_hz.shape:
        raise ValueError(f"amps must be (B, T, H) matching f0_hz {tuple(f0_hz.shape)}, got {tuple(amps.shape)}")
    amps = amps.to(device=f0_hz.device, dtype=torch.float32)
    phase = _wrap(running_cycles(f0_hz, start_cycles))  # (B, L)
    f0_up = torch.repeat_interleave(f0_hz.to(torch.float32), HOP_LENGTH, dim=1)  # (B, L)
    wav = torch.zeros_like(phase)
    for k in range(1, amps.shape[2] + 1):
        mask = torch.where(k * f0_up < NYQUIST_HZ, MASK_PASS, MASK_STOP)
        wav = wav + upsample_bicubic(amps[:, :, k - 1]) * mask * torch.sin(k * phase)
    return wav


def sine_excitation(f0_hz: torch.Tensor, start_cycles: torch.Tensor | None = None) -> torch.Tensor:
    """Unit-amplitude sinusoid at f0, the excitation of the f0-sine vocoder (spec §8.5).

    Same phase construction as :func:`additive_synth` (nearest-upsampled f0, float64 inclusive
    running sum from `start_cycles`, wrap), one harmonic, no amplitude and no mask.

    Args:
        f0_hz: (B, T) f0, 0 = unvoiced (phase freezes).
        start_cycles: (B,) phase in cycles accumulated before the first sample (None = 0).

    Returns:
        (B, T * 320) float32 waveform.
    """
    _check_f0(f0_hz, "sine_excitation")
    return torch.sin(_wrap(running_cycles(f0_hz, start_cycles)))
