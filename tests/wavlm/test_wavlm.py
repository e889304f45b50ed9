"""WavLM: config parsing, strict loading of the official key layout, golden parity, early exit."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.tolerances import dot_bound
from wavlm import WavLM, WavLMConfig, load_wavlm, ops
from wavlm.config import parse_conv_layers
from wavlm.modules import WeightNormConv1d, relative_position_buckets

GOLDEN = Path(__file__).parents[1] / "golden"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_checkpoint() -> dict:
    return torch.load(GOLDEN / "wavlm_tiny.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint) -> WavLM:
    return load_wavlm(tiny_checkpoint)


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN / "golden_pipeline.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def large_manifest() -> dict:
    return json.loads((GOLDEN / "manifests.json").read_text())["wavlm_large"]


def count_block_calls(model: WavLM) -> tuple[list[int], list]:
    calls = [0]
    handles = [block.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
               for block in model.encoder.layers]
    return calls, handles


def test_config_from_checkpoint_dict_ignores_unknown_keys(tiny_checkpoint):
    cfg = dict(tiny_checkpoint["cfg"], some_future_option=3)
    config = WavLMConfig.from_dict(cfg)
    assert config.encoder_embed_dim == 32
    assert config.encoder_layers == 24
    assert config.mask_prob == 0.65
    assert config.conv_layers == [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2


def test_conv_layer_spec_is_parsed_without_eval():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 2") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_conv_layers("__import__('os').getcwd()")
    with pytest.raises(ValueError, match="channels, kernel, stride"):
        parse_conv_layers("[(512, 10)]")


def test_tiny_checkpoint_loads_strictly(tiny_checkpoint, tiny_model):
    state = tiny_model.state_dict()
    assert len(state) == 486
    assert set(state) == set(tiny_checkpoint["model"])
    assert tiny_model.post_extract_proj is None
    assert not tiny_model.training
    for key, value in tiny_checkpoint["model"].items():
        assert torch.equal(state[key], value), key


def test_golden_hidden_states_all_layers(tiny_model, golden):
    wav = F.pad(golden["src_wav"], (0, 320 - golden["src_wav"].numel() % 320))
    with torch.inference_mode():
        _, hidden = tiny_model.extract_features(wav[None], output_layer=24, ret_layer_results=True)
    hidden = torch.stack(hidden)[:, 0]  # (25, T, D)
    expected = golden["src_hidden_all_layers"]
    assert hidden.shape == expected.shape == (25, 150, 32)
    assert (hidden - expected).abs().max() <= TOLERANCE


def test_final_layer_norm_only_without_output_layer(tiny_model, golden):
    wav = golden["src_wav"][None, :16000]
    with torch.inference_mode():
        full, hidden = tiny_model.extract_features(wav, ret_layer_results=True)
        last = tiny_model.extract_features(wav, output_layer=24)[0]
        normed = tiny_model.encoder.layer_norm(hidden[-1])
    assert len(hidden) == 25
    torch.testing.assert_close(last, hidden[-1])
    torch.testing.assert_close(full, normed)


def test_early_exit_runs_only_the_needed_blocks(tiny_model, golden):
    wav = golden["src_wav"][None, :32000]
    calls, handles = count_block_calls(tiny_model)
    try:
        with torch.inference_mode():
            layer6, hidden = tiny_model.extract_features(wav, output_layer=6, ret_layer_results=True)
            assert calls[0] == 6
            _, all_hidden = tiny_model.extract_features(wav, output_layer=24, ret_layer_results=True)
    finally:
        for handle in handles:
            handle.remove()
    assert len(hidden) == 7
    torch.testing.assert_close(layer6, all_hidden[6], rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden[0], all_hidden[0], rtol=0, atol=0)


def test_frame_count_matches_receptive_field(tiny_model):
    for num_samples in (400, 719, 720, 16000, 48320):
        with torch.inference_mode():
            x = tiny_model(torch.zeros(2, num_samples), output_layer=1)
        assert x.shape == (2, (num_samples - 400) // 320 + 1, 32)


def test_weight_norm_matches_torch_legacy_formula():
    conv = WeightNormConv1d(channels=8, kernel_size=4, groups=2)
    with torch.no_grad():
        conv.weight_g.uniform_(0.5, 2.0)
    expected = torch._weight_norm(conv.weight_v, conv.weight_g, 2)
    torch.testing.assert_close(conv.weight, expected)


def test_relative_position_buckets_are_bidirectional_and_log_spaced():
    buckets = relative_position_buckets(2000, num_buckets=320, max_distance=800)
    row = buckets[1000]  # query at frame 1000, keys at offsets -1000..999
    offsets = torch.arange(2000) - 1000
    assert row[offsets == 0].item() == 0
    assert row[offsets == 5].item() == 160 + 5
    assert row[offsets == -5].item() == 5
    assert row[offsets == 79].item() == 160 + 79
    assert row[offsets == 80].item() == 160 + 80
    assert row[offsets == 999].item() == 319
    assert row[offsets == -1000].item() == 159
    before = row[offsets <= 0].flip(0)  # by increasing distance
    after = row[offsets > 0]
    assert (before.diff() >= 0).all() and (after.diff() >= 0).all()
    assert before.max() < 160 <= after.min()


def test_large_architecture_matches_manifest(large_manifest):
    config = WavLMConfig.from_dict(large_manifest["cfg"])
    with torch.device("meta"):
        model = WavLM(config)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert len(shapes) == 488
    assert shapes == large_manifest["keys"]
    assert sum(p.numel() for p in model.parameters()) == large_manifest["n_params"] == 315_453_120


def test_large_checkpoint_loads_strictly(large_manifest):
    state_dict = {key: torch.empty(shape, device="meta") for key, shape in large_manifest["keys"].items()}
    model = load_wavlm({"cfg": dict(large_manifest["cfg"], dropout=0.1), "model": state_dict})
    assert model.post_extract_proj is not None
    assert model.dim == 1024 and model.num_layers == 24
    assert sum(p.numel() for p in model.parameters()) == 315_453_120


def test_vocoder_checkpoint_is_rejected_clearly():
    with pytest.raises(ValueError, match="not a WavLM checkpoint.*vocoder"):
        load_wavlm({"generator": {"conv_pre.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match="not a WavLM checkpoint"):
        load_wavlm(torch.zeros(3))


def test_mismatching_weights_are_rejected_clearly(tiny_checkpoint):
    state_dict = dict(tiny_checkpoint["model"])
    del state_dict["encoder.layers.3.fc1.weight"]
    with pytest.raises(ValueError, match=r"missing 1 keys.*layers\.3\.fc1\.weight"):
        load_wavlm({"cfg": tiny_checkpoint["cfg"], "model": state_dict})
    state_dict = dict(tiny_checkpoint["model"], **{"encoder.layers.3.fc1.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="do not match its cfg"):
        load_wavlm({"cfg": tiny_checkpoint["cfg"], "model": state_dict})
    with pytest.raises(ValueError, match="extractor_mode"):
        load_wavlm({"cfg": dict(tiny_checkpoint["cfg"], extractor_mode="other"), "model": state_dict})


@pytest.mark.parametrize("layer_norm_first, extractor_mode", [(False, "default"), (True, "default")])
def test_base_style_variants_build_and_run(layer_norm_first, extractor_mode):
    torch.manual_seed(0)
    config = WavLMConfig(extractor_mode=extractor_mode, encoder_layers=2, encoder_embed_dim=16,
                         encoder_ffn_embed_dim=32, encoder_attention_heads=2, layer_norm_first=layer_norm_first,
                         conv_feature_layers="[(8,10,5)] + [(8,3,2)] * 4 + [(8,2,2)] * 2", conv_pos=8,
                         conv_pos_groups=2, relative_position_embedding=True, gru_rel_pos=True)
    model = WavLM(config).eval()
    assert "feature_extractor.conv_layers.0.2.weight" in model.state_dict()
    assert "feature_extractor.conv_layers.1.2.weight" not in model.state_dict()
    with torch.inference_mode():
        x = model(torch.randn(1, 16000) * 0.1)
    assert x.shape == (1, 49, 16) and torch.isfinite(x).all()


def test_fast_cpu_ops_match_reference_ops():
    """Both float32 routes agree with the float64 result within the rounding bound of their sums."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 50, 96, generator=generator)
    weight, bias = torch.randn(80, 96, generator=generator), torch.randn(80, generator=generator)
    conv_weight = torch.randn(40, 96, 3, generator=generator)
    with torch.inference_mode():
        exact = F.linear(x.double(), weight.double(), bias.double())
        bound = dot_bound(F.linear(x.double().abs(), weight.double().abs(), bias.double().abs()), terms=96 + 1)
        for result in (ops.linear(x, weight, bias), F.linear(x, weight, bias)):
            assert ((result.double() - exact).abs() <= bound).all()

        def conv(inp, w, b):  # (B, T, C) channels-last view of F.conv1d
            return F.conv1d(inp.transpose(1, 2), w, b, stride=2).transpose(1, 2)

        exact = conv(x.double(), conv_weight.double(), bias[:40].double())
        bound = dot_bound(conv(x.double().abs(), conv_weight.double().abs(), bias[:40].double().abs()),
                          terms=96 * 3 + 1)
        for result in (ops.conv1d_channels_last(x, conv_weight, bias[:40], stride=2),
                       conv(x, conv_weight, bias[:40])):
            assert ((result.double() - exact).abs() <= bound).all()


def test_results_do_not_depend_on_the_onednn_fast_path(tiny_model, golden, monkeypatch):
    """With or without oneDNN, layer 6 is the reference's (golden tolerance, any CPU)."""
    wav = F.pad(golden["src_wav"], (0, 320 - golden["src_wav"].numel() % 320))[None]
    expected = golden["src_hidden_all_layers"][6]
    with torch.inference_mode():
        fast = tiny_model(wav, output_layer=6)[0]
        monkeypatch.setattr(ops, "ONEDNN_LINEAR", False)
        reference = tiny_model(wav, output_layer=6)[0]
    assert (fast - expected).abs().max() <= TOLERANCE
    assert (reference - expected).abs().max() <= TOLERANCE


def test_gradients_flow_outside_inference_mode(tiny_checkpoint):
    model = load_wavlm(tiny_checkpoint)
    x = model(torch.randn(1, 4000) * 0.1, output_layer=3)
    x.square().mean().backward()
    assert model.encoder.layers[0].self_attn.relative_attention_bias.weight.grad.abs().sum() > 0
    assert model.encoder.layers[2].self_attn.grep_a.grad is not None
    assert model.encoder.layers[5].fc1.weight.grad is None


def test_front_end_then_the_rest_is_extract_features(tiny_model):
    """`front_end` + `encode_front_end` is `extract_features` (the split the streaming cache uses);
    the front end's frames are 320 samples apart and read 400 each."""
    wav = torch.randn(2, 5000) * 0.1
    with torch.inference_mode():
        x, states = tiny_model.extract_features(wav, output_layer=3, ret_layer_results=True)
        y, split_states = tiny_model.encode_front_end(tiny_model.front_end(wav), output_layer=3,
                                                      ret_layer_results=True)
    assert torch.equal(x, y) and all(torch.equal(a, b) for a, b in zip(states, split_states, strict=True))
    assert (tiny_model.frame_hop, tiny_model.frame_samples) == (320, 400)


def test_a_layer_norm_front_end_is_frame_local(tiny_model):
    """In layer_norm mode (WavLM-Large, the tiny model) a front-end frame depends only on its 400
    samples: frames computed from any stretch of audio that holds them agree. The default mode's
    group norm spans the whole input, so it is not frame-local."""
    assert tiny_model.frame_local_front_end
    wav = torch.randn(1, 8000) * 0.1
    with torch.inference_mode():
        whole = tiny_model.front_end(wav)  # 24 frames
        part = tiny_model.front_end(wav[:, 320 * 5 : 320 * 13 + 80])  # frames 5..12
        changed = wav.clone()
        changed[:, 320 * 13 + 80 :] = 0.0  # after frame 12's last sample
        other = tiny_model.front_end(changed)
    torch.testing.assert_close(part[0], whole[0, 5:13], rtol=0, atol=1e-5)
    torch.testing.assert_close(other[0, :13], whole[0, :13], rtol=0, atol=1e-5)
    config = WavLMConfig(extractor_mode="default", encoder_layers=1, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                         encoder_attention_heads=2, conv_feature_layers="[(8,10,5)] + [(8,3,2)] * 4 + [(8,2,2)] * 2",
                         conv_pos=8, conv_pos_groups=2)
    assert not WavLM(config).frame_local_front_end


def test_an_encoder_window_with_reused_front_end_frames_is_the_plain_encoding(tiny_model):
    """`WavLMEncoder.encode_window` with the first frames taken from an earlier window gives
    `forward`'s features (and `chunks_with_matching`'s), reading only the other samples."""
    from knnsvc.encoder import WavLMEncoder

    encoder = WavLMEncoder(tiny_model, layer=4)
    wav = torch.randn(9000) * 0.1  # 28 frames, the last one's samples end in the padding
    with torch.inference_mode():
        earlier = encoder.encode_window(wav[: 320 * 20 + 100])[0]  # frames 0..19 (19 needs samples to 6480)
        front, feats, _ = encoder.encode_window(wav, earlier[:19])
        _, with_keys, keys = encoder.encode_window(wav, earlier[:19], match_layers=[2, 3])
        all_of_it = encoder.encode_window(wav, front)  # every frame given: no front end at all
    torch.testing.assert_close(feats, encoder(wav), rtol=0, atol=1e-5)
    [(expected, expected_keys)] = list(encoder.chunks_with_matching(wav, [2, 3]))
    torch.testing.assert_close(with_keys, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(keys, expected_keys, rtol=0, atol=1e-5)
    torch.testing.assert_close(all_of_it[1], feats, rtol=0, atol=0)
    with pytest.raises(ValueError, match="front_prefix holds 29 frames, the window has 28"):
        encoder.encode_window(wav, torch.cat([front, front[:1]]))
    with pytest.raises(ValueError, match="one chunk"):
        encoder.encode_window(torch.zeros(320))


def test_weight_norm_is_folded_once_without_autograd_and_follows_new_weights():
    """Inference reuses the folded positional-conv weight (the same values as the formula), in
    inference mode and plain no_grad alike; loading other weights or training sees the new ones."""
    torch.manual_seed(1)
    conv = WeightNormConv1d(channels=8, kernel_size=4, groups=2)
    x = torch.randn(1, 8, 20)
    with torch.inference_mode():
        first = conv(x)
        assert conv._current_weight() is conv._current_weight()  # computed once
    with torch.no_grad():
        assert torch.equal(conv(x), first)
        assert torch.equal(first, F.conv1d(x, conv.weight, conv.bias, padding=2, groups=2))
        state = {key: value * (2.0 if key == "weight_g" else 1.0) for key, value in conv.state_dict().items()}
        conv.load_state_dict(state)  # in place: the fold is redone
        doubled = conv(x)
    torch.testing.assert_close(doubled - conv.bias[:, None], 2 * (first - conv.bias[:, None]))
    out = conv(x)  # autograd on: computed from the parameters, so gradients reach them
    out.sum().backward()
    assert conv.weight_g.grad is not None and conv.weight_v.grad is not None
