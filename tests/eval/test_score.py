"""knnsvc-score's command-line contract: exit statuses 0/1/2/130, usage errors before any work, one line
when nothing could be scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc.apps import score
from knnsvc.eval.suite import METRICS

SR = 16000


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    (tmp_path / "target" / "alto").mkdir(parents=True)
    sf.write(tmp_path / "target" / "alto" / "a.wav", tone, SR)
    (tmp_path / "converted").mkdir()
    sf.write(tmp_path / "converted" / "x.wav", tone, SR)
    return {"converted": tmp_path / "converted", "target": tmp_path / "target" / "alto", "root": tmp_path}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = score.main(list(argv))
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def test_version(capsys):
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.startswith("knnsvc ")


@pytest.mark.parametrize("metrics, message", [
    ("speaker,loudness", "unknown metric family 'loudness' (known: speaker, intelligibility, pitch, quality)"),
    (",", "unknown metric family"),
    ("speed", "speed is measured while converting"),
    ("pitch", "pitch compare with the source recordings: give --source"),
])
def test_metrics_that_cannot_run_are_usage_errors(capsys, files, monkeypatch, metrics, message):
    monkeypatch.setattr(score, "plan_items", lambda *a: pytest.fail("work started before the usage check"))
    status, out, err = run(capsys, str(files["converted"]), "--target", str(files["target"]), "--metrics", metrics)
    assert status == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("knnsvc-score: error: --metrics: ") and message in err
    assert set(METRICS) >= {"speaker", "intelligibility", "pitch", "quality"}


def test_csv_that_is_a_folder_is_a_usage_error_and_nothing_is_written(capsys, files, monkeypatch):
    monkeypatch.setattr(score, "plan_items", lambda *a: pytest.fail("work started before the usage check"))
    status, out, err = run(capsys, str(files["converted"]), "--target", str(files["target"]), "--csv",
                           str(files["root"]))
    assert status == 2 and out == "" and "--csv" in err and "is a folder" in err
    status, _, err = run(capsys, str(files["converted"]), "--target", str(files["target"]), "--csv",
                         str(files["target"] / "a.wav" / "rows.csv"))
    assert status == 2 and "is not a folder" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "mps", "gpu"])
def test_a_device_this_machine_lacks_is_a_usage_error(capsys, files, device):
    status, out, err = run(capsys, str(files["converted"]), "--target", str(files["target"]), "--device", device)
    assert status == 2 and out == "" and "argument --device" in err and "Traceback" not in err


def test_nothing_scored_is_exit_1_with_one_line_and_no_json(capsys, files):
    missing = files["root"] / "nowhere"
    status, out, err = run(capsys, str(missing), "--target", str(files["target"]), "--metrics", "speaker")
    assert status == 1 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("ERROR: nothing scored: no converted file could be paired")
    assert any(f"{missing}: converted file or folder not found" in line for line in lines)


def test_metrics_that_all_fail_are_nothing_scored(capsys, files, monkeypatch):
    def broken(ctx):
        raise RuntimeError("the embedder could not be loaded")

    monkeypatch.setitem(METRICS, "speaker", broken)
    status, out, err = run(capsys, str(files["converted"]), "--target", str(files["target"]), "--metrics", "speaker",
                           "--csv", str(files["root"] / "rows.csv"))
    assert status == 1 and out == ""
    assert "metric 'speaker': not computed: the embedder could not be loaded" in err
    assert err.strip().splitlines()[-1].startswith("ERROR: nothing scored: no metric of speaker could be computed")
    assert not (files["root"] / "rows.csv").exists()


def test_interrupted_is_130_with_one_line(capsys, files, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(score, "plan_items", interrupt)
    status, out, err = run(capsys, str(files["converted"]), "--target", str(files["target"]))
    assert status == 130 and out == "" and err.strip() == "ERROR: interrupted; nothing written"
