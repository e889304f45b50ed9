"""`knnsvc-export` end to end on the golden tiny checkpoints: graphs and sidecars written and
self-checked, `knnsvc-convert` with the ``.onnx`` paths, existing outputs kept, and bad input that
leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from knnsvc import synthetic
from knnsvc.apps import convert, export

GOLDEN = Path(__file__).parents[1] / "golden"
WAVLM = str(GOLDEN / "wavlm_tiny.pt")
HARMONIC = str(GOLDEN / "vocoder_harmonic_tiny.pt")
SR = 16000


def error_lines(captured: str) -> list[str]:
    return [line for line in captured.splitlines() if line.startswith("ERROR")]


def write_phrases(path: Path, seconds: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synthetic.phrases(seconds, seed=seed, low_hz=180.0, high_hz=420.0), SR)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """One CLI export of both graphs (float32 and int8), with its printed lines."""
    folder = tmp_path_factory.mktemp("export")
    check = write_phrases(folder / "check.wav", 2.0, seed=5)
    out = folder / "exported"
    done = subprocess.run(
        [sys.executable, "-m", "knnsvc.export", str(out), "--wavlm", WAVLM, "--vocoder", HARMONIC, "--quantize",
         "int8", "--check-audio", str(check), "--f0", "dio"],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]),
                                                          os.environ.get("PYTHONPATH", "")])})
    return {"out": out, "done": done, "check": check}


@pytest.mark.slow
def test_export_writes_self_checked_graphs_and_sidecars(exported):
    done, out = exported["done"], exported["out"]
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{part}{variant}.onnx{side}" for part in ("wavlm", "vocoder") for variant in ("", ".int8")
        for side in ("", ".json"))
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines()}
    assert len(lines) == 4
    for name, floor in (("wavlm.onnx", 60), ("vocoder.onnx", 60), ("wavlm.int8.onnx", 15), ("vocoder.int8.onnx", 15)):
        line = lines[str(out / name)]
        assert "2.0 s checked: SI-SNR" in line and "max abs difference" in line
        snr = float(line.split("SI-SNR ")[1].split(" dB")[0])
        assert snr >= floor, line
        sidecar = json.loads((out / f"{name}.json").read_text())
        assert sidecar["check"]["si_snr_db"] == pytest.approx(snr, abs=0.05)
    assert "harmonic vocoder" in lines[str(out / "vocoder.onnx")]
    assert "layers [6]" in lines[str(out / "wavlm.onnx")]
    assert error_lines(done.stderr) == [] and "Traceback" not in done.stderr


@pytest.mark.slow
def test_convert_with_onnx_paths_equals_pytorch(exported, tmp_path):
    src = write_phrases(tmp_path / "in" / "src.wav", 3.0, seed=6)
    ref = write_phrases(tmp_path / "singer" / "ref.wav", 6.0, seed=7)
    out = exported["out"]
    onnx_out, torch_out = tmp_path / "onnx.wav", tmp_path / "torch.wav"
    common = ["--f0", "dio", "-q"]
    assert convert.main([str(src), str(ref), "-o", str(onnx_out), "--wavlm", str(out / "wavlm.onnx"),
                         "--vocoder", str(out / "vocoder.onnx"), *common]) == 0
    assert convert.main([str(src), str(ref), "-o", str(torch_out), "--wavlm", WAVLM, "--vocoder", HARMONIC,
                         *common]) == 0
    ours, rate = sf.read(onnx_out)
    expected, _ = sf.read(torch_out)
    assert rate == SR and ours.shape == expected.shape == (3 * SR,)
    noise = float(((ours - expected) ** 2).sum())
    assert noise == 0 or 10 * np.log10(float((expected**2).sum()) / noise) >= 60
    # the int8 graphs convert too
    int8_out = tmp_path / "int8.wav"
    assert convert.main([str(src), str(ref), "-o", str(int8_out), "--wavlm", str(out / "wavlm.int8.onnx"),
                         "--vocoder", str(out / "vocoder.int8.onnx"), *common]) == 0
    assert sf.read(int8_out)[0].shape == (3 * SR,)


@pytest.mark.slow
def test_convert_with_a_truncated_graph_is_one_line_and_writes_nothing(exported, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("vocoder.onnx", "vocoder.onnx.json"):
        (broken / name).write_bytes((exported["out"] / name).read_bytes())
    graph = broken / "vocoder.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    src = write_phrases(tmp_path / "src.wav", 1.0, seed=8)
    ref = write_phrases(tmp_path / "singer" / "ref.wav", 2.0, seed=9)
    out = tmp_path / "out"
    out.mkdir()
    status = convert.main([str(src), str(ref), "-o", str(out / "x.wav"), "--wavlm", str(exported["out"] / "wavlm.onnx"),
                           "--vocoder", str(graph), "--f0", "dio", "-q"])
    errors = error_lines(capsys.readouterr().err)
    assert status == 1 and len(errors) == 1 and "does not match its sidecar" in errors[0]
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_existing_graphs_are_kept_without_overwrite(exported, capsys):
    out = exported["out"]
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    status = export.main([str(out), "--wavlm", WAVLM, "--vocoder", HARMONIC, "--check-audio",
                          str(exported["check"])])
    err = capsys.readouterr().err
    assert status == 0
    assert err.count("exists, skipped (use --overwrite to replace it)") == 2
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def test_a_bad_checkpoint_is_one_line_and_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "g_bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    out = tmp_path / "exported"
    status = export.main([str(out), "--wavlm", WAVLM, "--vocoder", str(bad), "--only", "vocoder", "-q"])
    errors = error_lines(capsys.readouterr().err)
    assert status == 1 and len(errors) == 1
    assert errors[0].startswith("ERROR: vocoder: ") and "not a readable PyTorch checkpoint" in errors[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_usage_and_output_problems(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        export.main([str(tmp_path), "--only", "vocoder", "--match-layers", "20-24"])
    assert stop.value.code == 2 and "--match-layers applies to the WavLM graph" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        export.main([""])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        export.main([str(tmp_path), "--check-audio", str(tmp_path / "missing.wav")])
    assert stop.value.code == 2 and "--check-audio" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert export.main([str(a_file), "--wavlm", WAVLM, "--vocoder", HARMONIC, "-q"]) == 1
    assert error_lines(capsys.readouterr().err) == [f"ERROR: {a_file}: exists and is not a folder"]
    assert a_file.read_text() == "x"
