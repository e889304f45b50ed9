"""One HiFi-GAN update (spec §9.5): generate, discriminator step, generator step; optimisers; autocast.

Discriminator step: LSGAN on the detached output, MPD + MSD. Generator step: LSGAN + 2 x feature
matching + 45 x log-mel L1. AdamW for both, in the official parameter order.

Every generator is called the same way, ``generator(feats, f0_hz, amps)``, and ignores the inputs
it does not use (``hifigan.generator.Vocoder``), so nothing here depends on the architecture.

Shape letters: B batch, T frames, D feature dim, H harmonics, L samples, M mels.
"""

from __future__ import annotations

import enum
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hifigan.losses import (
    MEL_WEIGHT,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1,
)
from hifigan.mel import LogMelSpectrogram


class AutocastDtype(str, enum.Enum):
    """Reduced precision of the forward passes when autocast is on."""

    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    """Needs a gradient scaler (see :attr:`needs_grad_scaler`)."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.value)

    @property
    def needs_grad_scaler(self) -> bool:
        return self is AutocastDtype.FLOAT16


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` in ``dtype`` on ``device``; no autocast at all when ``dtype`` is None."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def generate(generator: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """Run any generator on a batch: feats (B, T, D), f0_hz (B, T), amps (B, T, H) -> (B, 1, L)."""
    feats = batch["feats"].to(device, non_blocking=True)
    f0_hz = batch["f0_hz"].to(device, non_blocking=True)
    amps = batch["amps"].to(device, non_blocking=True)
    return generator(feats, f0_hz, amps)


@dataclass
class GanStep:
    """One HiFi-GAN update: discriminator step on the detached output, then generator step.

    The models may be DistributedDataParallel wrappers. Losses are float32; forward passes run
    under autocast when ``autocast_dtype`` is set (a gradient scaler belongs with float16).
    """

    generator: nn.Module
    mpd: nn.Module
    msd: nn.Module
    optim_g: torch.optim.Optimizer
    optim_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    log_mel: LogMelSpectrogram
    device: torch.device
    autocast_dtype: torch.dtype | None = None

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Update both networks on ``batch`` (keys as ``VocoderDataset`` items, batched).

        Returns:
            Detached scalar losses keyed by their TensorBoard names.
        """
        wav = batch["wav"].to(self.device, non_blocking=True)[:, None, :]  # (B, 1, L)
        log_mel_real = batch["log_mel"].to(self.device, non_blocking=True)  # (B, M, T)
        with autocast_context(self.device, self.autocast_dtype):
            wav_generated = generate(self.generator, batch, self.device)  # (B, 1, L)
        if wav_generated.shape != wav.shape:
            raise RuntimeError(
                f"generator output {tuple(wav_generated.shape)} does not match the target {tuple(wav.shape)}"
            )

        with autocast_context(self.device, self.autocast_dtype):
            mpd_real, mpd_fake, _, _ = self.mpd(wav, wav_generated.detach())
            msd_real, msd_fake, _, _ = self.msd(wav, wav_generated.detach())
        loss_d = discriminator_loss(mpd_real, mpd_fake)[0] + discriminator_loss(msd_real, msd_fake)[0]
        self.optim_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.optim_d)

        mel_error = mel_l1(log_mel_real, self.log_mel(wav_generated[:, 0]))
        with autocast_context(self.device, self.autocast_dtype):
            _, mpd_fake, mpd_real_maps, mpd_fake_maps = self.mpd(wav, wav_generated)
            _, msd_fake, msd_real_maps, msd_fake_maps = self.msd(wav, wav_generated)
        loss_fm = feature_matching_loss(mpd_real_maps, mpd_fake_maps) + feature_matching_loss(
            msd_real_maps, msd_fake_maps
        )
        loss_adv = generator_adversarial_loss(mpd_fake)[0] + generator_adversarial_loss(msd_fake)[0]
        loss_g = loss_adv + loss_fm + MEL_WEIGHT * mel_error
        self.optim_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.optim_g)
        self.scaler.update()
        return {
            "train/loss_g": loss_g.detach(),
            "train/loss_d": loss_d.detach(),
            "train/mel_l1": mel_error.detach(),
            "train/loss_adv": loss_adv.detach(),
            "train/loss_fm": loss_fm.detach(),
        }


def build_optimizers(
    generator: nn.Module,
    mpd: nn.Module,
    msd: nn.Module,
    *,
    learning_rate: float,
    betas: tuple[float, float],
    weight_decay: float,
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """AdamW for the generator and for MSD + MPD (in the official parameter order)."""
    optim_g = torch.optim.AdamW(generator.parameters(), learning_rate, betas=betas, weight_decay=weight_decay)
    optim_d = torch.optim.AdamW(
        list(msd.parameters()) + list(mpd.parameters()), learning_rate, betas=betas, weight_decay=weight_decay
    )
    return optim_g, optim_d
