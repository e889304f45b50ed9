"""The ONNX Runtime backend in conversion: exported tiny graphs give the PyTorch conversion of a
real-length sung clip (the same blocks, F0, matching and output), share its pool cache, and every
bad graph or sidecar is refused in one line before anything runs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from knnsvc.checkpoints import CheckpointError, build_converter
from knnsvc.config import HOP_LENGTH, MatchConfig
from knnsvc.onnx_export import export_encoder_file, export_vocoder_file, file_sha256, si_snr_db, sidecar_path
from knnsvc.onnx_runtime import OnnxEncoder
from knnsvc.synthetic import phrases

GOLDEN = Path(__file__).parent / "golden"
WAVLM = GOLDEN / "wavlm_tiny.pt"
HARMONIC = GOLDEN / "vocoder_harmonic_tiny.pt"
SINE = GOLDEN / "vocoder_sine_tiny.pt"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    """The tiny WavLM and harmonic vocoder exported once (no self-check: the tests compare)."""
    folder = tmp_path_factory.mktemp("graphs")
    export_encoder_file(WAVLM, folder / "wavlm.onnx")
    export_vocoder_file(HARMONIC, folder / "vocoder.onnx")
    return folder


@pytest.fixture
def copies(graphs, tmp_path) -> Path:
    """A private copy of the graphs and sidecars, to break."""
    for name in ("wavlm.onnx", "wavlm.onnx.json", "vocoder.onnx", "vocoder.onnx.json"):
        shutil.copy(graphs / name, tmp_path / name)
    return tmp_path


def refusal(wavlm: object, vocoder: object) -> str:
    """The one line `build_converter` refuses these checkpoints with."""
    with pytest.raises(CheckpointError) as err:
        build_converter(wavlm, vocoder, f0="dio")
    message = str(err.value)
    assert "\n" not in message and message
    return message


@pytest.mark.slow
def test_conversion_with_onnx_graphs_equals_pytorch(graphs):
    """A 20 s sung clip against a 30 s reference, vocoded in 5 s blocks: >= 60 dB SI-SNR against the
    PyTorch conversion, and pools of either backend are interchangeable (same encoder id)."""
    source = torch.from_numpy(phrases(20.0, seed=11, low_hz=170.0, high_hz=380.0))
    reference = torch.from_numpy(phrases(30.0, seed=12, low_hz=220.0, high_hz=480.0))
    settings = {"f0": "dio", "block_seconds": 5, "config": MatchConfig()}
    pytorch = build_converter(str(WAVLM), str(HARMONIC), **settings)
    onnx_backed = build_converter(str(graphs / "wavlm.onnx"), str(graphs / "vocoder.onnx"), **settings)
    assert isinstance(onnx_backed.encoder, OnnxEncoder)
    assert onnx_backed.encoder_id == pytorch.encoder_id
    assert onnx_backed.pool_settings() == pytorch.pool_settings()

    pool_pytorch = pytorch.build_pool([reference], ["ref"])
    pool_onnx = onnx_backed.build_pool([reference], ["ref"])
    assert pool_onnx.encoder_id == pool_pytorch.encoder_id
    assert si_snr_db(pool_onnx.feats, pool_pytorch.feats) >= 60

    expected = pytorch.convert(source, pool_pytorch)
    ours = onnx_backed.convert(source, pool_onnx)
    assert ours.shape == expected.shape == (source.numel() // HOP_LENGTH * HOP_LENGTH,)
    assert si_snr_db(ours, expected) >= 60
    # a pool cached with the PyTorch model is accepted by the ONNX converter and gives the same result
    assert si_snr_db(onnx_backed.convert(source, pool_pytorch), expected) >= 60


@pytest.mark.slow
def test_mixed_backends_and_match_layers(graphs):
    """An ONNX encoder with a PyTorch vocoder converts; settings that match on layers the graph lacks
    are one line naming the export option."""
    converter = build_converter(str(graphs / "wavlm.onnx"), str(SINE), f0="dio")
    wav = torch.from_numpy(phrases(2.0, seed=1, low_hz=200.0, high_hz=300.0))
    assert converter.convert(wav, converter.build_pool([wav])).numel() == wav.numel() // HOP_LENGTH * HOP_LENGTH
    with pytest.raises(CheckpointError, match="--match-layers"):
        build_converter(str(graphs / "wavlm.onnx"), str(SINE), f0="dio", config=MatchConfig(match_layers=[8, 9]))


@pytest.mark.slow
def test_truncated_graph_is_refused(copies):
    graph = copies / "vocoder.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    assert "does not match its sidecar" in refusal(str(copies / "wavlm.onnx"), str(graph))


@pytest.mark.slow
def test_foreign_graph_is_refused(copies):
    """An unrelated ONNX graph: without a sidecar, and with one whose hash was made to fit it."""
    foreign = copies / "foreign.onnx"
    node = helper.make_node("Relu", ["x"], ["y"])
    model = helper.make_model(helper.make_graph([node], "relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                              [1, 4])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]))
    onnx.save(model, foreign)
    assert "no sidecar foreign.onnx.json" in refusal(str(foreign), str(copies / "vocoder.onnx"))
    sidecar = json.loads((copies / "wavlm.onnx.json").read_text())
    sidecar["graph_sha256"] = file_sha256(foreign)
    sidecar_path(foreign).write_text(json.dumps(sidecar))
    assert "not the graph that was exported" in refusal(str(foreign), str(copies / "vocoder.onnx"))


@pytest.mark.slow
def test_graph_from_another_checkpoint_than_the_one_named_is_refused(copies, tmp_path):
    """The sidecar names a checkpoint whose file now holds other weights."""
    named = tmp_path / "named.pt"
    shutil.copy(SINE, named)  # other weights than the harmonic vocoder the graph was exported from
    sidecar = json.loads((copies / "vocoder.onnx.json").read_text())
    sidecar["source"]["path"] = str(named)
    (copies / "vocoder.onnx.json").write_text(json.dumps(sidecar))
    message = refusal(str(copies / "wavlm.onnx"), str(copies / "vocoder.onnx"))
    assert f"exported from another checkpoint than {named}" in message


@pytest.mark.slow
def test_missing_broken_or_mismatched_sidecar_is_refused(copies):
    wavlm, vocoder = str(copies / "wavlm.onnx"), str(copies / "vocoder.onnx")
    # the graphs swapped: a vocoder graph where WavLM is needed
    assert "exported vocoder graph, but a WavLM encoder graph is needed" in refusal(vocoder, wavlm)
    assert "exported graph file not found" in refusal(str(copies / "nope.onnx"), vocoder)
    (copies / "vocoder.onnx.json").unlink()
    assert "no sidecar vocoder.onnx.json beside it" in refusal(wavlm, vocoder)
    (copies / "vocoder.onnx.json").write_text("{not json")
    assert "not a readable sidecar" in refusal(wavlm, vocoder)
    (copies / "vocoder.onnx.json").write_text(json.dumps({"format": "knnsvc-onnx", "version": 99}))
    assert "sidecar version 99" in refusal(wavlm, vocoder)


def test_without_onnxruntime_the_line_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    monkeypatch.delitem(sys.modules, "knnsvc.onnx_runtime", raising=False)
    (tmp_path / "wavlm.onnx").write_bytes(b"")
    message = refusal(str(tmp_path / "wavlm.onnx"), str(HARMONIC))
    assert "pip install knnsvc[export]" in message and "onnxruntime" in message


def test_vocoder_config_does_not_apply_to_a_graph(tmp_path):
    (tmp_path / "vocoder.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match="--vocoder-config does not apply"):
        build_converter(str(WAVLM), str(tmp_path / "vocoder.onnx"), GOLDEN / "vocoder_tiny_config.json", f0="dio")


@pytest.mark.slow
def test_graph_with_matching_layers_gives_pytorchs_matching_features(tmp_path):
    """``--match-layers``: the graph returns the extra hidden states, and the encoder's matching
    features (their mean) are PyTorch's; its encoder id is that of the PyTorch model of that depth."""
    from knnsvc.checkpoints import load_wavlm
    from knnsvc.encoder import WavLMEncoder

    export_encoder_file(WAVLM, tmp_path / "wavlm.onnx", layers=[8, 9])
    ours = OnnxEncoder(tmp_path / "wavlm.onnx", match_layers=[8, 9])
    assert ours.layers == [6, 8, 9] and ours.num_layers == 9
    expected = WavLMEncoder(load_wavlm(WAVLM, num_layers=9))
    wav = torch.from_numpy(phrases(2.0, seed=2, low_hz=200.0, high_hz=300.0))
    for (feats, matching), (want_feats, want_matching) in zip(
            ours.chunks_with_matching(wav, [8, 9]), expected.chunks_with_matching(wav, [8, 9]), strict=True):
        assert si_snr_db(feats, want_feats) >= 60 and si_snr_db(matching, want_matching) >= 60
    config = MatchConfig(match_layers=[8, 9])
    assert (build_converter(str(tmp_path / "wavlm.onnx"), str(SINE), f0="dio", config=config).encoder_id
            == build_converter(str(WAVLM), str(SINE), f0="dio", config=config).encoder_id)
