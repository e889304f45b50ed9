"""The networks in reduced precision (`network_precision`): WavLM and the vocoder under autocast in
bfloat16 stay close to float32, float32 is the reference path unchanged, and bad names are one line."""

from __future__ import annotations

import pytest
import torch

from hifigan.generator import load_generator
from knnsvc.blocks import BlockVocoder
from knnsvc.encoder import WavLMEncoder
from knnsvc.runtime import NETWORK_PRECISIONS, check_network_precision, network_autocast
from knnsvc.synthetic import sung_vowel
from tests.test_pipeline import si_snr_db
from wavlm import load_wavlm


@pytest.fixture(scope="module")
def models(golden_dir):
    wavlm = load_wavlm(torch.load(golden_dir / "wavlm_tiny.pt", weights_only=True))
    _, vocoder = load_generator(torch.load(golden_dir / "vocoder_harmonic_tiny.pt", weights_only=True))
    vocoder.remove_weight_norm()
    return wavlm, vocoder


def test_wavlm_in_bfloat16_gives_float32_features_close_to_the_reference(models):
    wavlm, _ = models
    wav = sung_vowel(2.0, 220.0, seed=1)
    reference = WavLMEncoder(wavlm)(wav)
    reduced = WavLMEncoder(wavlm, precision="bfloat16")(wav)
    assert reduced.dtype == torch.float32 and reduced.shape == reference.shape
    assert not torch.equal(reduced, reference)  # it really ran in another precision
    assert torch.nn.functional.cosine_similarity(reduced, reference, dim=-1).min() > 0.99
    window = wav[: 16000]
    _, features, _ = WavLMEncoder(wavlm, precision="bfloat16").encode_window(window)
    torch.testing.assert_close(features, WavLMEncoder(wavlm, precision="bfloat16")(window), rtol=0, atol=1e-6)


def test_the_vocoder_in_bfloat16_is_close_to_float32_and_float32_is_unchanged(models):
    wavlm, vocoder = models
    feats = WavLMEncoder(wavlm)(sung_vowel(1.0, 220.0, seed=2))
    frames = feats.shape[0]
    f0_hz = torch.full((frames,), 220.0)
    amps = (0.1 / torch.arange(1, 50)).expand(frames, 49).contiguous()

    def vocode(precision: str | None) -> torch.Tensor:
        options = {} if precision is None else {"precision": precision}
        return BlockVocoder(vocoder, lambda a, b: f0_hz[a:b], **options)(0, feats, f0_hz, amps)

    reference = vocode(None)
    assert torch.equal(vocode("float32"), reference)
    reduced = vocode("bfloat16")
    assert reduced.dtype == torch.float32 and reduced.shape == reference.shape
    assert not torch.equal(reduced, reference)
    assert si_snr_db(reduced, reference) > 30.0  # measured: 46 dB on the tiny golden vocoder


@pytest.mark.parametrize("bad", ["fp16", "bf16", "float64", "", "Float32"])
def test_an_unknown_precision_is_one_line_naming_the_accepted_ones(models, bad):
    wavlm, vocoder = models
    for build in (lambda: check_network_precision(bad), lambda: WavLMEncoder(wavlm, precision=bad),
                  lambda: BlockVocoder(vocoder, lambda a, b: torch.zeros(b - a), precision=bad)):
        with pytest.raises(ValueError, match="network precision must be one of float32, bfloat16, float16") as err:
            build()
        assert "\n" not in str(err.value)
    assert set(NETWORK_PRECISIONS) == {"float32", "bfloat16", "float16"}


def test_autocast_covers_only_the_network_call():
    with network_autocast("cpu", "bfloat16"):
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    with network_autocast("cpu", "float32"):
        assert not torch.is_autocast_enabled("cpu")


def test_the_converter_runs_both_networks_in_the_named_precision(golden_dir):
    from knnsvc.checkpoints import build_converter

    def converter(**options):
        return build_converter(golden_dir / "wavlm_tiny.pt", golden_dir / "vocoder_harmonic_tiny.pt", f0="dio",
                               progress=False, **options)

    reference, reduced = converter(), converter(network_precision="bfloat16")
    assert (reference.network_precision, reduced.network_precision) == ("float32", "bfloat16")
    pool = reference.build_pool([sung_vowel(2.0, 185.0, seed=7)])
    wav = sung_vowel(1.0, 220.0, seed=2)
    expected, out = reference.convert(wav, pool), reduced.convert(wav, pool)
    assert out.shape == expected.shape and not torch.equal(out, expected)
    reduced.network_precision = "float32"  # switched back: the reference output again
    assert torch.equal(reduced.convert(wav, pool), expected)
    with pytest.raises(ValueError, match="network precision must be one of"):
        reduced.network_precision = "half"
    with pytest.raises(ValueError, match="exported graph runs in the precision it was exported in"):
        build_converter(golden_dir / "wavlm_tiny.pt", "vocoder.onnx", network_precision="float16")
