"""Log-mel spectrogram of the HiFi-GAN mel loss (spec §10.2), without torchaudio or librosa.

Equivalent to the reference's ``LogMelSpectrogram``: reflect-pad (n_fft - hop) / 2 = 352 samples on
each side, |STFT| (n_fft 1024, hop 320, periodic Hann window of 1024, ``center=False``, power 1),
an 80-band Slaney-scale, Slaney-normalised triangular filterbank over 0-8000 Hz, and
log(clamp(., 1e-5)). A segment of 7040 samples gives exactly 22 frames, one per WavLM frame.

The filterbank is built here in float64 NumPy with the formulas of Slaney's Auditory Toolbox (the
same definition as librosa's ``mel(htk=False, norm="slaney")`` and torchaudio's
``melscale_fbanks(norm="slaney", mel_scale="slaney")``).

Shape letters: B batch, L samples, M mel bands, F frames.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_CLAMP = 1e-5
"""Magnitudes below this are clamped before the log (floor of about -11.5)."""


@dataclass(frozen=True)
class MelConfig:
    """Settings of the log-mel front end; defaults are the official ``config_v1_wavlm.json``."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 320
    n_mels: int = 80
    fmin_hz: float = 0.0
    fmax_hz: float = 8000.0

    @property
    def padding(self) -> int:
        """Reflect padding on each side: (n_fft - hop) / 2 = 352 for the defaults."""
        return (self.n_fft - self.hop_length) // 2


_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel on the linear part (below 1 kHz)
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # = 15
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(freq_hz: float | np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    mel = freq_hz / _SLANEY_F_SP
    log_part = freq_hz >= _SLANEY_MIN_LOG_HZ
    mel = np.where(
        log_part,
        _SLANEY_MIN_LOG_MEL
        + np.log(np.maximum(freq_hz, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP,
        mel,
    )
    return mel


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    freq_hz = mel * _SLANEY_F_SP
    log_part = mel >= _SLANEY_MIN_LOG_MEL
    return np.where(
        log_part, _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL)), freq_hz
    )


def mel_filterbank(config: MelConfig = MelConfig()) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank.

    Band m rises linearly from centre frequency c_{m-1} to c_m and falls to c_{m+1}, where the
    M + 2 points c are equally spaced on the Slaney mel scale between fmin and fmax; it is scaled
    by 2 / (c_{m+1} - c_{m-1}) so that every band has unit area in Hz.

    Returns:
        (n_fft // 2 + 1, M) float64 weights: spectrum bins x mel bands.
    """
    n_bins = config.n_fft // 2 + 1
    bin_hz = np.linspace(0.0, config.sample_rate / 2, n_bins)
    mel_points = np.linspace(
        hz_to_mel_slaney(config.fmin_hz), hz_to_mel_slaney(config.fmax_hz), config.n_mels + 2
    )
    points_hz = mel_to_hz_slaney(mel_points)  # (M + 2,)
    widths_hz = np.diff(points_hz)  # (M + 1,)
    offsets = points_hz[None, :] - bin_hz[:, None]  # (n_bins, M + 2)
    rising = -offsets[:, :-2] / widths_hz[:-1]
    falling = offsets[:, 2:] / widths_hz[1:]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_bins, M)
    weights *= 2.0 / (points_hz[2:] - points_hz[:-2])
    return weights


class LogMelSpectrogram(nn.Module):
    """Log-magnitude mel spectrogram used as the HiFi-GAN mel-loss target (spec §10.2).

    Always computed in float32 (autocast is disabled inside), so the loss does not depend on the
    training precision.
    """

    window: torch.Tensor  # (win_length,) periodic Hann window
    filterbank: torch.Tensor  # (n_fft // 2 + 1, M)

    def __init__(self, config: MelConfig = MelConfig()) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length, periodic=True), persistent=False)
        self.register_buffer("filterbank", torch.from_numpy(mel_filterbank(config)).float(), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples (= ``num_samples // hop``)."""
        padded = num_samples + 2 * self.config.padding
        return (padded - self.config.n_fft) // self.config.hop_length + 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel spectrogram.

        Args:
            wav: (B, L) or (L,) waveform at ``config.sample_rate``.

        Returns:
            (B, M, F) or (M, F) float32 log magnitudes, F = L // hop for the default settings.
        """
        squeeze = wav.dim() == 1
        if squeeze:
            wav = wav[None]
        cfg = self.config
        device_type = wav.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            wav = wav.float()
            padded = F.pad(wav[:, None, :], (cfg.padding, cfg.padding), mode="reflect")[:, 0]
            spec = torch.stft(
                padded,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                win_length=cfg.win_length,
                window=self.window.to(padded.device),
                center=False,
                normalized=False,
                onesided=True,
                return_complex=True,
            ).abs()  # (B, n_fft // 2 + 1, F)
            mel = torch.matmul(self.filterbank.to(spec.device).T, spec)  # (B, M, F)
            log_mel = torch.log(torch.clamp(mel, min=LOG_CLAMP))
        return log_mel[0] if squeeze else log_mel
