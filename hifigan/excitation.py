"""The excitation signals of the harmonic vocoders: additive synthesis U(t) and the f0 sinusoid.

They live with the generators that consume them (this layer imports nothing of `knnsvc`); the
pipeline and vocoder training reach them through `knnsvc.harmonics`, so there is one copy of this
DSP. Everything is plain torch, works on batches and on any device, and reproduces the official
kNN-SVC discretisation (the inclusive float64 phase cumsum, the ``round`` wrap, the multiplicative
anti-alias mask), because the released vocoders were trained on exactly this signal.

Every function takes the output rate as ``sample_rate`` and the samples per frame as ``hop_length``
(defaults: the released 16 kHz, 320 samples per frame, computed exactly as before); a vocoder at
24 kHz (hop 480) or 44.1 kHz (hop 882) gets its excitation at its own rate, with the phase carried
in samples of that rate and the anti-alias mask at that rate's Nyquist.

Shape letters: B batch, T frames (50 Hz), H harmonics, L samples (T * hop_length).
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


def max_harmonics(sample_rate: int, f0_min_hz: float) -> int:
    """How many harmonics of the lowest f0 fit below the Nyquist frequency of ``sample_rate``.

    The number of amplitude columns H an additive synthesis at ``sample_rate`` can use for a voice
    whose f0 goes down to ``f0_min_hz`` (harmonics at or above Nyquist are masked anyway).
    """
    if f0_min_hz <= 0:
        raise ValueError(f"f0_min_hz must be positive, got {f0_min_hz}")
    return max(1, math.ceil(sample_rate / 2 / f0_min_hz) - 1)


def _check_rate(sample_rate: int, hop_length: int) -> None:
    if sample_rate <= 0 or hop_length <= 0:
        raise ValueError(f"sample_rate and hop_length must be positive, got {sample_rate} and {hop_length}")


def running_cycles(
    f0_hz: torch.Tensor,
    start_cycles: torch.Tensor | None = None,
    sample_rate: int = SAMPLE_RATE,
    hop_length: int = HOP_LENGTH,
) -> torch.Tensor:
    """Phase of nearest-upsampled f0, in cycles, as an inclusive float64 running sum.

    Phi[s] = start + sum_{u <= s} f0_up[u] / fs: sample 0 already has f0[0] / fs. The sum runs
    sample by sample from `start_cycles`, so a signal synthesised block by block, each block
    starting from the previous block's last value, has exactly the phase of the whole signal.

    Args:
        f0_hz: (B, T) frame-rate f0.
        start_cycles: (B,) phase accumulated before the first sample; None = 0.
        sample_rate: output rate in Hz; hop_length: samples per frame at that rate.

    Returns:
        (B, T * hop_length) float64 cycles.
    """
    _check_rate(sample_rate, hop_length)
    steps = torch.repeat_interleave(f0_hz.to(torch.float64), hop_length, dim=1) / sample_rate
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


def _bicubic_weights(device: torch.device, hop_length: int = HOP_LENGTH) -> torch.Tensor:
    """(hop, 4) float32 weights of the 4 frames that bicubic upsampling by hop mixes per sample.

    With ``align_corners=False`` sample s = hop j + r reads the frame position
    j + (r + 0.5) / hop - 0.5 (j + (r - 159.5) / 320 for hop 320): for r < hop // 2 the taps are
    frames j-2..j+1, from r = hop // 2 on frames j-1..j+2. The weights depend on r only, so every
    frame (and every block of frames) is upsampled with the same table.
    """
    r = torch.arange(hop_length, dtype=torch.float64)
    early_offset, late_offset = 0.5 + hop_length / 2, 0.5 - hop_length / 2  # 160.5 and -159.5 for hop 320
    t = torch.where(r < hop_length // 2, (r + early_offset) / hop_length, (r + late_offset) / hop_length)

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)
    return weights.to(device=device, dtype=torch.float32)


def upsample_bicubic(values: torch.Tensor, hop_length: int = HOP_LENGTH) -> torch.Tensor:
    """Frame-rate values to the sample rate, as PyTorch's bicubic ``interpolate`` (align_corners=False).

    Frames beyond the ends are clamped to the first/last frame. The weights are a fixed (hop, 4)
    table and the sum is written out term by term, so a sample's value depends only on its own
    four frames: upsampling a block with two frames of context on each side gives exactly the
    samples of the whole sequence.

    Args:
        values: (B, T) frame-rate values.
        hop_length: samples per frame.

    Returns:
        (B, T * hop_length) float32.
    """
    batch, n_frames = values.shape
    weights = _bicubic_weights(values.device, hop_length)  # (hop, 4)
    index = torch.arange(-2, n_frames + 2, device=values.device).clamp(0, max(n_frames - 1, 0))
    padded = values.to(torch.float32)[:, index]  # (B, T + 4): frames j - 2 .. j + 2 at column j + m
    taps = [padded[:, m : m + n_frames, None] for m in range(5)]  # each (B, T, 1)
    half = hop_length // 2
    early, late = weights[:half], weights[half:]
    first = taps[0] * early[:, 0] + taps[1] * early[:, 1] + taps[2] * early[:, 2] + taps[3] * early[:, 3]
    second = taps[1] * late[:, 0] + taps[2] * late[:, 1] + taps[3] * late[:, 2] + taps[4] * late[:, 3]
    return torch.cat([first, second], dim=2).reshape(batch, n_frames * hop_length)


_SYNTH_FLOATS = 2**19
"""Upsampled amplitudes `additive_synth` holds at once: the harmonics are upsampled in
groups of this many samples (2 MiB: a streaming window in one group, a 30 s block one at a time),
then added one at a time in order."""


def additive_synth(
    f0_hz: torch.Tensor,
    amps: torch.Tensor,
    start_cycles: torch.Tensor | None = None,
    sample_rate: int = SAMPLE_RATE,
    hop_length: int = HOP_LENGTH,
) -> torch.Tensor:
    """Additive-synthesis waveform U(t) at the target pitch (spec §8.4, faithful).

    U[s] = sum_k A_k[s] * M_k[s] * sin(k * phi[s]) with f0 nearest-upsampled to the sample rate,
    amplitudes upsampled by bicubic interpolation (may overshoot), the phase from a float64
    inclusive running sum wrapped with ``round``, and M_k = 1 + 1e-7 where k * f0 is below the
    Nyquist frequency (8 kHz at the released 16 kHz), else 1e-7. Unvoiced frames freeze the phase
    (a DC-like step driven by A_1), as the released vocoders were trained with.

    Works in blocks: given the phase reached before a block (`start_cycles`), the block's samples
    are those of the whole signal, except within two frames of a block edge that is not an end of
    the signal (where bicubic interpolation would need the neighbouring frames). Harmonics are
    added one at a time (their amplitudes upsampled a group at a time, `_SYNTH_FLOATS`), so memory
    is a few copies of the output plus 2 MiB.

    Args:
        f0_hz: (B, T) target f0, 0 = unvoiced.
        amps: (B, T, H) harmonic amplitudes (see :func:`max_harmonics` for the H that fits).
        start_cycles: (B,) phase in cycles accumulated before the first sample (None = 0).
        sample_rate: output rate in Hz; hop_length: samples per frame at that rate.

    Returns:
        (B, T * hop_length) float32 waveform.
    """
    _check_f0(f0_hz, "additive_synth")
    if amps.dim() != 3 or amps.shape[:2] != f0_hz.shape:
        raise ValueError(f"amps must be (B, T, H) matching f0_hz {tuple(f0_hz.shape)}, got {tuple(amps.shape)}")
    amps = amps.to(device=f0_hz.device, dtype=torch.float32)
    phase = _wrap(running_cycles(f0_hz, start_cycles, sample_rate, hop_length))  # (B, L)
    f0_up = torch.repeat_interleave(f0_hz.to(torch.float32), hop_length, dim=1)  # (B, L)
    nyquist_hz = sample_rate / 2  # NYQUIST_HZ for the released rate
    wav = torch.zeros_like(phase)
    batch, n_frames, n_harmonics = amps.shape
    group = max(1, min(n_harmonics, _SYNTH_FLOATS // max(1, batch * phase.shape[1])))
    for first in range(0, n_harmonics, group):
        # the amplitudes of `group` harmonics upsampled in one call (row by row the same arithmetic)
        count = min(group, n_harmonics - first)
        rows = amps[:, :, first : first + count].transpose(1, 2).reshape(batch * count, n_frames)
        upsampled = upsample_bicubic(rows, hop_length).reshape(batch, count, -1)
        for j in range(count):
            k = first + j + 1
            mask = torch.where(k * f0_up < nyquist_hz, MASK_PASS, MASK_STOP)
            wav = wav + upsampled[:, j] * mask * torch.sin(k * phase)
    return wav


def sine_excitation(
    f0_hz: torch.Tensor,
    start_cycles: torch.Tensor | None = None,
    sample_rate: int = SAMPLE_RATE,
    hop_length: int = HOP_LENGTH,
) -> torch.Tensor:
    """Unit-amplitude sinusoid at f0, the excitation of the f0-sine vocoder (spec §8.5).

    Same phase construction as :func:`additive_synth` (nearest-upsampled f0, float64 inclusive
    running sum from `start_cycles`, wrap), one harmonic, no amplitude and no mask.

    Args:
        f0_hz: (B, T) f0, 0 = unvoiced (phase freezes).
        start_cycles: (B,) phase in cycles accumulated before the first sample (None = 0).
        sample_rate: output rate in Hz; hop_length: samples per frame at that rate.

    Returns:
        (B, T * hop_length) float32 waveform.
    """
    _check_f0(f0_hz, "sine_excitation")
    return torch.sin(_wrap(running_cycles(f0_hz, start_cycles, sample_rate, hop_length)))
