"""The converter end to end on the golden inputs, with the tiny checkpoints in official formats."""

import math

import pytest
import torch

import knnsvc.pipeline as pipeline_module
from hifigan.generator import VocoderKind, load_generator
from knnsvc.encoder import WavLMEncoder
from knnsvc.pipeline import CHECK_BLOCK, KnnSvc, MatchConfig
from knnsvc.pitch import get_f0_extractor
from knnsvc.runtime import analysis_split, usable_cores
from tests.tolerances import fan_in_terms, network_tolerance
from wavlm import load_wavlm

REFERENCE = MatchConfig()
NO_POST_OPT = MatchConfig(concat_weight=None, optimise_weights=False)


def snr_db(estimate: torch.Tensor, target: torch.Tensor) -> float:
    return float(10 * torch.log10(target.pow(2).sum() / (estimate - target).pow(2).sum()))


@pytest.fixture(scope="module")
def encoder(golden_dir):
    return WavLMEncoder(load_wavlm(torch.load(golden_dir / "wavlm_tiny.pt", weights_only=True)))


def _vocoder(golden_dir, name):
    return load_generator(torch.load(golden_dir / f"vocoder_{name}_tiny.pt", weights_only=True)["generator"])


@pytest.fixture(scope="module")
def harmonic(golden_dir):
    return _vocoder(golden_dir, "harmonic")


@pytest.fixture(scope="module")
def pool(encoder, harmonic, golden):
    return KnnSvc(encoder, harmonic[1], harmonic[0]).build_pool([golden["ref_wav"]], ["ref.wav"])


def test_pool_matches_reference_stages(pool, golden):
    torch.testing.assert_close(pool.feats, golden["ref_feats"], atol=1e-4, rtol=0)
    torch.testing.assert_close(pool.f0_hz, golden["ref_f0"], atol=1e-3, rtol=0)
    torch.testing.assert_close(pool.amps, golden["ref_harmonics"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,config", [("post_opt_0.2", REFERENCE), ("no_post_opt", NO_POST_OPT)])
def test_harmonic_conversion_matches_reference(encoder, harmonic, pool, golden, name, config):
    converter = KnnSvc(encoder, harmonic[1], harmonic[0], config)
    expected = golden["conversions"][name]
    result = converter.match(golden["src_wav"], pool)
    if name == "post_opt_0.2":
        assert torch.equal(result.indices_wavlm, expected["reselect"][0])
        assert torch.equal(result.indices_harm, expected["reselect"][1])
    x_scale, a_scale = float(expected["X"].abs().max()), float(expected["A"].abs().max())
    torch.testing.assert_close(result.feats, expected["X"], rtol=0, atol=1e-3 * x_scale)
    torch.testing.assert_close(result.amps, expected["A"], rtol=0, atol=1e-3 * a_scale)
    wav = converter.vocode(result)
    assert wav.shape == expected["y_harmonic"].shape == (150 * 320,)
    assert snr_db(wav, expected["y_harmonic"]) >= 40.0


def test_sine_conversion_matches_reference(encoder, golden_dir, pool, golden):
    kind, sine = _vocoder(golden_dir, "sine")
    assert kind is VocoderKind.SINE
    wav = KnnSvc(encoder, sine, kind).convert(golden["src_wav"], pool)  # smoothing not applied
    assert snr_db(wav, golden["conversions"]["no_post_opt"]["y_sine"]) >= 40.0


def test_float32_matching_stays_close(encoder, harmonic, pool, golden):
    converter = KnnSvc(encoder, harmonic[1], harmonic[0], MatchConfig(precision="float32"))
    wav = converter.convert(golden["src_wav"], pool)
    assert snr_db(wav, golden["conversions"]["post_opt_0.2"]["y_harmonic"]) >= 20.0


def test_pitch_shift_modes(encoder, harmonic, pool, golden):
    source = KnnSvc(encoder, harmonic[1], harmonic[0]).analyse(golden["src_wav"])
    voiced = source.f0_hz > 0
    for shift, ratio in [(None, 1.0), (12.0, 2.0), (-7.0, 2 ** (-7 / 12))]:
        config = MatchConfig(pitch_shift=shift, concat_weight=None, optimise_weights=False)
        result = KnnSvc(encoder, harmonic[1], harmonic[0], config).match(source, pool)
        torch.testing.assert_close(result.f0_hz[voiced], source.f0_hz[voiced] * ratio, rtol=1e-5, atol=1e-3)
        assert bool((result.f0_hz[~voiced] == 0).all())
        assert result.shift_ratio == pytest.approx(ratio, rel=1e-5)


def test_topk_is_honoured(encoder, harmonic, pool, golden):
    config = MatchConfig(topk=2, concat_weight=None, optimise_weights=False)
    result = KnnSvc(encoder, harmonic[1], harmonic[0], config).match(golden["src_wav"], pool)
    assert result.indices_wavlm.shape == (150, 2) and result.indices_harm.shape == (150, 2)
    torch.testing.assert_close(result.feats, pool.feats[golden["nn32"][:, :2]].mean(1), rtol=1e-5, atol=1e-5)


def test_short_reference_is_rejected(encoder, harmonic, pool, golden):
    converter = KnnSvc(encoder, harmonic[1], harmonic[0])
    short = pool.head(0.5)  # 25 frames < 32 candidates
    with pytest.raises(ValueError, match="reference is too short"):
        converter.match(golden["src_wav"], short)


def test_unvoiced_source_needs_an_explicit_shift(encoder, harmonic, pool):
    noise = 0.1 * torch.randn(16_000, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="source has no voiced frame"):
        KnnSvc(encoder, harmonic[1], harmonic[0]).match(noise, pool)
    config = MatchConfig(pitch_shift=None)
    wav = KnnSvc(encoder, harmonic[1], harmonic[0], config).convert(noise, pool)
    assert wav.shape == (50 * 320,) and bool(torch.isfinite(wav).all())


def test_knnvc_vocoder_averages_the_first_k(encoder, golden_dir, pool, golden):
    kind, generator = load_generator(torch.load(golden_dir / "vocoder_knnvc_tiny.pt", weights_only=True)["generator"])
    assert kind is VocoderKind.KNNVC
    # the tiny kNN-VC vocoder reads 64-dim features: check the matching part with a 64-dim pool
    wide = type(pool)(pool.feats.repeat(1, 2), pool.f0_hz, pool.amps, pool.starts, pool.names)
    converter = KnnSvc(encoder, generator, kind)
    source = converter.analyse(golden["src_wav"])
    source.feats = source.feats.repeat(1, 2)
    result = converter.match(source, wide)
    assert result.amps is None
    torch.testing.assert_close(result.feats, wide.feats[golden["nn32"][:, :4]].mean(1), rtol=1e-5, atol=1e-5)
    assert converter.vocode(result).shape == (150 * 320,)


def test_file_boundaries_are_ignored_by_default_and_respected_on_request(encoder, harmonic, pool, golden):
    split = type(pool)(pool.feats, pool.f0_hz, pool.amps, starts=[0, 375], names=["a.wav", "b.wav"])
    expected = golden["conversions"]["post_opt_0.2"]
    default = KnnSvc(encoder, harmonic[1], harmonic[0]).match(golden["src_wav"], split)
    assert torch.equal(default.indices_wavlm, expected["reselect"][0])  # as the reference: one sequence
    bounded = KnnSvc(encoder, harmonic[1], harmonic[0], MatchConfig(respect_file_boundaries=True))
    wav = bounded.convert(golden["src_wav"], split)
    assert wav.shape == (150 * 320,) and bool(torch.isfinite(wav).all())


def si_snr_db(estimate: torch.Tensor, target: torch.Tensor) -> float:
    estimate, target = estimate.double(), target.double()
    scaled = (estimate @ target) / (target @ target) * target
    return float(10 * torch.log10(scaled.pow(2).sum() / (estimate - scaled).pow(2).sum()))


@pytest.mark.parametrize("kind_name", ["harmonic", pytest.param("sine", marks=pytest.mark.slow)])
def test_blocks_give_the_whole_recording_result(encoder, golden_dir, golden, monkeypatch, kind_name):
    """Blocking changes no result: F0 in blocks with margins, matching in sub-blocks, features
    spilled to disk, the vocoder in overlapping blocks with the phase carried (>= 100 dB SI-SNR)."""
    from knnsvc import frames, matching
    from tests.conftest import sung_vowel

    kind, vocoder = _vocoder(golden_dir, kind_name)
    vowels = [sung_vowel(2.5, f0, seed=i, vibrato_hz=4.0 + i) for i, f0 in enumerate((220.0, 247.0, 196.0))]
    source = torch.cat(vowels + [torch.zeros(4000)] + vowels[:1])  # 10.25 s with a silent gap
    reference = sung_vowel(4.0, 180.0, seed=7)
    whole = KnnSvc(encoder, vocoder, kind, block_seconds=0)
    pool = whole.build_pool([reference])
    expected = whole.convert(source, pool)

    monkeypatch.setattr(matching, "MATCH_BLOCK", 96)
    monkeypatch.setattr(matching, "QUERY_BLOCK", 32)
    monkeypatch.setattr(frames, "SPILL_BYTES", 4096)
    blocked = KnnSvc(encoder, vocoder, kind, block_seconds=2.3)
    analysed = blocked.analyse(source)
    assert isinstance(analysed.feats, frames.FrameStore) and analysed.feats.spilled
    pieces = list(blocked.vocode_blocks(blocked.match(analysed, pool)))
    assert len(pieces) == 5 and sum(p.numel() for p in pieces) == expected.numel() == 512 * 320
    assert si_snr_db(torch.cat(pieces), expected) >= 100.0


# ------------------------------------------------------------------------------ RVC-style controls
def test_index_rate_and_protect_blend_the_source_features(encoder, harmonic, pool, golden):
    source = KnnSvc(encoder, harmonic[1], harmonic[0]).analyse(golden["src_wav"])
    matched = KnnSvc(encoder, harmonic[1], harmonic[0], NO_POST_OPT).match(source, pool).feats
    own = source.feats
    half = KnnSvc(encoder, harmonic[1], harmonic[0],
                  MatchConfig(concat_weight=None, optimise_weights=False, index_rate=0.25)).match(source, pool)
    torch.testing.assert_close(half.feats, (0.25 * matched.double() + 0.75 * own.double()).float(), rtol=0, atol=1e-6)
    only_source = KnnSvc(encoder, harmonic[1], harmonic[0],
                         MatchConfig(concat_weight=None, optimise_weights=False, index_rate=0.0)).match(source, pool)
    assert torch.equal(only_source.feats, own)

    unvoiced = source.f0_hz <= 0
    assert 0 < int(unvoiced.sum()) < source.num_frames
    protected = KnnSvc(encoder, harmonic[1], harmonic[0],
                       MatchConfig(concat_weight=None, optimise_weights=False, protect=0.1)).match(source, pool)
    assert torch.equal(protected.feats[~unvoiced], matched[~unvoiced])
    expected = (0.1 * matched[unvoiced].double() + 0.9 * own[unvoiced].double()).float()
    torch.testing.assert_close(protected.feats[unvoiced], expected, rtol=0, atol=1e-6)
    off = KnnSvc(encoder, harmonic[1], harmonic[0], MatchConfig(concat_weight=None, optimise_weights=False,
                                                                protect=0.5)).match(source, pool)
    assert torch.equal(off.feats, matched)


def test_rms_mix_makes_the_output_envelope_follow_the_source(encoder, harmonic, pool, golden):
    wav = golden["src_wav"].clone()
    wav[wav.numel() // 2 :] *= 0.1  # the second half 20 dB quieter
    level = lambda x: float(x.square().mean().sqrt())  # noqa: E731
    quarter = wav.numel() // 4

    def drop_db(out):
        return 20 * math.log10(level(out[quarter : 2 * quarter - 4000]) / level(out[2 * quarter + 4000 : 3 * quarter]))

    plain = KnnSvc(encoder, harmonic[1], harmonic[0], NO_POST_OPT).convert(wav, pool)
    follow = KnnSvc(encoder, harmonic[1], harmonic[0],
                    MatchConfig(concat_weight=None, optimise_weights=False, rms_mix=1.0)).convert(wav, pool)
    assert follow.shape == plain.shape
    assert abs(drop_db(follow) - 20.0) < 4.0
    assert abs(drop_db(plain) - 20.0) > abs(drop_db(follow) - 20.0)


@pytest.mark.slow
def test_matching_layers_choose_frames_while_the_vocoder_gets_layer_6(encoder, harmonic, golden):
    config = MatchConfig(concat_weight=None, optimise_weights=False, match_layers=[20, 21, 22, 23, 24])
    converter = KnnSvc(encoder, harmonic[1], harmonic[0], config)
    deep_pool = converter.build_pool([golden["ref_wav"]])
    ref_states = encoder.hidden_states(golden["ref_wav"])  # (7, N, D) to layer 6 ...
    deep = WavLMEncoder(encoder.wavlm, layer=24).hidden_states(golden["ref_wav"])
    torch.testing.assert_close(deep_pool.match_feats, deep[20:25].mean(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(deep_pool.feats, ref_states[6], rtol=0, atol=1e-6)

    result = converter.match(golden["src_wav"], deep_pool)
    src_deep = WavLMEncoder(encoder.wavlm, layer=24).hidden_states(golden["src_wav"])[20:25].mean(0)
    from knnsvc.matching import cosine_topk

    expected = cosine_topk(src_deep.double(), deep_pool.match_feats.double(), 32)
    assert torch.equal(result.candidates, expected)
    torch.testing.assert_close(result.feats, deep_pool.feats[expected[:, :4]].mean(1), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="analysed without them"):
        converter.match(golden["src_wav"], KnnSvc(encoder, harmonic[1], harmonic[0]).build_pool([golden["ref_wav"]]))
    assert converter.pool_settings()["match_layers"] == [20, 21, 22, 23, 24]


# ------------------------------------------------------------------------------ what the API refuses
@pytest.mark.parametrize(("bad", "error", "message"), [
    (torch.zeros(0), ValueError, "wav_16k is empty"),
    (torch.zeros(2, 16000), ValueError, r"wav_16k must be a mono waveform of shape \(L,\), got shape \(2, 16000\)"),
    (torch.zeros(300), ValueError, "wav_16k is too short: 300 samples"),
    (torch.zeros(16000, dtype=torch.int16), TypeError, "wav_16k must be a floating-point waveform"),
    ([0.0] * 16000, TypeError, "wav_16k must be a torch.Tensor"),
])
def test_analyse_refuses_what_it_cannot_convert(encoder, harmonic, bad, error, message):
    with pytest.raises(error, match=message):
        KnnSvc(encoder, harmonic[1], harmonic[0]).analyse(bad)


def test_non_finite_samples_are_counted_across_the_check_slices(encoder, harmonic):
    """The non-finite check works `CHECK_BLOCK` samples at a time and still counts every NaN and
    inf of the recording: at both edges of a slice boundary, at the start and at the end."""
    wav = torch.zeros(2 * CHECK_BLOCK + 5)
    where = [0, CHECK_BLOCK - 1, CHECK_BLOCK, 2 * CHECK_BLOCK, 2 * CHECK_BLOCK + 4]
    wav[where] = torch.tensor([float("nan"), float("inf"), float("-inf"), float("nan"), float("inf")])
    converter = KnnSvc(encoder, harmonic[1], harmonic[0])
    with pytest.raises(ValueError, match="the waveform has 5 non-finite samples"):
        converter.analyse(wav)
    with pytest.raises(ValueError, match="the waveform has 1 non-finite samples"):
        converter.analyse(torch.cat([torch.zeros(CHECK_BLOCK), torch.tensor([float("nan")])]))


def test_match_and_convert_name_the_source_argument(encoder, harmonic, pool):
    converter = KnnSvc(encoder, harmonic[1], harmonic[0])
    for call in (converter.match, converter.convert):
        with pytest.raises(ValueError, match=r"source must be a mono waveform of shape \(L,\), got shape \(2, 8000\)"):
            call(torch.zeros(2, 8000), pool)
        with pytest.raises(ValueError, match="source is empty"):
            call(torch.zeros(0), pool)
        with pytest.raises(TypeError, match="source must be a waveform tensor"):
            call("source.wav", pool)
        with pytest.raises(TypeError, match="pool must be a ReferencePool"):
            call(torch.zeros(8000), "pool.pt")


@pytest.mark.parametrize("seconds", [0.001, 0.5, 3601.0, 1e306, float("nan"), float("inf"), -1.0])
def test_block_seconds_outside_the_range_are_refused(encoder, harmonic, seconds):
    with pytest.raises(ValueError, match=r"block_seconds must be 0 \(whole recordings\) or within \[1, 3600\]"):
        KnnSvc(encoder, harmonic[1], harmonic[0], block_seconds=seconds)
    for fine in (0, 1.0, 3600):
        assert KnnSvc(encoder, harmonic[1], harmonic[0], block_seconds=fine).block_seconds == fine


def test_the_pool_records_the_encoder_and_a_pool_of_another_encoder_is_refused(encoder, harmonic, pool, golden):
    import copy

    converter = KnnSvc(encoder, harmonic[1], harmonic[0], NO_POST_OPT)
    assert pool.encoder_id == converter.encoder_id
    other_wavlm = copy.deepcopy(encoder.wavlm)
    with torch.no_grad():
        next(other_wavlm.parameters()).add_(0.01)  # the same architecture and width, other weights
    other = KnnSvc(WavLMEncoder(other_wavlm), harmonic[1], harmonic[0], NO_POST_OPT)
    assert other.encoder_id != converter.encoder_id
    with pytest.raises(ValueError, match=r"the reference pool was built by another encoder \("):
        other.match(golden["src_wav"], pool)
    source = converter.analyse(golden["src_wav"])
    with pytest.raises(ValueError, match="built by another encoder"):
        other.match(source, pool)
    wide = type(pool)(pool.feats.repeat(1, 2), pool.f0_hz, pool.amps, pool.starts, pool.names)
    with pytest.raises(ValueError, match="holds 64-dimensional features, the source's are 32-dimensional"):
        converter.match(source, wide)


def test_ctrl_c_during_analysis_stops_the_f0_thread_at_once(encoder, harmonic, golden):
    """A KeyboardInterrupt in the main thread while F0 runs on the side thread propagates at
    once and tells the extractor to stop (it would otherwise run for half a minute)."""
    import threading
    import time

    seen: dict[str, object] = {}

    def slow_f0(wav_16k, block_seconds=None, *, stop: threading.Event | None = None):
        seen["stop"] = stop
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                seen["stopped"] = True
                raise RuntimeError("F0 extraction stopped")
            time.sleep(0.01)
        return torch.zeros(wav_16k.numel() // 320 + 1)

    def interrupt(stage, done, total):
        raise KeyboardInterrupt

    converter = KnnSvc(encoder, harmonic[1], harmonic[0], f0=slow_f0)  # type: ignore[arg-type]
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        converter.analyse(golden["src_wav"], progress=interrupt)
    assert time.monotonic() - began < 5.0
    assert isinstance(seen["stop"], threading.Event) and seen["stop"].is_set()
    deadline = time.monotonic() + 5.0
    while "stopped" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen.get("stopped") is True


# -- cores shared between WavLM and a CPU-bound F0 -------------------------------------------------


@pytest.mark.parametrize("cores", range(1, 65))
def test_analysis_split_never_asks_for_more_cores_than_there_are(cores):
    threads, f0_blocks = analysis_split(cores)
    assert threads >= 1 and f0_blocks >= 1
    assert threads + f0_blocks <= max(2, cores)
    assert threads >= f0_blocks  # the network gets the odd core


@pytest.mark.parametrize("workers", [1, 2])
def test_analysis_shares_the_cores_with_harvest_and_gives_them_back(encoder, harmonic, golden, monkeypatch,
                                                                    workers):
    """While WavLM encodes beside Harvest, torch runs on its share of the cores and the F0 workers
    take at most theirs; afterwards both have everything again, and the features and F0 are the
    ones computed without sharing."""
    f0 = get_f0_extractor("harvest", workers=workers)
    converter = KnnSvc(encoder, harmonic[1], harmonic[0], f0=f0)
    wav = golden["src_wav"]
    threads_before = torch.get_num_threads()
    seen = []
    original = encoder.chunks

    def recording_chunks(wav_16k):
        for chunk in original(wav_16k):
            seen.append((torch.get_num_threads(), None if f0.pool is None else f0.pool.limit))
            yield chunk

    monkeypatch.setattr(converter.encoder, "chunks", recording_chunks)
    shared = converter.analyse(wav)
    threads, f0_blocks = analysis_split(usable_cores())
    assert seen and seen[0] == (min(threads, threads_before), None if workers == 1 else f0_blocks)
    assert torch.get_num_threads() == threads_before
    assert f0.pool is None or f0.pool.limit is None

    monkeypatch.setattr(pipeline_module, "analysis_split", lambda cores: (threads_before, cores))
    whole = converter.analyse(wav)
    assert torch.equal(shared.f0_hz, whole.f0_hz)
    # another thread count may sum WavLM's products in another order: rounding only
    shared_feats, whole_feats = shared.feats[0 : shared.num_frames], whole.feats[0 : whole.num_frames]
    tolerance = network_tolerance(float(whole_feats.abs().max()), fan_in_terms(encoder))
    assert (shared_feats - whole_feats).abs().max() <= tolerance
