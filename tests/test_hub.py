"""torch.hub entries (hubconf.py): local checkpoints, random weights offline, kNN-VC's API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hubconf
from hifigan.config import HiFiGANConfig
from hifigan.generator import VocoderKind
from knnsvc import hub
from knnsvc.checkpoints import CheckpointError
from knnsvc.knnvc import KnnVc, trim_silence
from knnsvc.pipeline import KnnSvc

REPO = Path(__file__).parents[1]
GOLDEN = REPO / "tests" / "golden"
WAVLM = str(GOLDEN / "wavlm_tiny.pt")
HARMONIC = str(GOLDEN / "vocoder_harmonic_tiny.pt")
KNNVC = str(GOLDEN / "vocoder_knnvc_tiny.pt")
TINY_CONFIG = str(GOLDEN / "vocoder_tiny_config.json")
KNNVC_CONFIG = str(GOLDEN / "vocoder_knnvc_tiny_config.json")
SR = 16000


def vowel(seconds: float, f0_hz: float = 220.0) -> torch.Tensor:
    """Harmonic tone with vibrato (Harvest calls it voiced)."""
    t = np.arange(round(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0_hz * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / SR
    return torch.from_numpy(sum(0.3 / k * np.sin(k * phase) for k in range(1, 8)).astype(np.float32))


@pytest.fixture(scope="module")
def tiny_wavlm_cfg() -> dict:
    return torch.load(WAVLM, weights_only=True)["cfg"]


def test_hubconf_exports_the_entries():
    assert set(hubconf.dependencies) >= {"torch", "soundfile", "soxr", "pyworld"}
    assert "torchaudio" not in hubconf.dependencies
    assert hubconf.knn_svc is hub.knn_svc and hubconf.knn_vc is hub.knn_vc
    assert hubconf.wavlm_large is hub.wavlm_large and hubconf.hifigan_wavlm is hub.hifigan_wavlm


def test_knn_svc_from_local_checkpoints_via_torch_hub(golden):
    converter = torch.hub.load(str(REPO), "knn_svc", source="local", wavlm=WAVLM, vocoder=HARMONIC,
                               vocoder_config=TINY_CONFIG, concat_weight=None, optimise_weights=False)
    assert isinstance(converter, KnnSvc) and converter.kind == VocoderKind.HARMONIC
    assert converter.config.concat_weight is None
    pool = converter.build_pool([golden["ref_wav"][: 2 * SR]])
    out = converter.convert(golden["src_wav"][:SR], pool)
    assert out.shape == (SR // 320 * 320,) and torch.isfinite(out).all()


def test_knn_svc_random_weights_offline_are_seeded(tiny_wavlm_cfg):
    config = json.loads(Path(TINY_CONFIG).read_text())
    first = hub.knn_svc(pretrained=False, wavlm_config=tiny_wavlm_cfg, vocoder_config=config, seed=3)
    second = hub.knn_svc(pretrained=False, wavlm_config=tiny_wavlm_cfg, vocoder_config=config, seed=3)
    assert first.kind == VocoderKind.HARMONIC
    for a, b in zip(first.vocoder.state_dict().values(), second.vocoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sine = hub.knn_svc(pretrained=False, vocoder="sine", wavlm_config=tiny_wavlm_cfg, vocoder_config=config)
    assert sine.kind == VocoderKind.SINE
    assert first.convert(vowel(1.0), first.build_pool([vowel(1.0, 180.0)])).shape == (SR,)


def test_full_size_random_builds_match_the_release_architectures():
    model = hub.wavlm_large(pretrained=False, device="cpu")
    assert sum(p.numel() for p in model.parameters()) == 315_453_120
    del model
    generator, config = hub.hifigan_wavlm(pretrained=False, device="cpu")
    assert isinstance(config, HiFiGANConfig) and config.hubert_dim == 1024
    assert sum(p.numel() for p in generator.parameters()) == 16_523_393  # kNN-VC without weight norm


def test_pretrained_false_refuses_a_checkpoint_path():
    with pytest.raises(ValueError, match="pretrained=False builds random weights"):
        hub.wavlm_large(pretrained=False, checkpoint=WAVLM, device="cpu")
    with pytest.raises(CheckpointError, match="unknown vocoder 'bogus'"):
        hub.knn_svc(pretrained=False, vocoder="bogus", wavlm_config={"encoder_layers": 6,
                    "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
                    "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "conv_pos": 16,
                    "conv_pos_groups": 4})


def test_hifigan_wavlm_entry_loads_a_local_knnvc_file_and_refuses_other_kinds(golden):
    generator, config = torch.hub.load(str(REPO), "hifigan_wavlm", source="local", checkpoint=KNNVC,
                                       config=KNNVC_CONFIG, device="cpu")
    assert config.hubert_dim == 64
    reference = torch.load(GOLDEN / "golden_vocoder_knnvc.pt", weights_only=True)
    with torch.inference_mode():
        y = generator(reference["x"]).reshape(-1)
    assert (y - reference["y"]).abs().max() <= 1e-4
    with pytest.raises(CheckpointError, match="needs a kNN-VC vocoder"):
        hub.hifigan_wavlm(checkpoint=HARMONIC, config=TINY_CONFIG, device="cpu")


@pytest.fixture(scope="module")
def wavlm_64(tiny_wavlm_cfg, tmp_path_factory) -> Path:
    """A tiny WavLM checkpoint in the official format whose width (64) fits the tiny kNN-VC vocoder."""
    cfg = {**tiny_wavlm_cfg, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128}
    model = hub.wavlm_large(pretrained=False, config=cfg, device="cpu", seed=1)
    path = tmp_path_factory.mktemp("wavlm") / "wavlm_64.pt"
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def knn_vc(wavlm_64) -> KnnVc:
    return torch.hub.load(str(REPO), "knn_vc", source="local", wavlm=str(wavlm_64), vocoder=KNNVC,
                          vocoder_config=KNNVC_CONFIG, device="cpu")


def test_knn_vc_api_runs_like_bshall_knn_vc(knn_vc, tmp_path):
    """The README flow of bshall/knn-vc: get_features -> get_matching_set -> match."""
    pyloudnorm = pytest.importorskip("pyloudnorm")
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    voice = (0.4 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    padded = np.concatenate([np.zeros(SR // 2), voice, np.zeros(SR // 2)])
    ref_paths = []
    for i in range(2):
        path = tmp_path / f"ref{i}.flac"
        sf.write(path, padded + 1e-4 * rng.standard_normal(padded.size), SR)
        ref_paths.append(path)
    src = tmp_path / "src.wav"
    sf.write(src, voice[: SR + 123], SR)

    query_seq = knn_vc.get_features(str(src))
    assert query_seq.shape == ((SR + 123 - 400) // 320 + 1, 64)  # whole file, no padding
    matching_set = knn_vc.get_matching_set(ref_paths + [torch.from_numpy(voice)])
    assert matching_set.device.type == "cpu" and matching_set.shape[1] == 64
    untrimmed, trimmed = (knn_vc.get_features(str(ref_paths[0]), vad_trigger_level=level).shape[0] for level in (0, 7))
    assert untrimmed == (3 * SR - 400) // 320 + 1 and trimmed < 0.8 * untrimmed  # silence trimmed

    out_wav = knn_vc.match(query_seq, matching_set, topk=4)
    assert out_wav.dim() == 1 and out_wav.shape[0] == query_seq.shape[0] * 320
    assert abs(pyloudnorm.Meter(SR).integrated_loudness(out_wav.double().numpy()) - -16) < 0.5
    stretched = knn_vc.match(query_seq, matching_set, target_duration=1.5, tgt_loudness_db=None)
    assert stretched.shape[0] == 75 * 320
    assert knn_vc.vocode(query_seq[None]).shape == (1, query_seq.shape[0] * 320)


def test_knn_vc_layer_weights(knn_vc, golden):
    wav = golden["src_wav"][:SR]
    one_hot = torch.zeros(25)
    one_hot[6] = 1
    fast = knn_vc.get_features(wav)
    assert torch.allclose(knn_vc.get_features(wav, weights=one_hot), fast)
    mixed = torch.zeros(25)
    mixed[6] = mixed[7] = 0.5
    assert knn_vc.get_features(wav, weights=mixed).shape == fast.shape


def test_knn_vc_matches_mean_of_topk(knn_vc, monkeypatch):
    matching_set = torch.randn(40, 64)
    query = matching_set[[3, 1, 4]] + 1e-3 * torch.randn(3, 64)
    vocoded = []
    monkeypatch.setattr(knn_vc, "vocode", lambda c: vocoded.append(c) or torch.zeros(1, c.shape[1] * 320))
    knn_vc.match(query, matching_set, topk=1, tgt_loudness_db=None)
    synth_set = torch.randn(40, 64)
    knn_vc.match(query, matching_set, synth_set=synth_set, topk=40, tgt_loudness_db=None)
    assert torch.allclose(vocoded[0][0], matching_set[[3, 1, 4]])
    assert torch.allclose(vocoded[1][0], synth_set.mean(dim=0).expand(3, -1), atol=1e-6)


def test_trim_silence():
    t = np.arange(SR) / SR
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    wav = torch.cat([torch.zeros(SR), tone, torch.zeros(SR)])
    trimmed = trim_silence(wav, 7.0)
    assert SR <= trimmed.numel() <= SR + 2 * 0.05 * SR + 320
    assert torch.equal(trim_silence(wav, 0), wav)
    silence = torch.zeros(SR)
    assert torch.equal(trim_silence(silence, 7.0), silence)
    click = wav.clone()
    click[100] = 1.0  # an isolated click is not activity
    assert trim_silence(click, 7.0).numel() == trimmed.numel()


@pytest.mark.parametrize("topk", [0, -1, 41, 2.0, True])
def test_knn_vc_match_refuses_a_top_k_it_cannot_use(knn_vc, topk):
    """topk=0 used to return an all-NaN waveform; now every unusable top-k is one ValueError naming it."""
    matching_set = torch.randn(40, 64)
    with pytest.raises(ValueError, match=r"topk must be a whole number in 1\.\.40"):
        knn_vc.match(torch.randn(3, 64), matching_set, topk=topk)


@pytest.mark.parametrize("query, matching, synth, message", [
    (torch.zeros(0, 64), torch.randn(40, 64), None, r"query_seq must be a non-empty \(T, D\)"),
    (torch.randn(64), torch.randn(40, 64), None, r"query_seq must be a non-empty \(T, D\)"),
    (torch.randn(3, 64), torch.zeros(0, 64), None, r"matching_set must be a non-empty \(T, D\)"),
    (torch.randn(3, 64), torch.randn(40, 32), None, "matching_set has 32-dim features but query_seq has 64-dim"),
    (torch.randn(3, 64), torch.randn(40, 64), torch.randn(39, 64), "synth_set must have one frame per"),
])
def test_knn_vc_match_refuses_features_it_cannot_use(knn_vc, query, matching, synth, message):
    with pytest.raises(ValueError, match=message):
        knn_vc.match(query, matching, synth_set=synth)


@pytest.mark.parametrize("wav, error, message", [
    (torch.zeros(0), ValueError, r"path must be a non-empty waveform"),
    (torch.zeros(2, 0), ValueError, r"path must be a non-empty waveform"),
    (torch.zeros(1, 2, 16000), ValueError, r"got shape \(1, 2, 16000\)"),
    (torch.zeros(100), ValueError, "path: the recording is too short"),
    (torch.full((16000,), float("nan")), ValueError, r"path: 16000 non-finite samples \(NaN or inf\)"),
    (torch.zeros(16000, dtype=torch.complex64), TypeError, "real-valued waveform"),
    (16000, TypeError, "path must be an audio file path or a waveform tensor"),
])
def test_knn_vc_get_features_refuses_waveforms_it_cannot_use(knn_vc, wav, error, message):
    with pytest.raises(error, match=message):
        knn_vc.get_features(wav)


def test_knn_vc_get_features_averages_channels_and_get_matching_set_wants_a_list(knn_vc):
    stereo = torch.stack([vowel(1.0), vowel(1.0, 330.0)])
    assert torch.allclose(knn_vc.get_features(stereo), knn_vc.get_features(stereo.mean(dim=0)))
    with pytest.raises(TypeError, match="wavs must be a list"):
        knn_vc.get_matching_set(vowel(1.0))


def test_knn_svc_defaults_come_from_the_config_module():
    import inspect

    from knnsvc import config

    parameters = inspect.signature(hub.knn_svc).parameters
    assert parameters["f0"].default == config.DEFAULT_F0
    assert parameters["wavlm"].default == config.DEFAULT_WAVLM
    assert parameters["vocoder"].default == config.DEFAULT_VOCODER
    assert parameters["block_seconds"].default == config.DEFAULT_BLOCK_SECONDS


def test_knn_svc_is_built_by_the_one_converter_builder(tiny_wavlm_cfg, monkeypatch, tmp_path):
    """Loaded or random, the hub's converter comes from checkpoints.build_converter (depth rule and the
    compatibility check included)."""
    from knnsvc import checkpoints

    calls = []
    real = checkpoints.build_converter
    monkeypatch.setattr(checkpoints, "build_converter", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    loaded = hub.knn_svc(wavlm=WAVLM, vocoder=HARMONIC, vocoder_config=TINY_CONFIG, match_layers=[8])
    assert loaded.encoder.wavlm.num_layers == 8
    random = hub.knn_svc(pretrained=False, wavlm_config=tiny_wavlm_cfg,
                         vocoder_config=json.loads(Path(TINY_CONFIG).read_text()), match_layers=[7])
    assert random.encoder.wavlm.num_layers == 7
    assert len(calls) == 2
    with pytest.raises(CheckpointError, match="64-dim features but the WavLM .* produces 32-dim"):
        hub.knn_svc(pretrained=False, vocoder="knnvc", wavlm_config=tiny_wavlm_cfg,
                    vocoder_config=json.loads(Path(KNNVC_CONFIG).read_text()))
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    for pretrained in (True, False):
        with pytest.raises(CheckpointError, match=f"{listed}: not a usable HiFi-GAN config .*got a JSON array"):
            hub.knn_svc(pretrained=pretrained, wavlm=WAVLM if pretrained else "wavlm-large", vocoder=HARMONIC
                        if pretrained else "harmonic", wavlm_config=tiny_wavlm_cfg, vocoder_config=listed)


def test_knn_svc_offline_with_the_tiny_knnvc_vocoder(golden):
    converter = hub.knn_svc(wavlm=WAVLM, vocoder=str(GOLDEN / "vocoder_knnvc_tiny32.pt"),
                            vocoder_config=str(GOLDEN / "vocoder_knnvc_tiny32_config.json"))
    assert converter.kind == VocoderKind.KNNVC
    out = converter.convert(golden["src_wav"][:SR], converter.build_pool([golden["ref_wav"][: 2 * SR]]))
    assert out.shape == (SR // 320 * 320,) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- vocoders above 16 kHz
TINY_VOCOS = {"input_dim": 32, "dim": 32, "intermediate_dim": 64, "num_layers": 2}
TINY_HARMONIC = {"upsample_initial_channel": 32, "hubert_dim": 32, "hifi_dim": 16, "n_harmonic": 4}


def test_random_vocos_is_full_size_at_24k_by_default(tiny_wavlm_cfg):
    """``knn_svc(pretrained=False, vocoder="vocos")``: `vocos_config(24000)`, 480 samples a frame (its
    features 1024 wide, so the tiny WavLM is widened to 1024 here)."""
    from hifigan.vocos import vocos_config

    wide = {**tiny_wavlm_cfg, "encoder_layers": 6, "encoder_embed_dim": 1024}
    converter = hub.knn_svc(pretrained=False, vocoder="vocos", wavlm_config=wide)
    assert converter.kind == VocoderKind.VOCOS and converter.vocoder.config == vocos_config(24_000)
    assert converter.sample_rate == 24_000
    assert converter.convert(vowel(1.0), converter.build_pool([vowel(1.0, 180.0)])).shape == (50 * 480,)


@pytest.mark.parametrize(("vocoder", "vocoder_config", "rate"), [
    ("vocos", TINY_VOCOS, 24_000),
    ("vocos", {**TINY_VOCOS, "sample_rate": 44_100}, 44_100),
    ("harmonic", {**TINY_HARMONIC, "sampling_rate": 24_000}, 24_000),
    ("sine", {**TINY_HARMONIC, "sampling_rate": 44_100}, 44_100),
    ("harmonic", TINY_HARMONIC, 16_000),
])
def test_random_vocoders_at_a_chosen_rate_convert_at_that_rate(tiny_wavlm_cfg, vocoder, vocoder_config, rate):
    """A rate in `vocoder_config` without the upsampling stack (or the Vocos hop) takes that rate's preset."""
    from hifigan.presets import hifigan_config

    first = hub.knn_svc(pretrained=False, vocoder=vocoder, wavlm_config=tiny_wavlm_cfg, vocoder_config=vocoder_config,
                        seed=5)
    hop = rate // 50
    assert (first.kind, first.sample_rate, first.vocoder.samples_per_frame) == (VocoderKind(vocoder), rate, hop)
    if vocoder != "vocos":
        assert first.vocoder.config.upsample_rates == hifigan_config(rate).upsample_rates
    second = hub.knn_svc(pretrained=False, vocoder=vocoder, wavlm_config=tiny_wavlm_cfg,
                         vocoder_config=vocoder_config, seed=5)
    for a, b in zip(first.vocoder.state_dict().values(), second.vocoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    out = first.convert(vowel(1.0), first.build_pool([vowel(1.0, 180.0)]))
    assert out.shape == (50 * hop,) and torch.isfinite(out).all()


def test_a_vocos_config_json_file_builds_a_random_vocos(tiny_wavlm_cfg, tmp_path):
    from hifigan.vocos import VocosConfig, vocos_config

    path = tmp_path / "vocos.json"
    vocos_config(44_100, **TINY_VOCOS).to_json(path)
    converter = hub.knn_svc(pretrained=False, vocoder="vocos", wavlm_config=tiny_wavlm_cfg, vocoder_config=path)
    assert converter.vocoder.config == VocosConfig.from_json(path) and converter.sample_rate == 44_100


@pytest.mark.parametrize(("vocoder", "vocoder_config", "message"), [
    ("harmonic", {"sample_rate": 24_000}, "names its output rate 'sampling_rate', not 'sample_rate'"),
    ("harmonic", {"sampling_rate": 22_050}, "no HiFi-GAN upsampling stack for 22050 Hz"),
    ("vocos", {"sampling_rate": 24_000}, r"not a usable Vocos config \(unknown Vocos config keys \['sampling_rate'\]"),
    ("vocos", {"sample_rate": 11_025}, "not a usable Vocos config .*11025 Hz is not a whole number of samples"),
    ("vocos", HiFiGANConfig(), "a HiFiGANConfig, but the vocos vocoder takes a VocosConfig"),
    ("sine", "vocos-config", "a VocosConfig, but the sine vocoder takes a HiFi-GAN config"),
])
def test_a_vocoder_config_of_the_wrong_kind_or_rate_is_one_line(tiny_wavlm_cfg, vocoder, vocoder_config, message):
    from hifigan.vocos import vocos_config

    if vocoder_config == "vocos-config":
        vocoder_config = vocos_config(24_000)
    with pytest.raises(CheckpointError, match=message) as raised:
        hub.knn_svc(pretrained=False, vocoder=vocoder, wavlm_config=tiny_wavlm_cfg, vocoder_config=vocoder_config)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("kind", "rate"), [("harmonic", 44_100), ("vocos", 24_000)])
def test_a_self_describing_vocoder_file_loads_through_the_hub_at_its_rate(tmp_path, kind, rate):
    """A file saved by training at another rate (or of the Vocos kind) needs no vocoder_config."""
    from hifigan.generator import build_generator, generator_file
    from hifigan.presets import hifigan_config
    from hifigan.vocos import vocos_config

    if kind == "vocos":
        cfg = vocos_config(rate, **TINY_VOCOS)
    else:
        cfg = hifigan_config(rate)
        for name, value in TINY_HARMONIC.items():
            setattr(cfg, name, value)
    torch.manual_seed(0)
    generator = build_generator(kind, cfg)
    path = tmp_path / f"{kind}_{rate}.pt"
    torch.save(generator_file(generator), path)

    converter = torch.hub.load(str(REPO), "knn_svc", source="local", wavlm=WAVLM, vocoder=str(path))
    assert (converter.kind, converter.sample_rate) == (VocoderKind(kind), rate)
    out = converter.convert(vowel(1.0), converter.build_pool([vowel(1.0, 180.0)]))
    assert out.shape == (50 * rate // 50,) and torch.isfinite(out).all()
