"""Spectrogram frames, harmonic amplitudes and additive synthesis (spec §8).

The excitation signals (additive synthesis U(t), the f0 sinusoid, the running phase) are defined
beside the generators in `hifigan.excitation` and re-exported here.

One copy of this DSP serves both vocoder training and inference. Everything is plain torch, works
on batches and on any device, and reproduces the official kNN-SVC discretisation including its
quirks (the -17.5 Hz read-out offset of the harmonic table, the inclusive phase cumsum, the
multiplicative anti-alias mask), because the released vocoders were trained on exactly this signal.

Shape letters: B batch, T frames (50 Hz), H harmonics, L samples (16 kHz).
"""


import torch
import torch.nn.functional as F

from hifigan.excitation import (
    MASK_PASS,
    MASK_STOP,
    NYQUIST_HZ,
    additive_synth,
    running_cycles,
    sine_excitation,
    upsample_bicubic,
)
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
