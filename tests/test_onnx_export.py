"""Export of the tiny golden WavLM and every vocoder kind (a tiny Vocos included) to ONNX: the graphs
run at lengths other than the one traced, give PyTorch's output, and carry a sidecar that says what
they are; the self-check measures them; a failed export leaves nothing."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hifigan.generator import VocoderKind, generator_file
from hifigan.vocos import VocosConfig, VocosGenerator
from knnsvc.checkpoints import CheckpointError, build_converter, load_vocoder, load_wavlm
from knnsvc.config import HOP_LENGTH, N_HARMONICS, SAMPLE_RATE
from knnsvc.encoder import WavLMEncoder
from knnsvc.onnx_export import (
    EncoderGraph,
    VocoderInputs,
    export_encoder_file,
    export_vocoder_file,
    file_sha256,
    read_sidecar,
    si_snr_db,
    sidecar_path,
    vocoder_inputs,
)
from knnsvc.onnx_runtime import OnnxEncoder, OnnxVocoder
from knnsvc.synthetic import phrases

SLOW = pytest.mark.slow  # the tests on `exported` share graphs exported once per module (about a minute)

GOLDEN = Path(__file__).parent / "golden"
WAVLM = GOLDEN / "wavlm_tiny.pt"
VOCODERS = {
    "harmonic": GOLDEN / "vocoder_harmonic_tiny.pt",
    "sine": GOLDEN / "vocoder_sine_tiny.pt",
    "knnvc": GOLDEN / "vocoder_knnvc_tiny32.pt",
}


def tiny_vocos_file(folder: Path) -> Path:
    """A seeded tiny Vocos generator at 16 kHz pairing with the tiny WavLM (32-dim features)."""
    torch.manual_seed(0)
    generator = VocosGenerator(VocosConfig(sample_rate=SAMPLE_RATE, hop_length=HOP_LENGTH, input_dim=32, dim=32,
                                           intermediate_dim=64, num_layers=2))
    path = folder / "vocoder_vocos_tiny.pt"
    torch.save(generator_file(generator), path)
    return path


@pytest.fixture(scope="module")
def check_wav() -> torch.Tensor:
    return torch.from_numpy(phrases(3.0, seed=3, low_hz=180.0, high_hz=400.0))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, check_wav) -> dict:
    """Every graph exported once, self-checked on a 3 s sung phrase."""
    folder = tmp_path_factory.mktemp("onnx")
    vocoders = {**VOCODERS, "vocos": tiny_vocos_file(folder)}
    encoder = WavLMEncoder(load_wavlm(WAVLM, num_layers=6))
    inputs = vocoder_inputs(check_wav, encoder, 32)
    reports = {"wavlm": export_encoder_file(WAVLM, folder / "wavlm.onnx", check_wav=check_wav)}
    for kind, path in vocoders.items():
        reports[kind] = export_vocoder_file(path, folder / f"{kind}.onnx", check_inputs=inputs)
    return {"folder": folder, "reports": reports, "vocoders": vocoders, "inputs": inputs}


@SLOW
def test_encoder_graph_runs_at_other_lengths_than_traced(exported):
    """Dynamic length: the graph (traced at 2 s) gives PyTorch's hidden states at two other lengths,
    including the shortest chunk `WavLMEncoder` can make (321 samples, padded to 640)."""
    session = ort.InferenceSession(str(exported["folder"] / "wavlm.onnx"), providers=["CPUExecutionProvider"])
    graph = EncoderGraph(load_wavlm(WAVLM, num_layers=6), [6])
    frames = []
    for samples, seed in ((640, 1), (3 * SAMPLE_RATE + 320, 2)):
        wav = torch.randn(1, samples, generator=torch.Generator().manual_seed(seed))
        (ours,) = session.run(None, {"wav": wav.numpy()})
        with torch.inference_mode():
            expected = graph(wav).numpy()
        assert ours.shape == expected.shape
        assert np.abs(ours - expected).max() < 1e-4
        frames.append(ours.shape[2])
    assert frames == [(640 - 400) // HOP_LENGTH + 1, (3 * SAMPLE_RATE + 320 - 400) // HOP_LENGTH + 1] == [1, 150]


@SLOW
@pytest.mark.parametrize("kind", ["harmonic", "sine", "knnvc", "vocos"])
def test_vocoder_graph_matches_pytorch_at_two_lengths(exported, kind):
    """The vocoder (excitation in torch, network in ONNX Runtime) gives the PyTorch generator's
    waveform at two lengths, also for a block that starts mid-signal (carried phase)."""
    _, generator = load_vocoder(exported["vocoders"][kind])
    onnx_vocoder = OnnxVocoder(exported["folder"] / f"{kind}.onnx")
    rng = torch.Generator().manual_seed(4)
    for n_frames, cycles in ((23, None), (71, torch.tensor([12.375], dtype=torch.float64))):
        feats = torch.randn(1, n_frames, 32, generator=rng)
        f0_hz = 200 + 100 * torch.rand(1, n_frames, generator=rng)
        f0_hz[:, :3] = 0  # unvoiced frames too
        amps = torch.rand(1, n_frames, N_HARMONICS, generator=rng) * 0.1
        with torch.inference_mode():
            expected = generator(feats, f0_hz, amps, cycles)
            ours = onnx_vocoder(feats, f0_hz, amps, cycles)
        assert ours.shape == expected.shape == (1, 1, n_frames * HOP_LENGTH)
        assert si_snr_db(ours, expected) >= 60
        assert float((ours - expected).abs().max()) < 1e-4


@SLOW
def test_sidecars_say_what_the_graphs_are(exported):
    folder = exported["folder"]
    wavlm = read_sidecar(folder / "wavlm.onnx", "wavlm")
    assert wavlm["kind"] == "wavlm" and wavlm["layers"] == [6] and wavlm["depth"] == 6
    assert (wavlm["sample_rate"], wavlm["hop_length"], wavlm["dim"]) == (16000, 320, 32)
    assert wavlm["source"]["sha256"] == file_sha256(WAVLM) and wavlm["source"]["name"] == WAVLM.name
    assert wavlm["graph_sha256"] == hashlib.sha256((folder / "wavlm.onnx").read_bytes()).hexdigest()
    assert wavlm["precision"] == "float32"
    # the PyTorch converter's pool cache id: pools cached with either backend serve both
    torch_converter = build_converter(str(WAVLM), str(VOCODERS["harmonic"]), f0="dio")
    assert wavlm["encoder_id"] == torch_converter.encoder_id
    for kind, checkpoint in exported["vocoders"].items():
        sidecar = read_sidecar(folder / f"{kind}.onnx", "vocoder")
        _, generator = load_vocoder(checkpoint)
        assert sidecar["kind"] == kind == VocoderKind(generator.kind).value
        assert sidecar["context_frames"] == generator.context_frames
        assert (sidecar["sample_rate"], sidecar["hop_length"], sidecar["dim"]) == (16000, 320, 32)
        assert sidecar["source"]["sha256"] == file_sha256(checkpoint)
        assert sidecar["inputs"][0] == "feats"


@SLOW
def test_self_check_reports_the_deviation_and_records_it(exported):
    for name, report in exported["reports"].items():
        deviation = report.deviation
        assert deviation is not None
        assert deviation.si_snr_db >= 60, (name, deviation)
        assert 0 <= deviation.max_abs_diff < 1e-3, (name, deviation)
        recorded = json.loads(sidecar_path(report.path).read_text())["check"]
        assert recorded["si_snr_db"] == pytest.approx(deviation.si_snr_db, abs=0.01)
        assert recorded["input_seconds"] == pytest.approx(3.0, abs=0.02)


@SLOW
def test_int8_variant_loads_runs_and_measures_its_deviation(exported, tmp_path, check_wav):
    """Dynamic int8 quantisation: smaller graphs that run in ONNX Runtime, a real deviation (neither
    identical to float32 nor noise), recorded in the sidecar."""
    report = export_encoder_file(WAVLM, tmp_path / "wavlm.int8.onnx", check_wav=check_wav, precision="int8",
                                 graph=exported["reports"]["wavlm"].graph)
    vocoder = export_vocoder_file(VOCODERS["harmonic"], tmp_path / "vocoder.int8.onnx",
                                  check_inputs=exported["inputs"], precision="int8")
    for int8, float32 in ((report, exported["reports"]["wavlm"]), (vocoder, exported["reports"]["harmonic"])):
        assert int8.sidecar["precision"] == "int8"
        assert int8.path.stat().st_size < float32.path.stat().st_size
        assert int8.deviation is not None and 15 < int8.deviation.si_snr_db < 80
    features = OnnxEncoder(tmp_path / "wavlm.int8.onnx")(check_wav)
    assert features.shape == (check_wav.numel() // HOP_LENGTH, 32) and bool(torch.isfinite(features).all())


def test_vocoder_self_check_without_an_encoder_uses_seeded_features(check_wav):
    inputs = vocoder_inputs(check_wav, None, 48, f0="dio")
    again = vocoder_inputs(check_wav, None, 48, f0="dio")
    assert isinstance(inputs, VocoderInputs) and inputs.feats.shape == (check_wav.numel() // HOP_LENGTH, 48)
    assert torch.equal(inputs.feats, again.feats)
    assert inputs.amps.shape == (inputs.feats.shape[0], N_HARMONICS) and bool((inputs.f0_hz > 0).any())


def test_failed_export_leaves_nothing(tmp_path, check_wav):
    """A checkpoint of the wrong role, or a vocoder that fails its self-check's inputs: one line,
    and neither a graph, a sidecar nor a temporary is left."""
    with pytest.raises(CheckpointError) as err:
        export_encoder_file(VOCODERS["harmonic"], tmp_path / "wavlm.onnx", check_wav=check_wav)
    assert "\n" not in str(err.value) and "vocoder checkpoint" in str(err.value)
    bad_inputs = VocoderInputs(torch.zeros(10, 32), torch.zeros(9), torch.zeros(10, N_HARMONICS))
    with pytest.raises(ValueError):
        export_vocoder_file(VOCODERS["sine"], tmp_path / "vocoder.onnx", check_inputs=bad_inputs)
    assert list(tmp_path.iterdir()) == []


def test_si_snr_is_scale_invariant_and_infinite_for_identical_signals():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert math.isinf(si_snr_db(x, x)) and si_snr_db(3 * x, x) > 140  # a gain is not an error
    assert 19 < si_snr_db(x + 0.1 * torch.randn(1000, generator=torch.Generator().manual_seed(1)), x) < 21
