"""The vocoder families above 16 kHz through the block engine: offline blocks equal one whole block, and
streaming with the whole input as context and lookahead equals the offline conversion (issue #17)."""

from __future__ import annotations

import pytest
import torch

from knnsvc.encoder import WavLMEncoder
from knnsvc.pipeline import KnnSvc, MatchConfig
from knnsvc.streaming import StreamingConverter
from tests.apps.test_output_rate import tiny_vocoder
from tests.conftest import sung_vowel
from tests.test_pipeline import si_snr_db
from tests.test_streaming import _phrase, full_context, stream_all
from wavlm import load_wavlm

SR = 16000
NO_POST_OPT = MatchConfig(concat_weight=None, optimise_weights=False)
FAMILIES = [("vocos", 24_000), ("harmonic", 24_000), ("vocos", 44_100),
            pytest.param("harmonic", 44_100, marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def encoder(golden_dir) -> WavLMEncoder:
    return WavLMEncoder(load_wavlm(torch.load(golden_dir / "wavlm_tiny.pt", weights_only=True)))


def converter(encoder: WavLMEncoder, kind: str, rate: int, block_seconds: float) -> KnnSvc:
    return KnnSvc(encoder, tiny_vocoder(kind, rate, seed=3), kind, NO_POST_OPT, block_seconds=block_seconds)


@pytest.mark.parametrize(("kind", "rate"), FAMILIES)
def test_blocks_equal_one_whole_block_and_streaming_with_full_context_equals_offline(encoder, kind, rate):
    wav = _phrase()  # 2.9 s: 145 frames
    whole = converter(encoder, kind, rate, block_seconds=0)
    pool = whole.build_pool([sung_vowel(2.0, 185.0, seed=7)])
    result = whole.match(wav, pool)
    expected = whole.vocode(result)
    assert whole.sample_rate == rate and expected.shape == (result.feats.shape[0] * rate // 50,)
    assert expected.abs().max() > 1e-3  # not silence

    blocked = converter(encoder, kind, rate, block_seconds=1.0)  # 50-frame blocks with their margins
    blocked.vocoder = whole.vocoder
    assert si_snr_db(blocked.vocode(result), expected) >= 100.0

    streamer = StreamingConverter(whole, pool, **full_context(wav.numel() / SR))
    out = stream_all(streamer, wav, 4000)
    assert out.shape == expected.shape
    assert si_snr_db(out, expected) >= 60.0
