"""Output rates of the vocoders: samples per frame, HiFi-GAN upsampling stacks and mel-loss settings.

WavLM reads 16 kHz and gives 50 frames per second at every output rate; a vocoder writing at
``sample_rate`` therefore produces ``sample_rate / 50`` samples per frame (320 at 16 kHz, 480 at
24 kHz, 882 at 44.1 kHz). A HiFi-GAN reaches that hop with upsampling factors whose product is the
hop; each transposed conv has kernel 2 r (even r) or 2 r + 1 (odd r), so that its output is
exactly r times its input and the excitation branch's strided convs mirror it.
"""

from __future__ import annotations

from hifigan.config import HiFiGANConfig
from hifigan.excitation import HOP_LENGTH, SAMPLE_RATE
from hifigan.mel import MelConfig

FRAME_RATE = SAMPLE_RATE // HOP_LENGTH
"""Feature frames per second (WavLM at 16 kHz, hop 320): 50 at every output rate."""

UPSAMPLING: dict[int, tuple[list[int], list[int]]] = {
    16_000: ([10, 8, 2, 2], [20, 16, 4, 4]),
    24_000: ([10, 6, 4, 2], [20, 12, 8, 4]),
    44_100: ([7, 7, 6, 3], [15, 15, 12, 7]),
}
"""(upsample_rates, upsample_kernel_sizes) of the HiFi-GAN generators per output rate (16 kHz: the release)."""

MEL_BANDS = {16_000: 80, 24_000: 100, 44_100: 128}
"""Mel bands of the mel loss per output rate (16 kHz: the official 80; 24 kHz: Vocos' 100)."""


def hop_for_rate(sample_rate: int) -> int:
    """Samples per feature frame at ``sample_rate`` (``sample_rate / 50``); ValueError if not whole."""
    if sample_rate <= 0 or sample_rate % FRAME_RATE:
        raise ValueError(
            f"output rate {sample_rate} Hz is not a whole number of samples per frame "
            f"({FRAME_RATE} frames per second); use e.g. 16000, 24000, 44100 or 48000"
        )
    return sample_rate // FRAME_RATE


def hifigan_config(sample_rate: int = SAMPLE_RATE) -> HiFiGANConfig:
    """HiFi-GAN V1 architecture at ``sample_rate`` (16 kHz: the official config, unchanged).

    Raises:
        ValueError: a rate without an upsampling stack in :data:`UPSAMPLING`.
    """
    if sample_rate == SAMPLE_RATE:
        return HiFiGANConfig()
    if sample_rate not in UPSAMPLING:
        raise ValueError(
            f"no HiFi-GAN upsampling stack for {sample_rate} Hz (have {sorted(UPSAMPLING)}); "
            "pass a vocoder_config whose upsample_rates multiply to the hop"
        )
    rates, kernels = UPSAMPLING[sample_rate]
    return HiFiGANConfig(upsample_rates=list(rates), upsample_kernel_sizes=list(kernels),
                         extra={"sampling_rate": sample_rate})


def mel_config(sample_rate: int = SAMPLE_RATE) -> MelConfig:
    """Mel-loss settings at ``sample_rate``: hop = samples per frame, FFT 2048 (1024 at 16 kHz), 0 Hz-Nyquist.

    16 kHz gives the official ``MelConfig()`` (80 bands up to 8 kHz). The FFT length minus the hop is
    even, so a segment of T frames gives exactly T mel frames.
    """
    if sample_rate == SAMPLE_RATE:
        return MelConfig()
    hop = hop_for_rate(sample_rate)
    n_fft = 2048
    if (n_fft - hop) % 2:
        n_fft += 1
    return MelConfig(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=n_fft,
        hop_length=hop,
        n_mels=MEL_BANDS.get(sample_rate, 128),
        fmin_hz=0.0,
        fmax_hz=sample_rate / 2,
    )
