"""Spectrogram frames, harmonic amplitudes and additive synthesis (spec §8).

The excitation signals (additive synthesis U(t), the f0 sinusoid, the running phase) are defined
beside the generators in `hifigan.excitation` and re-exported here.

One copy of this DSP serves both vocoder training and inference. Everything is plain torch, works
on batches and on any device, and reproduces the official kNN-SVC discretisation including its
quirks (the -17.5 Hz read-out offset of the harmonic table, the inclusive phase cumsum, the
multiplicative anti-alias mask), because the released vocoders were trained on exactly this signal.

Measuring above 16 kHz (vocoders at 24 or 44.1 kHz): the spectrum of a recording at ``sample_rate``
uses the same 20 ms frames (hop ``sample_rate / 50``) and a 25 ms window scaled to the rate (an even
FFT size, ``spectrum_size``), and its magnitudes are scaled by ``N_FFT / n_fft`` so that a sinusoid of
amplitude a reads the same amplitude at every rate. The harmonic table is read the same way at every
rate (8x linear upsampling along frequency, the appended zero), so a harmonic at or above the Nyquist
frequency of the measuring rate reads 0: a 16 kHz recording gives amplitudes up to 8 kHz only,
whatever the number of columns H (`harmonics_for_rate`) the vocoder takes. At 16 kHz every number is
the released one, bit for bit.

Shape letters: B batch, T frames (50 Hz), H harmonics, L samples (16 kHz unless a ``sample_rate`` is given).
"""


import torch
import torch.nn.functional as F

from hifigan.excitation import (
    MASK_PASS,
    MASK_STOP,
    NYQUIST_HZ,
    additive_synth,
    max_harmonics,
    running_cycles,
    sine_excitation,
    upsample_bicubic,
)
from hifigan.presets import hop_for_rate
from knnsvc.config import HOP_LENGTH, N_HARMONICS, SAMPLE_RATE

__all__ = [
    "N_FFT",
    "N_BINS",
    "UPSAMPLE_FACTOR",
    "AMPLITUDE_SCALE",
    "HARMONICS_F0_HZ",
    "NYQUIST_HZ",
    "MASK_PASS",
    "MASK_STOP",
    "spectrum_size",
    "harmonics_for_rate",
    "amplitude_rate",
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

HARMONICS_F0_HZ = 160.0
"""The voice whose harmonics below Nyquist set H: 49 below 8 kHz (the released vocoders' columns),
74 below 12 kHz (24 kHz output), 137 below 22.05 kHz (44.1 kHz output)."""


def spectrum_size(sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(n_fft, hop) of the per-frame spectrum at ``sample_rate``: (400, 320) at 16 kHz.

    The hop is 20 ms (``sample_rate / 50``), the window 25 ms rounded to an even number of samples
    (600 at 24 kHz, 1102 at 44.1 kHz).

    Raises:
        ValueError: a rate that is not a whole number of samples per 20 ms frame.
    """
    if sample_rate == SAMPLE_RATE:
        return N_FFT, HOP_LENGTH
    hop = hop_for_rate(sample_rate)
    return 2 * round(N_FFT * sample_rate / (2 * SAMPLE_RATE)), hop


def harmonics_for_rate(sample_rate: int = SAMPLE_RATE) -> int:
    """H, the harmonic amplitude columns of a vocoder writing at ``sample_rate``.

    As many harmonics of a `HARMONICS_F0_HZ` voice as fit below the Nyquist frequency: 49 at
    16 kHz (the released vocoders), 74 at 24 kHz, 137 at 44.1 kHz. Lower voices have more harmonics
    below Nyquist than are kept, higher ones have their top columns masked by the synthesis.
    """
    return max_harmonics(sample_rate, HARMONICS_F0_HZ)


def amplitude_rate(original_rate: int, output_rate: int = SAMPLE_RATE) -> int:
    """The rate a recording's harmonic amplitudes are measured at, for a vocoder at ``output_rate``.

    min(original rate, output rate), rounded down to a whole number of samples per 20 ms frame,
    and never below 16 kHz (the rate WavLM reads anyway): a 16 kHz vocoder always measures at
    16 kHz; a 44.1 kHz vocoder measures a 48 kHz recording at 44.1 kHz and a 16 kHz one at 16 kHz.
    """
    if original_rate <= 0 or output_rate <= 0:
        raise ValueError(f"rates must be positive, got {original_rate} and {output_rate}")
    frame_rate = SAMPLE_RATE // HOP_LENGTH
    rate = min(original_rate, output_rate)
    return max(SAMPLE_RATE, rate - rate % frame_rate)


def magnitude_spectrogram(
    wav: torch.Tensor, first_frame: int = 0, num_frames: int | None = None, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Per-frame STFT magnitudes of a waveform (spec §8.1), optionally a range of frames.

    At 16 kHz: |STFT| with n_fft 400, hop 320, periodic Hann window of 400, centred frames (reflect
    padding of 200 at both ends of the recording), power 1, no normalisation; the Nyquist bin is
    dropped. Frame n covers samples 320 n - 200 .. 320 n + 199, so a range of frames is computed
    from just the samples it covers (works in blocks: frame for frame the whole spectrogram).
    At another rate the same with (n_fft, hop) = `spectrum_size(sample_rate)`, the magnitudes
    scaled by 400 / n_fft so that a sinusoid reads the same magnitude as at 16 kHz (bins are
    ``sample_rate / n_fft``, about 40 Hz, apart at every rate).

    Args:
        wav: (L,) waveform at ``sample_rate``.
        first_frame, num_frames: the frames wanted (default: all L // hop + 1).
        sample_rate: the waveform's rate (a whole number of samples per 20 ms).

    Returns:
        (num_frames, n_fft // 2) float32 magnitudes, bin b at b * sample_rate / n_fft Hz
        ((num_frames, 200), 40 Hz apart, at 16 kHz).
    """
    if wav.dim() != 1:
        raise ValueError(f"magnitude_spectrogram expects a 1-D waveform (L,), got shape {tuple(wav.shape)}")
    n_fft, hop = spectrum_size(sample_rate)
    total = wav.shape[0] // hop + 1
    if num_frames is None:
        num_frames = total - first_frame
    if not (0 <= first_frame and first_frame + num_frames <= total):
        raise ValueError(f"frames {first_frame}..{first_frame + num_frames} outside the {total} frames")
    half = n_fft // 2
    samples = torch.arange(first_frame * hop - half, (first_frame + num_frames - 1) * hop + half, device=wav.device)
    last = wav.shape[0] - 1
    samples = torch.where(samples < 0, -samples, samples)  # reflect at the start (edge excluded)
    samples = torch.where(samples > last, 2 * last - samples, samples)  # and at the end
    frames = wav.float()[samples]
    window = torch.hann_window(n_fft, periodic=True, dtype=frames.dtype, device=frames.device)
    stft = torch.stft(
        frames,
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # (n_fft // 2 + 1, num_frames)
    spec = stft.abs()[:half].T.contiguous()
    if n_fft != N_FFT:
        spec = spec * (N_FFT / n_fft)  # the Hann window's sum is n_fft / 2: a sinusoid reads as at 16 kHz
    return spec


def harmonic_amplitudes(
    spec: torch.Tensor, f0_hz: torch.Tensor, n_harmonics: int = N_HARMONICS, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Harmonic amplitudes read from each frame's own magnitude spectrum (spec §8.2, faithful).

    The frame's n_bins (200 at 16 kHz) are linearly upsampled 8x along frequency
    (``align_corners=False``, so at 16 kHz sample i sits at about 5 i - 17.5 Hz) and a zero is
    appended; harmonic k is read at index round_half_even(min(k f0 / fine, 8 n_bins)), fine =
    sample_rate / n_fft / 8 Hz (5 Hz at 16 kHz), so harmonics at or above the Nyquist frequency of
    ``sample_rate`` (8 kHz at 16 kHz) read the appended zero. Unvoiced frames (f0 = 0) get
    harmonic 1 = the frame's maximum magnitude, the others 0. Everything is finally scaled by
    ``AMPLITUDE_SCALE``.

    Args:
        spec: (T, n_bins) magnitudes from :func:`magnitude_spectrogram` at ``sample_rate`` (first T frames).
        f0_hz: (T,) fundamental frequency, 0 = unvoiced.
        n_harmonics: H, number of harmonics (49 for the released vocoders; `harmonics_for_rate`).
        sample_rate: the rate the spectrum was measured at.

    Returns:
        (T, H) float32 amplitudes.
    """
    n_bins = spectrum_size(sample_rate)[0] // 2
    if spec.dim() != 2 or spec.shape[1] != n_bins:
        raise ValueError(
            f"harmonic_amplitudes expects spec of shape (T, {n_bins}) at {sample_rate} Hz, got {tuple(spec.shape)}"
        )
    if f0_hz.shape != spec.shape[:1]:
        raise ValueError(f"f0_hz shape {tuple(f0_hz.shape)} does not match spec frames {spec.shape[0]}")
    spec = spec.float()
    f0_hz = f0_hz.to(device=spec.device, dtype=torch.float32)
    n_fine = n_bins * UPSAMPLE_FACTOR
    fine = F.interpolate(spec[:, None, :], size=n_fine, mode="linear", align_corners=False)[:, 0]
    fine = F.pad(fine, (0, 1))  # (T, n_fine + 1): index n_fine is the appended zero

    k = torch.arange(1, n_harmonics + 1, device=spec.device, dtype=torch.float32)
    position = k[None, :] * f0_hz[:, None] * 2 * n_fine / sample_rate  # (T, H), fine-bin units
    index = torch.round(torch.clamp(position, max=float(n_fine))).long()  # round half to even
    amps = torch.gather(fine, 1, index)

    unvoiced = (f0_hz == 0)[:, None]  # (T, 1)
    is_first = k[None, :] == 1
    unvoiced_amps = torch.where(is_first, spec.amax(dim=1, keepdim=True), torch.zeros_like(amps))
    return torch.where(unvoiced, unvoiced_amps, amps) * AMPLITUDE_SCALE
