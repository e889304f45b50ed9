"""HiFi-GAN discriminators: multi-period (MPD) and multi-scale (MSD) (spec §9.5).

Identical in kNN-VC and kNN-SVC. State-dict keys are the official ones (legacy weight norm
``weight_g``/``weight_v``; spectral norm ``weight_orig``/``weight_u``/``weight_v`` on the first
scale), so ``do_XXXXXXXX.pt`` files of the official code load strictly. Parameter counts at the
default width: MPD 41,105,770, MSD 29,618,821.

Each discriminator returns its score map and the list of feature maps the feature-matching loss
compares. ``width`` scales every hidden channel count (rounded to a multiple of 16 so the grouped
convolutions stay valid); it exists for tiny test models, 1.0 is the official architecture.

Shape letters: B batch, L samples, C channels.
"""

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from hifigan.modules import LRELU_SLOPE, WNConv1d, WNConv2d

__all__ = [
    "MPD_PERIODS",
    "DiscriminatorOutput",
    "PeriodDiscriminator",
    "MultiPeriodDiscriminator",
    "ScaleDiscriminator",
    "MultiScaleDiscriminator",
]

MPD_PERIODS = (2, 3, 5, 7, 11)
"""Periods of the sub-discriminators of the MPD."""

DiscriminatorOutput = tuple[
    list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[list[torch.Tensor]]
]
"""(scores on real, scores on generated, feature maps on real, feature maps on generated)."""


def _scaled(channels: int, width: float) -> int:
    if width == 1.0:
        return channels
    return max(16, int(round(channels * width / 16)) * 16)


class PeriodDiscriminator(nn.Module):
    """Sub-discriminator of the MPD looking at samples ``period`` apart.

    The waveform is reflect-padded to a multiple of the period and folded to (B, 1, L / p, p);
    five (5, 1) convolutions with stride (3, 1) except the last (1 -> 32 -> 128 -> 512 -> 1024 ->
    1024), then ``conv_post`` 1024 -> 1 with kernel (3, 1); all weight-normalised.
    """

    def __init__(self, period: int, width: float = 1.0) -> None:
        super().__init__()
        self.period = period
        channels = [1] + [_scaled(c, width) for c in (32, 128, 512, 1024, 1024)]
        strides = (3, 3, 3, 3, 1)
        self.convs = nn.ModuleList(
            WNConv2d(c_in, c_out, (5, 1), (stride, 1), padding=(2, 0))
            for c_in, c_out, stride in zip(channels[:-1], channels[1:], strides, strict=True)
        )
        self.conv_post = WNConv2d(channels[-1], 1, (3, 1), 1, padding=(1, 0))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 1, L) -> scores (B, L' * p) and the feature maps (B, C, L', p)."""
        batch, channels, length = wav.shape
        if length % self.period:
            wav = F.pad(wav, (0, self.period - length % self.period), mode="reflect")
            length = wav.shape[-1]
        x = wav.view(batch, channels, length // self.period, self.period)  # (B, 1, L / p, p)
        return _conv_stack(x, self.convs, self.conv_post)


def _conv_stack(
    x: torch.Tensor, convs: nn.ModuleList, conv_post: nn.Module
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Convs with leaky ReLU, then the score conv; returns flattened scores and every feature map."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return torch.flatten(x, 1, -1), features


class MultiPeriodDiscriminator(nn.Module):
    """MPD: one :class:`PeriodDiscriminator` per period in ``MPD_PERIODS`` (keys ``discriminators.i``)."""

    def __init__(self, periods: tuple[int, ...] = MPD_PERIODS, width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)

    def forward(self, wav: torch.Tensor, wav_generated: torch.Tensor) -> DiscriminatorOutput:
        """Score real ``wav`` and ``wav_generated``, both (B, 1, L)."""
        return _score_pairs((d, wav, wav_generated) for d in self.discriminators)


class ScaleDiscriminator(nn.Module):
    """Sub-discriminator of the MSD: eight 1-D convolutions on the (pooled) waveform.

    Conv1d 1 -> 128 k15; 128 -> 128 k41 s2 g4; 128 -> 256 k41 s2 g16; 256 -> 512 k41 s4 g16;
    512 -> 1024 k41 s4 g16; 1024 -> 1024 k41 g16; 1024 -> 1024 k5; ``conv_post`` 1024 -> 1 k3.
    Weight norm, or spectral norm for the first scale.
    """

    def __init__(self, use_spectral_norm: bool = False, width: float = 1.0) -> None:
        super().__init__()
        c128, c256, c512, c1024 = (_scaled(c, width) for c in (128, 256, 512, 1024))
        layers = [
            (1, c128, 15, 1, 1, 7),
            (c128, c128, 41, 2, 4, 20),
            (c128, c256, 41, 2, 16, 20),
            (c256, c512, 41, 4, 16, 20),
            (c512, c1024, 41, 4, 16, 20),
            (c1024, c1024, 41, 1, 16, 20),
            (c1024, c1024, 5, 1, 1, 2),
        ]
        if use_spectral_norm:
            self.convs = nn.ModuleList(
                spectral_norm(nn.Conv1d(c_in, c_out, k, s, groups=g, padding=p))
                for c_in, c_out, k, s, g, p in layers
            )
            self.conv_post = spectral_norm(nn.Conv1d(c1024, 1, 3, 1, padding=1))
        else:
            self.convs = nn.ModuleList(
                WNConv1d(c_in, c_out, k, s, groups=g, padding=p) for c_in, c_out, k, s, g, p in layers
            )
            self.conv_post = WNConv1d(c1024, 1, 3, 1, padding=1)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 1, L) -> scores (B, L') and the feature maps (B, C, L')."""
        return _conv_stack(wav, self.convs, self.conv_post)


class MultiScaleDiscriminator(nn.Module):
    """MSD: three :class:`ScaleDiscriminator` on the raw waveform, then after one and two
    ``AvgPool1d(4, 2, padding=2)`` (keys ``discriminators.i``, ``meanpools.i`` hold no weights)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [
                ScaleDiscriminator(use_spectral_norm=True, width=width),
                ScaleDiscriminator(width=width),
                ScaleDiscriminator(width=width),
            ]
        )
        self.meanpools = nn.ModuleList([nn.AvgPool1d(4, 2, padding=2), nn.AvgPool1d(4, 2, padding=2)])

    def forward(self, wav: torch.Tensor, wav_generated: torch.Tensor) -> DiscriminatorOutput:
        """Score real ``wav`` and ``wav_generated``, both (B, 1, L)."""
        scaled = []
        for i, discriminator in enumerate(self.discriminators):
            if i > 0:
                wav = self.meanpools[i - 1](wav)
                wav_generated = self.meanpools[i - 1](wav_generated)
            scaled.append((discriminator, wav, wav_generated))
        return _score_pairs(scaled)


def _score_pairs(items: Iterable[tuple[nn.Module, torch.Tensor, torch.Tensor]]) -> DiscriminatorOutput:
    """Run each discriminator on its real and generated input; collect scores and feature maps."""
    scores_real, scores_generated, features_real, features_generated = [], [], [], []
    for discriminator, wav, wav_generated in items:
        score, features = discriminator(wav)
        scores_real.append(score)
        features_real.append(features)
        score, features = discriminator(wav_generated)
        scores_generated.append(score)
        features_generated.append(features)
    return scores_real, scores_generated, features_real, features_generated
