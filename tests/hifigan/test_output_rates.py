"""Vocoders above 16 kHz and the fast Vocos-style family: excitation at the output rate, block-exact
vocoding with the declared margin, self-describing generator files, and the FLOP budget."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hifigan.config import HiFiGANConfig
from hifigan.excitation import additive_synth, max_harmonics, running_cycles, sine_excitation, upsample_bicubic
from hifigan.generator import VocoderKind, build_generator, generator_file, load_generator
from hifigan.presets import UPSAMPLING, hifigan_config, hop_for_rate, mel_config
from hifigan.vocos import VocosConfig, vocos_config

RATES = (16_000, 24_000, 44_100)


def tiny_hifigan(sample_rate: int) -> HiFiGANConfig:
    cfg = hifigan_config(sample_rate)
    cfg.upsample_initial_channel, cfg.hubert_dim, cfg.hifi_dim, cfg.n_harmonic = 32, 16, 16, 4
    return cfg


def tiny_vocos(sample_rate: int) -> VocosConfig:
    return vocos_config(sample_rate, input_dim=16, dim=32, intermediate_dim=64, num_layers=3)


def inputs(n_frames: int, n_harmonics: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """feats (1, T, 16), a gliding f0 with an unvoiced gap (1, T), amplitudes (1, T, H)."""
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, n_frames, 16, generator=generator)
    f0_hz = 200 + 60 * torch.sin(torch.arange(n_frames) / 7.0)[None]
    f0_hz[:, n_frames // 3 : n_frames // 3 + 5] = 0
    amps = 0.1 * torch.rand(1, n_frames, n_harmonics, generator=generator)
    return feats, f0_hz, amps


def vocode_in_blocks(vocoder, feats, f0_hz, amps, block: int) -> torch.Tensor:
    """The pipeline's margin logic: each block with `context_frames` extra frames per side, the phase
    carried in samples of the output rate, the middle kept."""
    n_frames, margin, hop = feats.shape[1], vocoder.context_frames, vocoder.samples_per_frame
    pieces = []
    for start in range(0, n_frames, block):
        stop = min(n_frames, start + block)
        lo, hi = max(0, start - margin), min(n_frames, stop + margin)
        cycles = running_cycles(f0_hz[:, :lo], None, vocoder.sample_rate, hop)[:, -1] if lo else None
        wav = vocoder(feats[:, lo:hi], f0_hz[:, lo:hi], amps[:, lo:hi], cycles)
        pieces.append(wav[..., (start - lo) * hop : (stop - lo) * hop])
    return torch.cat(pieces, dim=-1)


def si_snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    reference, estimate = reference.double().flatten(), estimate.double().flatten()
    target = (estimate @ reference) / (reference @ reference) * reference
    noise = estimate - target
    return 10 * math.log10((target @ target).item() / max((noise @ noise).item(), 1e-300))


# Excitation at the output rate ---------------------------------------------------------------------
def test_default_rate_is_the_released_excitation_bit_for_bit():
    _, f0_hz, amps = inputs(12, n_harmonics=49)
    start = torch.tensor([0.3])
    assert torch.equal(additive_synth(f0_hz, amps, start), additive_synth(f0_hz, amps, start, 16_000, 320))
    assert torch.equal(sine_excitation(f0_hz, start), sine_excitation(f0_hz, start, 16_000, 320))
    assert torch.equal(upsample_bicubic(amps[..., 0]), upsample_bicubic(amps[..., 0], 320))


@pytest.mark.parametrize("sample_rate", [24_000, 44_100])
def test_bicubic_upsampling_matches_torch_at_every_hop(sample_rate):
    hop = hop_for_rate(sample_rate)
    values = torch.randn(2, 9)
    expected = torch.nn.functional.interpolate(
        values[:, None, None, :], size=(1, 9 * hop), mode="bicubic", align_corners=False
    )[:, 0, 0]
    torch.testing.assert_close(upsample_bicubic(values, hop), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sample_rate", [24_000, 44_100])
def test_harmonics_above_8khz_sound_at_higher_rates_and_stop_at_nyquist(sample_rate):
    hop = hop_for_rate(sample_rate)
    n_frames = 50
    f0_hz = torch.full((1, n_frames), 1000.0)
    amps = torch.zeros(1, n_frames, 30)
    amps[..., 9] = 1.0  # 10 kHz: above the 16 kHz Nyquist, below 12 and 22.05 kHz
    amps[..., 24] = 1.0  # 25 kHz: above every Nyquist here
    wav = additive_synth(f0_hz, amps, None, sample_rate, hop)[0]
    assert wav.shape == (n_frames * hop,)
    spectrum = torch.fft.rfft(wav).abs()
    hz_per_bin = sample_rate / wav.numel()
    at_10k = spectrum[round(10_000 / hz_per_bin)]
    assert at_10k > 0.4 * wav.numel() / 2  # the 10 kHz harmonic is there at full amplitude
    assert wav.abs().max() < 1.01  # the 25 kHz one is masked (it would alias otherwise)
    assert max_harmonics(sample_rate, 1000.0) == math.ceil(sample_rate / 2000) - 1


@pytest.mark.parametrize("sample_rate", [24_000, 44_100])
def test_excitation_phase_is_carried_in_samples_of_the_output_rate(sample_rate):
    hop = hop_for_rate(sample_rate)
    _, f0_hz, amps = inputs(40)
    whole = additive_synth(f0_hz, amps, None, sample_rate, hop)
    cut = 17
    start = running_cycles(f0_hz[:, :cut], None, sample_rate, hop)[:, -1]
    tail = additive_synth(f0_hz[:, cut - 2 :], amps[:, cut - 2 :], running_cycles(
        f0_hz[:, : cut - 2], None, sample_rate, hop)[:, -1], sample_rate, hop)
    # past the bicubic's two frames of context, the block's samples are the whole signal's
    assert torch.equal(tail[:, 4 * hop :], whole[:, (cut + 2) * hop :])
    assert start.dtype == torch.float64


# Architectures at the output rate -----------------------------------------------------------------
@pytest.mark.parametrize("sample_rate", RATES)
def test_upsampling_factors_multiply_to_the_hop(sample_rate):
    rates, kernels = UPSAMPLING[sample_rate]
    assert math.prod(rates) == hop_for_rate(sample_rate) == sample_rate // 50
    assert all((kernel - rate) % 2 == 0 for rate, kernel in zip(rates, kernels, strict=True))
    mel = mel_config(sample_rate)
    assert (mel.sample_rate, mel.hop_length, mel.fmax_hz) == (sample_rate, sample_rate // 50, sample_rate / 2) or (
        sample_rate == 16_000 and mel.fmax_hz == 8000
    )


@pytest.mark.parametrize("sample_rate", [24_000, 44_100])
@pytest.mark.parametrize("kind", ["harmonic", "sine", "knnvc"])
def test_hifigan_kinds_write_at_the_config_rate(kind, sample_rate):
    generator = build_generator(kind, tiny_hifigan(sample_rate)).eval()
    feats, f0_hz, amps = inputs(6)
    with torch.no_grad():
        wav = generator(feats, f0_hz, amps)
    assert wav.shape == (1, 1, 6 * sample_rate // 50)
    assert (generator.sample_rate, generator.samples_per_frame) == (sample_rate, sample_rate // 50)


def test_a_hop_that_does_not_fit_the_rate_is_refused():
    cfg = HiFiGANConfig(extra={"sampling_rate": 24_000})  # upsampling of 320, not 480
    with pytest.raises(ValueError, match="must be 480"):
        build_generator("harmonic", cfg)


@pytest.mark.parametrize("sample_rate", RATES)
def test_vocos_writes_hop_samples_per_frame(sample_rate):
    generator = build_generator("vocos", tiny_vocos(sample_rate)).eval()
    feats, f0_hz, amps = inputs(7)
    with torch.no_grad():
        wav = generator(feats, f0_hz, amps)
    assert wav.shape == (1, 1, 7 * hop_for_rate(sample_rate))
    assert torch.isfinite(wav).all()
    assert generator.kind is VocoderKind.VOCOS and generator.uses_pitch and generator.uses_harmonics


# Block-exactness with the declared margin ------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, sample_rate",
    [("vocos", 16_000), ("vocos", 24_000), ("vocos", 44_100), ("harmonic", 24_000), ("harmonic", 44_100)],
)
def test_blockwise_vocoding_with_the_declared_margin_equals_the_whole(kind, sample_rate):
    cfg = tiny_vocos(sample_rate) if kind == "vocos" else tiny_hifigan(sample_rate)
    torch.manual_seed(0)
    generator = build_generator(kind, cfg).eval()
    feats, f0_hz, amps = inputs(90)
    with torch.no_grad():
        whole = generator(feats, f0_hz, amps)
        blocks = vocode_in_blocks(generator, feats, f0_hz, amps, block=17)
    assert si_snr_db(whole, blocks) >= 100.0


def test_vocos_margin_is_needed():
    """Without a margin the blocks differ from the whole: the comparison above can fail."""
    torch.manual_seed(0)
    generator = build_generator("vocos", tiny_vocos(24_000)).eval()
    feats, f0_hz, amps = inputs(90)

    class ShortMargin(torch.nn.Module):
        context_frames = 0
        samples_per_frame, sample_rate = generator.samples_per_frame, generator.sample_rate

        def forward(self, *args):
            return generator(*args)

    with torch.no_grad():
        whole = generator(feats, f0_hz, amps)
        blocks = vocode_in_blocks(ShortMargin(), feats, f0_hz, amps, block=17)
    assert si_snr_db(whole, blocks) < 100.0


# Self-describing generator files --------------------------------------------------------------------
def round_trip(values: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(values, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "kind, sample_rate", [("harmonic", 24_000), ("harmonic", 44_100), ("sine", 24_000), ("vocos", 44_100)]
)
def test_new_generator_files_describe_themselves_and_load_strictly(kind, sample_rate):
    cfg = tiny_vocos(sample_rate) if kind == "vocos" else tiny_hifigan(sample_rate)
    generator = build_generator(kind, cfg).eval()
    saved = round_trip(generator_file(generator))
    assert saved["config"]["kind"] == kind
    assert (saved["config"]["sample_rate"], saved["config"]["hop_length"]) == (sample_rate, sample_rate // 50)
    loaded_kind, loaded = load_generator(saved)
    assert loaded_kind is VocoderKind(kind)
    assert (loaded.sample_rate, loaded.samples_per_frame) == (sample_rate, sample_rate // 50)
    feats, f0_hz, amps = inputs(5)
    with torch.no_grad():
        assert torch.equal(loaded(feats, f0_hz, amps), generator(feats, f0_hz, amps))

    extra = dict(saved["generator"])
    extra["unexpected.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys"):
        load_generator({**saved, "generator": extra})
    wrong_rate = {**saved, "config": {**saved["config"], "sample_rate": 48_000}}
    with pytest.raises(ValueError, match="48000 Hz"):
        load_generator(wrong_rate)


def test_16khz_hifigan_files_keep_the_official_layout():
    generator = build_generator("harmonic", tiny_hifigan(16_000))
    assert set(generator_file(generator)) == {"generator"}


def test_a_bare_vocos_state_dict_is_refused_with_a_reason():
    generator = build_generator("vocos", tiny_vocos(24_000))
    with pytest.raises(ValueError, match="'config' entry"):
        load_generator(generator.state_dict())


# Cost -------------------------------------------------------------------------------------------------
def flops_per_second(generator, sample_rate: int) -> float:
    n_frames = 50  # one second
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        generator(torch.zeros(1, n_frames, 1024), torch.full((1, n_frames), 200.0), torch.zeros(1, n_frames, 49))
    return counter.get_total_flops()


@pytest.mark.parametrize("sample_rate", RATES)
def test_vocos_costs_at_most_a_tenth_of_hifigan_v1_flops(sample_rate):
    with torch.device("meta"):
        hifigan = build_generator("harmonic", hifigan_config(sample_rate))
        vocos = build_generator("vocos", vocos_config(sample_rate))
    assert flops_per_second(vocos, sample_rate) <= flops_per_second(hifigan, sample_rate) / 10
