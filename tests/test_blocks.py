"""The per-block method both drivers run: frames chosen block by block add up to the whole-source
choice, the phase and the margins make blocked vocoding the whole-sequence output, the blends and
the pool checks mean what they say."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hifigan.generator import VocoderKind, load_generator
from knnsvc.blocks import (
    ENERGY_BLOCK_FRAMES,
    BlockVocoder,
    FrameSelector,
    PhaseCursor,
    SummingWeights,
    blend_source,
    block_windows,
    check_pool,
    frame_energy,
    target_f0,
)
from knnsvc.config import HOP_LENGTH, MatchConfig
from knnsvc.harmonics import running_cycles
from knnsvc.matching import MATCH_BLOCK, optimise_weights, weighted_sum
from knnsvc.pool import ReferencePool

HARMONIC = VocoderKind.HARMONIC


def _pool(n: int = 300, dim: int = 16, seed: int = 0, encoder_id: str | None = "enc-a") -> ReferencePool:
    gen = torch.Generator().manual_seed(seed)
    walk = torch.cumsum(0.3 * torch.randn(n, dim, generator=gen), dim=0)  # neighbouring rows alike
    f0_hz = 150.0 + 60.0 * torch.rand(n, generator=gen)
    f0_hz[::7] = 0.0
    return ReferencePool(feats=walk.float(), f0_hz=f0_hz, amps=torch.rand(n, 49, generator=gen),
                         starts=[0, n // 2], names=["a", "b"], encoder_id=encoder_id)


def _source(t: int = 90, dim: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.cumsum(0.3 * torch.randn(t, dim, generator=gen), dim=0).float()
    f0_hz = 200.0 + 30.0 * torch.rand(t, generator=gen)
    f0_hz[10:14] = 0.0
    return feats, f0_hz


@pytest.mark.parametrize("config", [MatchConfig(), MatchConfig(respect_file_boundaries=True, topk=3),
                                    MatchConfig(sticky_concat_switch=False, precision="float32")])
def test_frames_chosen_block_by_block_are_the_whole_source_choice(config):
    pool = _pool()
    feats, f0_hz = _source()
    target, _ = target_f0(config, HARMONIC, f0_hz, pool.f0_hz)
    whole = FrameSelector(config, HARMONIC, pool, f0_target_hz=target).select(feats, target)
    for per_block_pitch in (False, True):  # offline (whole-source targets) and streaming (per block)
        selector = FrameSelector(config, HARMONIC, pool, f0_target_hz=None if per_block_pitch else target)
        parts = [selector.select(feats[a:b], target[a:b]) for a, b in ((0, 1), (1, 17), (17, 50), (50, 90))]
        assert torch.equal(torch.cat([p.candidates for p in parts]), whole.candidates)
        assert torch.equal(torch.cat([p.indices_wavlm for p in parts]), whole.indices_wavlm)
        assert torch.equal(torch.cat([p.indices_harm for p in parts]), whole.indices_harm)
    # the reselection did change the plain choice (otherwise this test would prove nothing)
    assert not torch.equal(whole.indices_wavlm, whole.candidates[:, : config.topk])


def test_provisional_frames_leave_the_reselection_state_alone():
    pool, (feats, f0_hz) = _pool(), _source()
    config = MatchConfig()
    plain = FrameSelector(config, HARMONIC, pool)
    interrupted = FrameSelector(config, HARMONIC, pool)
    first = plain.select(feats[:40], f0_hz[:40])
    assert torch.equal(interrupted.select(feats[:40], f0_hz[:40]).indices_wavlm, first.indices_wavlm)
    guess = interrupted.provisional(feats[40:50], f0_hz[40:50])
    assert torch.equal(guess.indices_wavlm, guess.candidates[:, :4])  # no reselection
    assert torch.equal(interrupted.select(feats[40:], f0_hz[40:]).indices_harm,
                       plain.select(feats[40:], f0_hz[40:]).indices_harm)


def test_joined_blocks_keep_the_last_weights_fixed():
    pool = _pool()
    config = MatchConfig(max_opt_iters=300)
    gen = torch.Generator().manual_seed(3)
    indices = torch.randint(0, pool.num_frames, (30, 4), generator=gen)
    weights = SummingWeights(config, HARMONIC, pool, join_blocks=True)
    first = weights.for_features(indices[:12])
    last_rows, last_weights = weights.last["wavlm"]
    assert torch.equal(last_rows, indices[11]) and torch.equal(last_weights, first[-1])
    second = weights.for_features(indices[12:])
    joined = optimise_weights(indices[11:], pool.feats, 0.1, weights.settings, weights.neighbours, torch.float64,
                              fixed_first=first[-1])
    assert torch.equal(second, joined[1:])
    torch.testing.assert_close(second.sum(1), torch.ones(18, dtype=torch.float64))
    # offline: one call over everything, nothing carried
    offline = SummingWeights(config, HARMONIC, pool)
    assert torch.equal(offline.for_features(indices), optimise_weights(indices, pool.feats, 0.1, offline.settings,
                                                                       offline.neighbours, torch.float64))
    assert offline.last == {}


def test_unsmoothed_passes_average_uniformly():
    pool = _pool()
    indices = torch.zeros(5, 4, dtype=torch.long)
    sine = SummingWeights(MatchConfig(), VocoderKind.SINE, pool)
    assert torch.equal(sine.for_features(indices), torch.full((5, 4), 0.25, dtype=torch.float64))
    off = SummingWeights(MatchConfig(optimise_weights=False), HARMONIC, pool)
    assert torch.equal(off.for_harmonics(indices), torch.full((5, 4), 0.25, dtype=torch.float64))


def test_blend_source_follows_index_rate_and_protect():
    matched = torch.ones(4, 3, dtype=torch.float64)
    own = torch.zeros(4, 3)
    f0_hz = torch.tensor([100.0, 0.0, 120.0, 0.0])
    half = blend_source(matched, own, f0_hz, MatchConfig(index_rate=0.5))
    assert torch.equal(half, torch.full((4, 3), 0.5, dtype=torch.float64))
    protected = blend_source(matched, own, f0_hz, MatchConfig(protect=0.1))
    assert protected[:, 0].tolist() == pytest.approx([1.0, 0.1, 1.0, 0.1])
    assert torch.equal(blend_source(matched, own, f0_hz, MatchConfig(index_rate=0.0)), own.double())


def test_the_phase_cursor_gives_the_whole_signals_phase_at_any_block_starts():
    f0_hz = 100.0 + 300.0 * torch.rand(200, generator=torch.Generator().manual_seed(0))
    whole = running_cycles(f0_hz[None])[0]  # (200 * 320,)
    cursor = PhaseCursor(lambda a, b: f0_hz[a:b])
    for frame in (0, 3, 3, 50, 51, 199):
        before = frame * HOP_LENGTH
        expected = torch.zeros(1, dtype=torch.float64) if frame == 0 else whole[before - 1 : before]
        assert torch.equal(cursor.cycles_before(frame), expected)
    with pytest.raises(ValueError, match="forward"):
        cursor.cycles_before(10)


def test_target_f0_waits_for_voicing_only_when_running():
    pool = _pool()
    silent = torch.zeros(20)
    with pytest.raises(ValueError, match="source has no voiced frame"):
        target_f0(MatchConfig(), HARMONIC, silent, pool.f0_hz)
    shifted, semitones = target_f0(MatchConfig(), HARMONIC, silent, pool.f0_hz, running=True)
    assert semitones == 0.0 and torch.equal(shifted, silent)
    with pytest.raises(ValueError, match="reference has no voiced frame"):
        target_f0(MatchConfig(), HARMONIC, torch.full((5,), 200.0), torch.zeros(40), running=True)
    fixed, semitones = target_f0(MatchConfig(pitch_shift=12), HARMONIC, torch.tensor([0.0, 110.0]), pool.f0_hz)
    assert semitones == 12.0 and fixed.tolist() == pytest.approx([0.0, 220.0])
    kept, _ = target_f0(MatchConfig(), VocoderKind.KNNVC, torch.tensor([0.0, 110.0]), pool.f0_hz)
    assert kept.tolist() == [0.0, 110.0]  # the kNN-VC vocoder sings at no given pitch


def test_check_pool_refuses_what_cannot_be_matched():
    pool = _pool()
    check_pool(pool, MatchConfig(), "enc-a", 16)
    check_pool(_pool(encoder_id=None), MatchConfig(), "enc-a", 16)  # unknown encoder: not checked
    with pytest.raises(ValueError, match=r"built by another encoder \(pool: enc-a, converter: enc-b\)"):
        check_pool(pool, MatchConfig(), "enc-b", 16)
    with pytest.raises(ValueError, match="16-dimensional features, the source's are 1024-dimensional"):
        check_pool(pool, MatchConfig(), "enc-a", 1024)
    with pytest.raises(ValueError, match=r"reference is too short: 0.40 s \(20 frames\); at least 0.64 s"):
        check_pool(pool.head(0.4), MatchConfig(), "enc-a", 16)
    with pytest.raises(ValueError, match="analysed without them"):
        check_pool(pool, MatchConfig(match_layers=[20, 21]), "enc-a", 16)
    with pytest.raises(TypeError, match="pool must be a ReferencePool"):
        check_pool("pool.pt", MatchConfig(), "enc-a", 16)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def vocoder(golden_dir):
    return load_generator(torch.load(golden_dir / "vocoder_harmonic_tiny.pt", weights_only=True)["generator"])[1]


@pytest.mark.parametrize("rms_mix", [0.0, 0.8])
def test_blocks_with_their_margins_are_the_whole_sequence(vocoder, rms_mix):
    """Blocked vocoding (overlapping margins, the phase carried, loudness following over its
    window) gives the whole-sequence output."""
    gen = torch.Generator().manual_seed(5)
    n = 160
    feats = torch.randn(n, vocoder.config.hubert_dim, generator=gen)
    f0_hz = 180.0 + 40.0 * torch.rand(n, generator=gen)
    f0_hz[60:70] = 0.0
    amps = torch.rand(n, 49, generator=gen) * 0.1
    energy = frame_energy(torch.randn(n * HOP_LENGTH, generator=gen) * torch.linspace(0.01, 1.0, n * HOP_LENGTH), n)
    whole = BlockVocoder(vocoder, lambda a, b: f0_hz[a:b], rms_mix=rms_mix)(0, feats, f0_hz, amps, energy)
    blocked = BlockVocoder(vocoder, lambda a, b: f0_hz[a:b], rms_mix=rms_mix)
    assert blocked.margin == vocoder.context_frames + (25 if rms_mix else 0)
    pieces = []
    for start, stop, lo, hi in block_windows(n, 37, blocked.margin):
        wav = blocked(lo, feats[lo:hi], f0_hz[lo:hi], amps[lo:hi], energy[lo:hi])
        pieces.append(wav[(start - lo) * HOP_LENGTH : (stop - lo) * HOP_LENGTH])
    out = torch.cat(pieces)
    assert out.shape == whole.shape == (n * HOP_LENGTH,)
    error = (out - whole).double().pow(2).sum() / whole.double().pow(2).sum()
    assert float(error) < 1e-10  # >= 100 dB
    if rms_mix:  # the loudness did move (otherwise the margin would not be tested)
        plain = BlockVocoder(vocoder, lambda a, b: f0_hz[a:b])(0, feats, f0_hz, amps)
        assert not torch.allclose(plain, whole)


@pytest.fixture(scope="module")
def tiny_24k():
    """A tiny random harmonic HiFi-GAN at 24 kHz (480 samples per frame) that reads the tiny WavLM."""
    from hifigan.generator import build_generator
    from hifigan.presets import hifigan_config

    cfg = hifigan_config(24_000)
    cfg.upsample_initial_channel, cfg.hubert_dim, cfg.hifi_dim, cfg.n_harmonic = 32, 32, 16, 4
    torch.manual_seed(0)
    return build_generator(HARMONIC, cfg).eval()


@pytest.mark.slow
def test_a_vocoder_of_another_rate_is_vocoded_and_streamed_in_blocks(golden_dir, tiny_24k):
    """At 24 kHz (480 output samples per frame) the offline blocks, their phase and loudness
    following, and the stream's join work in the vocoder's samples: blocked offline is the whole
    recording's output, full-context streaming is offline."""
    from knnsvc.encoder import WavLMEncoder
    from knnsvc.pipeline import KnnSvc
    from knnsvc.streaming import StreamingConverter
    from knnsvc.synthetic import sung_vowel
    from wavlm import load_wavlm

    encoder = WavLMEncoder(load_wavlm(torch.load(golden_dir / "wavlm_tiny.pt", weights_only=True)))
    config = MatchConfig(concat_weight=None, optimise_weights=False, rms_mix=0.5)
    whole = KnnSvc(encoder, tiny_24k, HARMONIC, config, block_seconds=0)
    pool = whole.build_pool([sung_vowel(2.0, 185.0, seed=7)])
    source = torch.cat([sung_vowel(1.3, 220.0, seed=1), 0.1 * sung_vowel(1.2, 250.0, seed=2)])
    expected = whole.convert(source, pool)
    n_frames = source.numel() // HOP_LENGTH
    assert expected.shape == (n_frames * 480,)
    blocked = KnnSvc(encoder, tiny_24k, HARMONIC, config, block_seconds=1.0).convert(source, pool)

    def error(out: torch.Tensor) -> float:
        return float((out - expected).double().pow(2).sum() / expected.double().pow(2).sum())

    assert error(blocked) < 1e-10
    seconds = source.numel() / 16_000
    streamer = StreamingConverter(whole, pool, block_ms=400, crossfade_ms=100, lookahead_ms=20 * (n_frames + 5),
                                  context_s=seconds + 1, f0_context_s=seconds + 1)
    out = torch.cat([streamer.push(source[i : i + 4000]) for i in range(0, source.numel(), 4000)]
                    + [streamer.flush()])
    assert out.shape == expected.shape
    assert error(out) < 1e-6  # >= 60 dB


@pytest.mark.parametrize("extra_samples", [-HOP_LENGTH * 40 - 123, -5, 0, HOP_LENGTH * 3 + 7])
def test_frame_energies_in_blocks_are_the_whole_waveforms(extra_samples):
    """`frame_energy` works `ENERGY_BLOCK_FRAMES` frames at a time; every frame's energy is the
    whole-waveform computation's to the last bit, missing samples counting 0 and samples beyond
    the last frame ignored."""
    n = 2 * ENERGY_BLOCK_FRAMES + 41
    gen = torch.Generator().manual_seed(11)
    length = n * HOP_LENGTH + extra_samples
    wav = torch.randn(length, generator=gen) * torch.linspace(1e-4, 2.0, length)
    whole = wav.double()[: n * HOP_LENGTH]
    whole = F.pad(whole, (0, n * HOP_LENGTH - whole.numel())).reshape(n, HOP_LENGTH).square().sum(dim=1)
    energy = frame_energy(wav, n)
    assert energy.dtype == torch.float64 and energy.shape == (n,)
    assert torch.equal(energy, whole)
    assert frame_energy(wav, 0).shape == (0,)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_harmonic_amplitudes_in_blocks_are_the_whole_sources(precision):
    """`SummingWeights.amplitudes` sums `MATCH_BLOCK` frames at a time into a float32 table equal,
    frame for frame, to the weighted sum over all frames at once."""
    pool = _pool()
    n = 2 * MATCH_BLOCK + 5
    gen = torch.Generator().manual_seed(12)
    indices = torch.randint(0, pool.num_frames, (n, 4), generator=gen)
    weights = torch.rand(n, 4, generator=gen, dtype=torch.float64)
    weights = weights / weights.sum(dim=1, keepdim=True)
    weigh = SummingWeights(MatchConfig(precision=precision), HARMONIC, pool)
    amps = weigh.amplitudes(indices, weights)
    assert amps.dtype == torch.float32 and amps.shape == (n, pool.amps.shape[1])
    assert torch.equal(amps, weighted_sum(indices, weights, pool.amps, weigh.dtype).float())


class _Opaque(torch.nn.Module):
    """A vocoder that does not take ``keep`` (as a compiled or third-party one): runs whole."""

    def __init__(self, vocoder: torch.nn.Module) -> None:
        super().__init__()
        self.vocoder = vocoder
        self.context_frames, self.samples_per_frame, self.sample_rate = (
            vocoder.context_frames, vocoder.samples_per_frame, vocoder.sample_rate)

    def forward(self, feats, f0_hz, amps, start_cycles):
        return self.vocoder(feats, f0_hz, amps, start_cycles)


def _tiny_generator(kind: VocoderKind) -> torch.nn.Module:
    from hifigan.config import HiFiGANConfig
    from hifigan.generator import build_generator

    cfg = HiFiGANConfig(upsample_initial_channel=32, hubert_dim=16, hifi_dim=16, n_harmonic=4)
    torch.manual_seed(0)
    return build_generator(kind, cfg).eval()


@pytest.mark.parametrize("kind", [HARMONIC, VocoderKind.SINE, VocoderKind.KNNVC])
@pytest.mark.parametrize("rms_mix", [0.0, 0.8])
def test_vocoding_only_the_kept_frames_gives_their_samples(kind, rms_mix):
    """`keep`: the HiFi-GAN generators run their upsampling stages on the kept frames and their
    margins only, and the samples of those frames are the whole window's (>= 100 dB), the
    loudness following included; a vocoder that does not take `keep` gives them too."""
    generator = _tiny_generator(kind)
    assert generator.accepts_keep
    gen = torch.Generator().manual_seed(6)
    n = 40
    feats = torch.randn(n, 16, generator=gen)
    f0_hz = 180.0 + 40.0 * torch.rand(n, generator=gen)
    amps = torch.rand(n, 49, generator=gen) * 0.1
    energy = frame_energy(torch.randn(n * HOP_LENGTH, generator=gen) * torch.linspace(0.01, 1.0, n * HOP_LENGTH), n)
    for vocoder in (generator, _Opaque(generator)):
        whole = BlockVocoder(vocoder, lambda a, b: f0_hz[a:b], rms_mix=rms_mix)(3, feats, f0_hz, amps, energy)
        for lo, hi in ((17, 29), (0, 40), (0, 1), (38, 40), (25, 40)):
            part = BlockVocoder(vocoder, lambda a, b: f0_hz[a:b], rms_mix=rms_mix)(3, feats, f0_hz, amps, energy,
                                                                                 keep=(lo, hi))
            expected = whole[lo * HOP_LENGTH : hi * HOP_LENGTH]
            assert part.shape == expected.shape
            error = (part - expected).double().pow(2).sum() / expected.double().pow(2).sum()
            assert float(error) < 1e-10, (lo, hi)  # >= 100 dB
    with pytest.raises(ValueError, match="keep must be a row range within 0..40"):
        BlockVocoder(generator, lambda a, b: f0_hz[a:b])(0, feats, f0_hz, amps, keep=(30, 41))


def test_kept_frames_are_computed_on_fewer_samples():
    """The upsampling stages, where the generator's work is, run on the kept frames and their
    margins (`keep_margins`), not on the whole window."""
    from hifigan.generator import keep_margins

    generator = _tiny_generator(HARMONIC)
    lengths: list[int] = []
    hooks = [block.register_forward_hook(lambda m, args, out: lengths.append(out.shape[-1]))
             for block in generator.dec.resblocks[::3]]
    feats, f0_hz, amps = torch.randn(1, 32, 16), torch.full((1, 32), 200.0), torch.rand(1, 32, 49) * 0.1
    with torch.inference_mode():
        generator(feats, f0_hz, amps, keep=(18, 30))
    for hook in hooks:
        hook.remove()
    margins = keep_margins(generator.config, excitation=True)
    rates = [10, 80, 160, 320]
    assert lengths == [min(32 * r, 30 * r + m) - max(0, 18 * r - m) for m, r in zip(margins, rates, strict=True)]
    assert all(length < 32 * r for length, r in zip(lengths[1:], rates[1:], strict=True))
