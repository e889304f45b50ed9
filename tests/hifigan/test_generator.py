"""HiFi-GAN generators: golden parity, official key layout, strict loading, weight-norm folding."""

import copy
import json
from pathlib import Path

import pytest
import torch

import hifigan.generator as generator_module
from hifigan import modules
from hifigan.config import HiFiGANConfig
from hifigan.generator import (
    HarmonicGenerator,
    KnnVcGenerator,
    SineGenerator,
    VocoderKind,
    build_generator,
    config_from_state_dict,
    detect_kind,
    load_generator,
)
from knnsvc.config import HOP_LENGTH, N_HARMONICS
from tests.tolerances import fan_in_terms, network_tolerance

GOLDEN = Path(__file__).parents[1] / "golden"
TOL = 1e-4
KINDS = [VocoderKind.HARMONIC, VocoderKind.SINE, VocoderKind.KNNVC]
MANIFEST_KEY = {kind: f"vocoder_{kind.value}" for kind in KINDS}
N_PARAMS = {VocoderKind.HARMONIC: 22_863_744, VocoderKind.SINE: 17_747_656, VocoderKind.KNNVC: 16_533_506}
TINY_CONFIG = {
    VocoderKind.HARMONIC: "vocoder_tiny_config.json",
    VocoderKind.SINE: "vocoder_tiny_config.json",
    VocoderKind.KNNVC: "vocoder_knnvc_tiny_config.json",
}


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN / "golden_pipeline.pt", weights_only=True)


@pytest.fixture(scope="module")
def manifests() -> dict:
    return json.loads((GOLDEN / "manifests.json").read_text())


@pytest.fixture(scope="module")
def tiny_state_dicts() -> dict:
    return {
        kind: torch.load(GOLDEN / f"vocoder_{kind.value}_tiny.pt", weights_only=True)["generator"] for kind in KINDS
    }


@pytest.fixture(scope="module")
def tiny(tiny_state_dicts) -> dict:
    """Tiny generators loaded (without their JSON) from the golden checkpoints."""
    models = {}
    for kind, state_dict in tiny_state_dicts.items():
        loaded_kind, model = load_generator(state_dict)
        assert loaded_kind == kind
        models[kind] = model
    return models


@pytest.fixture(scope="module")
def full_size() -> dict:
    """Full-size generators from the official defaults, built once for the module."""
    torch.manual_seed(0)
    return {kind: build_generator(kind) for kind in KINDS}


def _inputs(kind: VocoderKind, dim: int, n_frames: int, batch: int = 1, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, n_frames, dim, generator=generator)
    if kind == VocoderKind.KNNVC:
        return (feats,)
    f0_hz = 100 + 300 * torch.rand(batch, n_frames, generator=generator)
    f0_hz[:, : max(1, n_frames // 4)] = 0
    if kind == VocoderKind.SINE:
        return feats, f0_hz
    return feats, f0_hz, 0.05 * torch.rand(batch, n_frames, N_HARMONICS, generator=generator)


# -- golden parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("conversion", ["post_opt_0.2", "no_post_opt"])
def test_harmonic_generator_matches_golden(golden, tiny, conversion):
    case = golden["conversions"][conversion]
    with torch.no_grad():
        wav = tiny[VocoderKind.HARMONIC](case["X"][None], case["f0_shifted"][None], case["A"][None])
    assert wav.shape == (1, 1, case["y_harmonic"].numel())
    assert (wav[0, 0] - case["y_harmonic"]).abs().max() <= TOL


def test_sine_generator_matches_golden(golden, tiny):
    case = golden["conversions"]["no_post_opt"]
    with torch.no_grad():
        wav = tiny[VocoderKind.SINE](case["X"][None], case["f0_shifted"][None])
    assert (wav[0, 0] - case["y_sine"]).abs().max() <= TOL


def test_knnvc_generator_matches_golden(tiny):
    case = torch.load(GOLDEN / "golden_vocoder_knnvc.pt", weights_only=True)
    with torch.no_grad():
        wav = tiny[VocoderKind.KNNVC](case["x"])
    assert wav.shape == (1, 1, case["y"].numel())
    assert (wav[0, 0] - case["y"]).abs().max() <= TOL


def test_official_f0_shape_is_accepted(golden, tiny):
    case = golden["conversions"]["no_post_opt"]
    with torch.no_grad():
        wav = tiny[VocoderKind.SINE](case["X"][None], case["f0_shifted"][None, :, None])
    assert (wav[0, 0] - case["y_sine"]).abs().max() <= TOL


# -- loading with configs --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_loads_with_its_json_and_inference_agrees(tiny_state_dicts, kind):
    config = HiFiGANConfig.from_json(GOLDEN / TINY_CONFIG[kind])
    loaded_kind, model = load_generator(tiny_state_dicts[kind], config)
    assert loaded_kind == kind and not model.training
    inferred = config_from_state_dict(tiny_state_dicts[kind])
    for key in ("hubert_dim", "hifi_dim", "upsample_initial_channel", "upsample_rates", "upsample_kernel_sizes",
                "resblock_kernel_sizes", "resblock_dilation_sizes"):
        assert getattr(inferred, key) == getattr(config, key), key
    if kind != VocoderKind.KNNVC:
        assert inferred.n_harmonic == config.n_harmonic


def test_config_shape_mismatch_is_one_line_naming_the_key(tiny_state_dicts):
    with pytest.raises(ValueError) as error:
        load_generator(tiny_state_dicts[VocoderKind.HARMONIC], HiFiGANConfig())
    message = str(error.value)
    assert "\n" not in message
    assert "'dec.lin_pre.weight'" in message and "(64, 32)" in message and "(512, 1024)" in message


def test_file_dict_is_unwrapped(tiny_state_dicts):
    kind, _ = load_generator({"generator": tiny_state_dicts[VocoderKind.SINE]})
    assert kind == VocoderKind.SINE


# -- full-size architecture ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_full_size_matches_manifest(full_size, manifests, kind):
    model = full_size[kind]
    expected = manifests[MANIFEST_KEY[kind]]
    shapes = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    assert shapes == expected["keys"]
    assert list(shapes) == list(expected["keys"])  # same order as the official files
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == expected["n_params"] == N_PARAMS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_random_state_dict_of_manifest_shapes_loads_strictly(manifests, kind):
    generator = torch.Generator().manual_seed(1)
    state_dict = {
        key: torch.randn(shape, generator=generator) for key, shape in manifests[MANIFEST_KEY[kind]]["keys"].items()
    }
    assert detect_kind(state_dict) == kind
    loaded_kind, model = load_generator(state_dict)
    assert loaded_kind == kind
    assert model.config.hubert_dim == 1024 and model.config.upsample_initial_channel == 512
    if kind != VocoderKind.KNNVC:
        assert model.config.n_harmonic == 32
    reloaded = model.state_dict()
    assert list(reloaded) == list(state_dict)
    assert all(torch.equal(reloaded[key], state_dict[key]) for key in state_dict)
    load_generator(state_dict, HiFiGANConfig())  # the official config fits as well


def test_full_size_weight_norm_removal_keeps_output(full_size):
    model = full_size[VocoderKind.HARMONIC]
    inputs = _inputs(VocoderKind.HARMONIC, 1024, n_frames=6)
    folded = copy.deepcopy(model).eval()
    folded.remove_weight_norm()
    with torch.no_grad():
        reference = model.eval()(*inputs)
        assert reference.shape == (1, 1, 6 * HOP_LENGTH)
        assert (folded(*inputs) - reference).abs().max() <= network_tolerance(1.0, fan_in_terms(model))
    assert not any(key.endswith(("weight_g", "weight_v")) for key in folded.state_dict())
    assert sum(p.numel() for p in folded.parameters()) < N_PARAMS[VocoderKind.HARMONIC]


# -- tiny-model behaviour --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_weight_norm_removal_keeps_output_and_folded_dict_loads(tiny, kind):
    model = tiny[kind]
    inputs = _inputs(kind, model.config.hubert_dim, n_frames=9)
    folded = copy.deepcopy(model)
    folded.remove_weight_norm()
    folded.remove_weight_norm()  # idempotent
    with torch.no_grad():
        reference = model(*inputs)
        tolerance = network_tolerance(1.0, fan_in_terms(model))
        assert (folded(*inputs) - reference).abs().max() <= tolerance
        loaded_kind, reloaded = load_generator(folded.state_dict())
        assert loaded_kind == kind
        assert (reloaded(*inputs) - reference).abs().max() <= tolerance


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_frames", [1, 3, 22])
def test_output_is_320_samples_per_frame(tiny, kind, n_frames):
    model = tiny[kind]
    with torch.no_grad():
        wav = model(*_inputs(kind, model.config.hubert_dim, n_frames, batch=2))
    assert wav.shape == (2, 1, n_frames * HOP_LENGTH)
    assert wav.abs().max() <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_batch_matches_single_items(tiny, kind):
    model = tiny[kind]
    inputs = _inputs(kind, model.config.hubert_dim, n_frames=8, batch=2, seed=3)
    with torch.no_grad():
        batched = model(*inputs)
        for item in range(2):
            single = model(*(tensor[item : item + 1] for tensor in inputs))
            assert (batched[item] - single[0]).abs().max() <= network_tolerance(1.0, fan_in_terms(model))


@pytest.mark.parametrize("kind", KINDS)
def test_saved_generator_file_round_trips_strictly(tiny, kind, tmp_path):
    model = tiny[kind]
    path = tmp_path / "g_00000001.pt"
    torch.save({"generator": model.state_dict()}, path)
    state_dict = torch.load(path, weights_only=True)["generator"]
    assert any(key.endswith("weight_g") for key in state_dict)
    assert any(key.endswith("weight_v") for key in state_dict)
    assert not any("parametrizations" in key for key in state_dict)
    fresh = build_generator(kind, model.config)
    fresh.load_state_dict(state_dict, strict=True)
    inputs = _inputs(kind, model.config.hubert_dim, n_frames=5)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(*inputs), model(*inputs))


def test_training_step_reaches_weight_norm_parameters(tiny_state_dicts):
    config = HiFiGANConfig.from_json(GOLDEN / TINY_CONFIG[VocoderKind.HARMONIC])
    model = HarmonicGenerator(config)
    model.load_state_dict(tiny_state_dicts[VocoderKind.HARMONIC])
    model(*_inputs(VocoderKind.HARMONIC, config.hubert_dim, n_frames=4)).square().mean().backward()
    assert model.dec.ups[0].weight_g.grad is not None and model.dec.ups[0].weight_v.grad is not None
    assert all(p.grad is not None for p in model.parameters())


def test_wrong_input_shapes_are_rejected(tiny):
    model = tiny[VocoderKind.HARMONIC]
    feats, f0_hz, amps = _inputs(VocoderKind.HARMONIC, model.config.hubert_dim, n_frames=4)
    with pytest.raises(ValueError, match="feats"):
        model(feats[..., :-1], f0_hz, amps)
    with pytest.raises(ValueError, match="f0_hz"):
        model(feats, f0_hz[:, :-1], amps)


# -- architecture detection ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_detect_kind_on_tiny_checkpoints(tiny_state_dicts, kind):
    assert detect_kind(tiny_state_dicts[kind]) == kind


def test_detect_kind_rejects_wavlm_checkpoint():
    checkpoint = torch.load(GOLDEN / "wavlm_tiny.pt", weights_only=True)
    with pytest.raises(ValueError, match="WavLM"):
        detect_kind(checkpoint)
    with pytest.raises(ValueError, match="WavLM"):
        load_generator(checkpoint)


def test_detect_kind_rejects_unrelated_dicts():
    with pytest.raises(ValueError, match="not a HiFi-GAN generator.*'encoder.weight'"):
        detect_kind({"encoder.weight": torch.zeros(3), "encoder.bias": torch.zeros(3)})
    with pytest.raises(ValueError, match="discriminator"):
        detect_kind({"mpd": {}, "msd": {}, "optim_g": {}, "optim_d": {}, "steps": 1, "epoch": 1})
    with pytest.raises(ValueError, match="list"):
        detect_kind([1, 2, 3])


def test_detect_kind_rejects_unknown_branch_widths(tiny_state_dicts):
    state_dict = dict(tiny_state_dicts[VocoderKind.HARMONIC])
    state_dict["dec.downs.0.weight_v"] = torch.zeros(12, 4, 4)
    with pytest.raises(ValueError, match="4 -> 12"):
        detect_kind(state_dict)


# -- config ----------------------------------------------------------------------------------------


def test_default_config_is_the_official_one(manifests):
    official = manifests["vocoder_config_knnsvc"]
    defaults = HiFiGANConfig().to_dict()
    assert {key: official[key] for key in defaults} == defaults


def test_config_json_round_trip_keeps_unknown_keys(manifests, tmp_path):
    official = manifests["vocoder_config_knnsvc"]
    source = tmp_path / "config_v1_wavlm.json"
    source.write_text(json.dumps(official))
    config = HiFiGANConfig.from_json(source)
    assert config.extra["dspgan_upsample_rates"] == [8, 8, 4, 2]
    assert "hubert_dim_old" in config.extra
    assert config.to_dict() == official
    copy_path = tmp_path / "copy.json"
    config.to_json(copy_path)
    assert json.loads(copy_path.read_text()) == official
    assert HiFiGANConfig.from_json(GOLDEN / "vocoder_knnvc_tiny_config.json").hubert_dim == 64


def test_config_rejects_inconsistent_lists():
    with pytest.raises(ValueError, match="upsample"):
        HiFiGANConfig(upsample_rates=[10, 8, 2])


def test_generators_default_to_official_config(full_size):
    assert isinstance(full_size[VocoderKind.KNNVC], KnnVcGenerator)
    assert isinstance(full_size[VocoderKind.SINE], SineGenerator)
    assert all(model.config == HiFiGANConfig() for model in full_size.values())


# -- time tiles on the CPU -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_time_tiles_give_the_untiled_output(tiny, kind, monkeypatch):
    """A long input vocoded in cache-sized time tiles (here 1024-sample tiles, 7 at the last stage)
    is the untiled output: the margins cover every layer's reach, so only float rounding could differ."""
    model = tiny[kind]
    inputs = _inputs(kind, model.config.hubert_dim, n_frames=22, seed=5)
    with torch.no_grad():
        monkeypatch.setattr(modules, "TILE_FLOATS", 10**12)
        untiled = model(*inputs)
        monkeypatch.setattr(modules, "TILE_FLOATS", 1)
        calls = []
        original = modules.multi_receptive_field
        monkeypatch.setattr(generator_module, "multi_receptive_field",
                            lambda blocks, x: calls.append(x.shape[-1]) or original(blocks, x))
        tiled = model(*inputs)
    assert len(calls) > len(model.config.upsample_rates)  # stages ran in several tiles...
    assert max(calls) < 1024 + 2 * 128  # ...each a tile and its margins, never the whole 7040 samples
    assert tiled.shape == untiled.shape
    assert (tiled - untiled).abs().max() <= network_tolerance(1.0, fan_in_terms(model))


def test_time_tiles_keep_a_stage_whole_under_autograd(tiny, monkeypatch):
    """Training (autograd on) runs each stage whole: the same graph as the reference."""
    model = tiny[VocoderKind.HARMONIC]
    monkeypatch.setattr(modules, "TILE_FLOATS", 1)
    lengths = []
    original = modules.multi_receptive_field
    monkeypatch.setattr(generator_module, "multi_receptive_field",
                        lambda blocks, x: lengths.append(x.shape[-1]) or original(blocks, x))
    model(*_inputs(VocoderKind.HARMONIC, model.config.hubert_dim, n_frames=22)).sum().backward()
    assert max(lengths) == 22 * HOP_LENGTH
