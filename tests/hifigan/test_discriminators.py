"""Discriminators, GAN/mel losses and the log-mel front end (spec §9.5, §10.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hifigan.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from hifigan.losses import (
    FEATURE_MATCHING_WEIGHT,
    MEL_WEIGHT,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1,
    mel_loss,
)
from hifigan.mel import LogMelSpectrogram, MelConfig, hz_to_mel_slaney, mel_filterbank, mel_to_hz_slaney
from hifigan.modules import fold_weight_norm
from tests.tolerances import fan_in_terms, network_tolerance


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_official_parameter_counts_and_keys():
    mpd, msd = MultiPeriodDiscriminator(), MultiScaleDiscriminator()
    assert n_params(mpd) == 41_105_770
    assert n_params(msd) == 29_618_821
    mpd_keys, msd_keys = mpd.state_dict().keys(), msd.state_dict().keys()
    assert (
        "discriminators.4.convs.0.weight_g" in mpd_keys and "discriminators.4.conv_post.weight_v" in mpd_keys
    )
    assert mpd.state_dict()["discriminators.0.convs.1.weight_v"].shape == (128, 32, 5, 1)
    assert {
        "discriminators.0.convs.0.weight_orig",
        "discriminators.0.convs.0.weight_u",
        "discriminators.0.convs.0.weight_v",
    } <= msd_keys  # spectral norm on the first scale
    assert "discriminators.1.convs.6.weight_g" in msd_keys and "meanpools.0.weight" not in msd_keys
    # a state dict in the official layout loads strictly into a fresh model
    MultiPeriodDiscriminator().load_state_dict(mpd.state_dict(), strict=True)
    MultiScaleDiscriminator().load_state_dict(msd.state_dict(), strict=True)


def test_outputs_and_feature_maps():
    torch.manual_seed(0)
    mpd, msd = MultiPeriodDiscriminator(width=0.125), MultiScaleDiscriminator(width=0.125)
    wav, fake = torch.randn(2, 1, 3200).clamp(-1, 1), torch.randn(2, 1, 3200).clamp(-1, 1)
    scores_real, scores_fake, maps_real, maps_fake = mpd(wav, fake)
    assert len(scores_real) == len(scores_fake) == 5
    assert [len(m) for m in maps_real] == [6] * 5  # five convs + conv_post
    for period, maps in zip((2, 3, 5, 7, 11), maps_real, strict=True):
        assert maps[0].shape[-1] == period and maps[0].shape[0] == 2
    scores_real, _, maps_real, _ = msd(wav, fake)
    assert [s.shape[0] for s in scores_real] == [2, 2, 2] and [len(m) for m in maps_real] == [8] * 3
    assert maps_real[1][0].shape[-1] == 1601 and maps_real[2][0].shape[-1] == 801  # one and two mean pools
    # an odd length is reflect-padded to a multiple of every period
    assert len(mpd(wav[..., :3199], fake[..., :3199])[0]) == 5
    # weight norm folds without changing the output
    before = mpd(wav, fake)[0][0]
    fold_weight_norm(mpd)
    tolerance = network_tolerance(float(before.detach().abs().max()), fan_in_terms(mpd))
    torch.testing.assert_close(mpd(wav, fake)[0][0], before, rtol=0, atol=tolerance)


def test_lsgan_and_feature_matching_losses():
    ones, zeros = [torch.ones(2, 5), torch.ones(3)], [torch.zeros(2, 5), torch.zeros(3)]
    total, real_terms, fake_terms = discriminator_loss(ones, zeros)
    assert float(total) == 0.0 and len(real_terms) == len(fake_terms) == 2
    total, _, _ = discriminator_loss(zeros, ones)  # each term 1, two discriminators x (real + fake)
    assert float(total) == pytest.approx(4.0)
    adv, terms = generator_adversarial_loss([torch.full((4,), 0.5), torch.zeros(2)])
    assert float(adv) == pytest.approx(0.25 + 1.0) and len(terms) == 2

    real = [[torch.zeros(2, 3), torch.ones(4)], [torch.zeros(5)]]
    fake = [[torch.ones(2, 3), torch.ones(4)], [torch.full((5,), 2.0)]]
    assert float(feature_matching_loss(real, fake)) == pytest.approx(FEATURE_MATCHING_WEIGHT * (1 + 0 + 2))
    fake[0][0].requires_grad_(True)
    real[0][0].requires_grad_(True)
    feature_matching_loss(real, fake).backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None

    mel_a, mel_b = torch.zeros(1, 80, 22), torch.full((1, 80, 22), 0.5)
    assert float(mel_l1(mel_a, mel_b)) == pytest.approx(0.5)
    assert float(mel_loss(mel_a, mel_b)) == pytest.approx(MEL_WEIGHT * 0.5)


def test_slaney_mel_scale():
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)
    assert hz_to_mel_slaney(200.0) == pytest.approx(3.0)
    assert hz_to_mel_slaney(8000.0) == pytest.approx(15.0 + 27.0 * math.log(8.0) / math.log(6.4))
    freqs = np.array([0.0, 440.0, 999.0, 1000.0, 3000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz_slaney(hz_to_mel_slaney(freqs)), freqs, atol=1e-9)


def test_mel_filterbank_is_slaney_normalised():
    bank = mel_filterbank(MelConfig())
    assert bank.shape == (513, 80)
    assert (bank >= 0).all() and (bank.sum(axis=0) > 0).all()
    # each triangle has unit area over frequency in Hz; summed over bins 15.625 Hz apart the
    # narrow low bands deviate by a few percent
    areas = bank.sum(axis=0) * 16000 / 1024
    np.testing.assert_allclose(areas, 1.0, rtol=0.05)
    np.testing.assert_allclose(areas[40:], 1.0, rtol=0.015)
    # band centres increase and the last band ends at 8 kHz
    assert (np.diff(bank.argmax(axis=0)) >= 0).all()
    assert bank[-1, -1] == 0.0


def test_log_mel_frames_and_peak():
    log_mel = LogMelSpectrogram()
    assert log_mel.num_frames(7040) == 22
    t = torch.arange(7040) / 16000
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * t)
    mel = log_mel(tone)
    assert mel.shape == (80, 22) and mel.dtype == torch.float32
    centres_hz = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(0.0), hz_to_mel_slaney(8000.0), 82))[1:-1]
    assert int(mel[:, 11].argmax()) == int(np.abs(centres_hz - 1000.0).argmin())
    silence = log_mel(torch.zeros(2, 7040))
    assert silence.shape == (2, 80, 22) and torch.all(silence == math.log(1e-5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert log_mel(tone).dtype == torch.float32
