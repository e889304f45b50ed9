"""Spectrogram frames, harmonic amplitudes and additive synthesis (spec §8).

One copy of this DSP serves both vocoder training and inference. Everything is plain torch, works
on batches and on any device, and reproduces the official kNN-SVC discretisation including its
quirks (the -17.5 Hz read-out offset of the harmonic table, the inclusive phase cumsum, the
multiplicative anti-alias mask), because the released vocoders were trained on exactly this signal.

Shape letters: B batch, T frames (50 Hz), H harmonics, L samples (16 kHz).
"""

import math

import torch
import torch.nn.functional as F

from knnsvc.config import HOP_LENGTH, N_HARMONICS, SAMPLE_RATE

__all__ = [
    "N_FFT",
    "N_BINS",
    "UPSAMPLE_FACTOR",
    "AMPLITUDE_SCALE",
    "NYQUIST_HZ",
    "MASK_PASS",
    "MASK_STOP",
    "magnitude_spectrogram",
    "harmonic_amplitudes",
    "running_cycles",
    "upsample_bicubic",
    "additive_synth",
    "sine_excitation",
]

N_FFT = 400
"""STFT size (and periodic Hann window length) of the per-frame magnitude spectrum."""

N_BINS = N_FFT // 2
"""Frequency bins kept per frame: the one-sided spectrum without its Nyquist bin (40 Hz spacing)."""

UPSAMPLE_FACTOR = 8
"""Linear-interpolation factor along frequency before the harmonics are read (200 -> 1600 bins)."""

AMPLITUDE_SCALE = 0.0108
"""Scale from STFT magnitude to harmonic amplitude (a sinusoid of amplitude a peaks at about 100 a)."""

NYQUIST_HZ = SAMPLE_RATE / 2
"""Harmonics at or above this frequency are suppressed by the anti-alias mask."""

MASK_PASS = 1.0 + 1e-7
"""Anti-alias mask value for harmonics below Nyquist (the official value, not exactly 1)."""

MASK_STOP = 1e-7
"""Anti-alias mask value for harmonics at or above Nyquist (attenuated, not exactly 0)."""


def magnitude_spectrogram(
    wav_16k: torch.Tensor, first_frame: int = 0, num_frames: int | None = None
) -> torch.Tensor:
    """Per-frame STFT magnitudes of a 16 kHz waveform (spec §8.1), optionally a range of frames.

    |STFT| with n_fft 400, hop 320, periodic Hann window of 400, centred frames (reflect padding
    of 200 at both ends of the recording), power 1, no normalisation; the Nyquist bin is dropped.
    Frame n covers samples 320 n - 200 .. 320 n + 199, so a range of frames is computed from just
    the samples it covers (works in blocks: frame for frame the whole spectrogram).

    Args:
        wav_16k: (L,) waveform.
        first_frame, num_frames: the frames wanted (default: all L // 320 + 1).

    Returns:
        (num_frames, 200) float32 magnitudes, bin b at b * 40 Hz.
    """
    if wav_16k.dim() != 1:
        raise ValueError(f"magnitude_spectrogram expects a 1-D waveform (L,), got shape {tuple(wav_16k.shape)}")
    total = wav_16k.shape[0] // HOP_LENGTH + 1
    if num_frames is None:
        num_frames = total - first_frame
    if not (0 <= first_frame and first_frame + num_frames <= total):
        raise ValueError(f"frames {first_frame}..{first_frame + num_frames} outside the {total} frames")
    half = N_FFT // 2
    samples = torch.arange(first_frame * HOP_LENGTH - half, (first_frame + num_frames - 1) * HOP_LENGTH + half,
                           device=wav_16k.device)
    last = wav_16k.shape[0] - 1
    samples = torch.where(samples < 0, -samples, samples)  # reflect at the start (edge excluded)
    samples = torch.where(samples > last, 2 * last - samples, samples)  # and at the end
    wav = wav_16k.float()[samples]
    window = torch.hann_window(N_FFT, periodic=True, dtype=wav.dtype, device=wav.device)
    stft = torch.stft(
        wav,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=N_FFT,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # (201, num_frames)
    return stft.abs()[:N_BINS].T.contiguous()


def harmonic_amplitudes(spec: torch.Tensor, f0_hz: torch.Tensor, n_harmonics: int = N_HARMONICS) -> torch.Tensor:
    """Harmonic amplitudes read from each frame's own magnitude spectrum (spec §8.2, faithful).

    The 200-bin frame is linearly upsampled 8x along frequency (``align_corners=False``, so sample
    i sits at about 5 i - 17.5 Hz) and a zero is appended; harmonic k is read at index
    round_half_even(min(k f0 / 5, 1600)), so harmonics at or above 8 kHz read the appended zero.
    Unvoiced frames (f0 = 0) get harmonic 1 = the frame's maximum magnitude, the others 0.
    Everything is finally scaled by ``AMPLITUDE_SCALE``.

    Args:
        spec: (T, 200) magnitudes from :func:`magnitude_spectrogram` (first T frames).
        f0_hz: (T,) fundamental frequency, 0 = unvoiced.
        n_harmonics: H, number of harmonics (49 for the released vocoders).

    Returns:
        (T, H) float32 amplitudes.
    """
    if spec.dim() != 2 or spec.shape[1] != N_BINS:
        raise ValueError(f"harmonic_amplitudes expects spec of shape (T, {N_BINS}), got {tuple(spec.shape)}")
    if f0_hz.shape != spec.shape[:1]:
        raise ValueError(f"f0_hz shape {tuple(f0_hz.shape)} does not match spec frames {spec.shape[0]}")
    spec = spec.float()
    f0_hz = f0_hz.to(device=spec.device, dtype=torch.float32)
    n_fine = N_BINS * UPSAMPLE_FACTOR
    fine = F.interpolate(spec[:, None, :], size=n_fine, mode="linear", align_corners=False)[:, 0]
    fine = F.pad(fine, (0, 1))  # (T, 1601): index 1600 is the appended zero

    k = torch.arange(1, n_harmonics + 1, device=spec.device, dtype=torch.float32)
    position = k[None, :] * f0_hz[:, None] * 2 * n_fine / SAMPLE_RATE  # (T, H), fine-bin units
    index = torch.round(torch.clamp(position, max=float(n_fine))).long()  # round half to even
    amps = torch.gather(fine, 1, index)

    unvoiced = (f0_hz == 0)[:, None]  # (T, 1)
    is_first = k[None, :] == 1
    unvoiced_amps = torch.where(is_first, spec.amax(dim=1, keepdim=True), torch.zeros_like(amps))
    return torch.where(unvoiced, unvoiced_amps, amps) * AMPLITUDE_SCALE


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
