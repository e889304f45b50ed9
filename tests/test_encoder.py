"""WavLMEncoder: kNN-SVC chunking and padding (spec §3.4), golden layer-6 features, early exit."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from knnsvc.encoder import WavLMEncoder
from tests.tolerances import fan_in_terms, network_tolerance
from wavlm import load_wavlm

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_model():
    return load_wavlm(torch.load(GOLDEN / "wavlm_tiny.pt", map_location="cpu", weights_only=True))


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN / "golden_pipeline.pt", map_location="cpu", weights_only=True)


def synthetic_wav(num_samples: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / 16000
    return 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.01 * torch.randn(num_samples, generator=generator)


@pytest.mark.parametrize("num_samples, frames", [
    (0, 0), (320, 0), (321, 1), (48_000, 150), (48_319, 150), (240_000, 750),
    (480_000, 1500), (480_000 + 320, 1500), (480_000 + 321, 1501), (960_512, 3001),
])
def test_num_frames(tiny_model, num_samples, frames):
    assert WavLMEncoder(tiny_model).num_frames(num_samples) == frames


def test_golden_layer6_features(tiny_model, golden):
    encoder = WavLMEncoder(tiny_model, layer=6)
    assert encoder.dim == 32
    for wav_key, feats_key in (("src_wav", "src_feats"), ("ref_wav", "ref_feats")):
        feats = encoder(golden[wav_key])
        expected = golden[feats_key]
        assert feats.dtype == torch.float32
        assert feats.shape == expected.shape == (encoder.num_frames(golden[wav_key].numel()), 32)
        assert (feats - expected).abs().max() <= TOLERANCE


def test_golden_hidden_states_all_layers(tiny_model, golden):
    hidden = WavLMEncoder(tiny_model, layer=24).hidden_states(golden["src_wav"])
    assert hidden.shape == (25, 150, 32)
    assert (hidden - golden["src_hidden_all_layers"]).abs().max() <= TOLERANCE


def test_early_exit_equals_full_run(tiny_model, golden):
    wav = golden["src_wav"]
    calls = [0]
    handles = [block.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
               for block in tiny_model.encoder.layers]
    try:
        feats = WavLMEncoder(tiny_model, layer=6)(wav)
        assert calls[0] == 6
    finally:
        for handle in handles:
            handle.remove()
    hidden6 = WavLMEncoder(tiny_model, layer=6).hidden_states(wav)
    hidden24 = WavLMEncoder(tiny_model, layer=24).hidden_states(wav)
    assert hidden6.shape == (7, 150, 32)
    torch.testing.assert_close(feats, hidden6[6], rtol=0, atol=1e-6)
    torch.testing.assert_close(feats, hidden24[6], rtol=0, atol=1e-6)


def test_chunks_are_encoded_independently_and_tail_dropped(tiny_model):
    encoder = WavLMEncoder(tiny_model, layer=6, chunk_seconds=0.5)  # 8000-sample chunks
    wav = synthetic_wav(3 * 8000 + 5000)  # three full chunks and a 5000-sample tail chunk
    expected = []
    with torch.inference_mode():
        for start in range(0, wav.numel(), 8000):
            chunk = wav[start: start + 8000]
            chunk = F.pad(chunk, (0, 320 - chunk.numel() % 320))
            expected.append(tiny_model(chunk[None], output_layer=6)[0])
    expected = torch.cat(expected)
    feats = encoder(wav)
    assert feats.shape == (3 * 25 + 15, 32) == (encoder.num_frames(wav.numel()), 32)
    torch.testing.assert_close(feats, expected, rtol=0, atol=1e-6)

    with_short_tail = torch.cat([wav[:3 * 8000], synthetic_wav(320, seed=1)])
    torch.testing.assert_close(encoder(with_short_tail), expected[:75], rtol=0, atol=1e-6)
    with_tail = torch.cat([wav[:3 * 8000], synthetic_wav(321, seed=1)])
    assert encoder(with_tail).shape == (76, 32)


def test_batched_chunks_equal_one_by_one(tiny_model):
    wav = synthetic_wav(7 * 8000 + 4321)
    one_by_one = WavLMEncoder(tiny_model, layer=6, chunk_seconds=0.5, max_batch_chunks=1)
    batched = WavLMEncoder(tiny_model, layer=6, chunk_seconds=0.5, max_batch_chunks=3)
    expected = one_by_one(wav)
    assert expected.shape == (7 * 25 + 13, 32)
    states = one_by_one.hidden_states(wav)
    tolerance = network_tolerance(float(states.abs().max()), fan_in_terms(tiny_model))
    torch.testing.assert_close(batched(wav), expected, rtol=0, atol=tolerance)
    torch.testing.assert_close(batched.hidden_states(wav), states, rtol=0, atol=tolerance)


def test_short_input_gives_no_frames(tiny_model):
    encoder = WavLMEncoder(tiny_model, layer=6)
    assert encoder(torch.zeros(320)).shape == (0, 32)
    assert encoder.hidden_states(torch.zeros(100)).shape == (7, 0, 32)


def test_bad_arguments_raise(tiny_model):
    encoder = WavLMEncoder(tiny_model)
    with pytest.raises(ValueError, match="mono waveform"):
        encoder(torch.zeros(1, 16000))
    with pytest.raises(ValueError, match="layer"):
        WavLMEncoder(tiny_model, layer=25)
    with pytest.raises(ValueError, match="chunk_seconds"):
        WavLMEncoder(tiny_model, chunk_seconds=0.01)
