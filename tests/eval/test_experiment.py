"""The evaluation experiment end to end with the tiny golden models: a two-setting Hydra sweep
producing tables, CSVs and plots; the conversion cache; per-item reporting of bad input; the
score command for audio converted elsewhere."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hifigan.config import HiFiGANConfig
from hifigan.generator import KnnVcGenerator
from knnsvc.eval import METRIC_KEYS
from knnsvc.eval.experiment import EvaluationSettings, run_evaluation
from knnsvc.eval.suite import SuiteSettings
from knnsvc.eval.sweep import summarize
from knnsvc.pipeline import MatchConfig

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
SR = 16000
FAST_METRICS = ("speaker", "pitch", "quality", "speed")  # ASR is covered in test_eval_models.py


def sung(seconds: float, f0_hz: float, formants: list[tuple[float, float]], seed: int) -> np.ndarray:
    """A sung vowel with vibrato and a formant envelope (harmonic-rich, so Harvest tracks it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = f0_hz * (1 + 0.03 * np.sin(2 * np.pi * 5 * t)) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t + seed))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wav = np.zeros_like(t)
    for h in range(1, 30):
        amp = sum(np.exp(-(((h * f0) - centre) / width) ** 2) for centre, width in formants) + 0.02
        wav += np.where(h * f0 < 7800, amp * np.sin(h * phase) / h**0.5, 0.0)
    fade = np.minimum(1.0, np.minimum(t / 0.05, (t[-1] - t) / 0.05))
    return (0.5 * wav * fade / np.abs(wav).max() + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """sources/tenor/{tenor_0,tenor_1}.wav (1.5 s); targets/{alto,bass}/*_{0,1}.wav (2 s)."""
    root = tmp_path_factory.mktemp("eval_set")
    voices = {"alto": (220.0, [(700, 150), (1200, 200), (2600, 300)]),
              "bass": (110.0, [(500, 120), (900, 150), (2400, 300)])}
    for speaker, (f0, formants) in voices.items():
        for i in range(2):
            path = root / "targets" / speaker / f"{speaker}_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, sung(2.0, f0 * (1 + 0.05 * i), formants, seed=10 + i + len(speaker)), SR)
    for i in range(2):
        path = root / "sources" / "tenor" / f"tenor_{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, sung(1.5, 160.0 * (1 + 0.1 * i), [(600, 150), (1000, 150), (2500, 300)], seed=100 + i), SR)
    return root


def subprocess_env() -> dict[str, str]:
    """Environment for a child Python: this checkout importable, one BLAS/OpenMP thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def settings(root: Path, out: Path, **changes) -> EvaluationSettings:
    base = dict(
        sources_dir=root / "sources",
        targets_dir=root / "targets",
        out_dir=out,
        cache_dir=out / "cache",
        wavlm=str(GOLDEN / "wavlm_tiny.pt"),
        vocoder=str(GOLDEN / "vocoder_harmonic_tiny.pt"),
        vocoder_config=str(GOLDEN / "vocoder_tiny_config.json"),
        match=MatchConfig(),
        suite=SuiteSettings(metrics=FAST_METRICS),
        plot_examples=1,
    )
    base.update(changes)
    return EvaluationSettings(**base)


@pytest.mark.slow
def test_hydra_sweep_writes_table_csv_and_plots(dataset, tmp_path):
    """All four Table 1 columns with tiny models, as one multirun, then one summary table."""
    out = tmp_path / "sweep"
    env = subprocess_env()
    tiny_config = GOLDEN / "vocoder_tiny_config.json"
    knnvc_tiny = tmp_path / "knnvc_tiny.pt"  # a kNN-VC vocoder as wide as the tiny WavLM (32)
    torch.manual_seed(0)
    torch.save({"generator": KnnVcGenerator(HiFiGANConfig.from_json(tiny_config)).state_dict()}, knnvc_tiny)
    command = [
        sys.executable, str(ROOT / "experiments" / "evaluate.py"), "-m",
        f"sources_dir={dataset / 'sources'}", f"targets_dir={dataset / 'targets'}", f"out_dir={out}",
        f"wavlm={GOLDEN / 'wavlm_tiny.pt'}", f"vocoders.harmonic={GOLDEN / 'vocoder_harmonic_tiny.pt'}",
        f"vocoders.sine={GOLDEN / 'vocoder_sine_tiny.pt'}", f"vocoders.knnvc={knnvc_tiny}",
        f"vocoder_config={tiny_config}",
        f"metrics=[{','.join(FAST_METRICS)}]", "plots.examples=1",
        "ablations=knnvc,knnsvc_no_as_opt,knnsvc_no_opt,knnsvc",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = sorted(p.parent for p in out.glob("*/metrics.json"))
    assert len(runs) == 4
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert set(METRIC_KEYS) <= set(metrics)
        assert metrics["n_conversions"] == 4 and metrics["problems"] == []
        for key in ("sim", "eer", "f0_rmse_cents", "f0_corr", "dnsmos", "rtf", "peak_rss_gb"):
            assert isinstance(metrics[key], float), key
        assert metrics["wer"] is None  # not requested
        with (run / "utterances.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 4 and {r["target_speaker"] for r in rows} == {"alto", "bass"}
        assert all(Path(r["converted"]).is_file() for r in rows)
        assert (run / "table.md").read_text().startswith("| condition | metric | kNN-VC |")
        assert sorted(p.name.rsplit("_", 1)[-1] for p in (run / "plots").glob("*.png")) == [
            "f0.png", "provenance.png", "spectrograms.png"]
    systems = {json.loads((r / "metrics.json").read_text())["system"] for r in runs}
    assert systems == {"kNN-VC", "kNN-SVC w/o {AS, OPT}", "kNN-SVC w/o {OPT}", "kNN-SVC"}

    result = summarize([out])
    table = result["summary_md"].read_text()
    eer_row = next(line for line in table.splitlines() if "| EER" in line)
    cells = [c.strip() for c in eer_row.strip("|").split("|")]
    assert all(cell != "–" for cell in cells[2:6])  # every column filled
    assert "match.concat_weight" in result["varying"] and "match.optimise_weights" in result["varying"]
    with result["summary_csv"].open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result["figures"]) and result["figures"]


@pytest.mark.slow
def test_cached_conversions_are_reused_and_reference_limit_applies(dataset, tmp_path):
    out = tmp_path / "run"
    first = run_evaluation(settings(dataset, out, suite=SuiteSettings(metrics=("speed",)), plot_examples=0))
    assert first["n_converted_now"] == 4 and first["rtf"] > 0
    again = run_evaluation(settings(dataset, out, suite=SuiteSettings(metrics=("pitch",)), plot_examples=0))
    assert again["n_converted_now"] == 0 and again["f0_rmse_cents"] is not None
    assert again["rtf"] is None  # speed not requested this time
    limited = run_evaluation(settings(dataset, out, reference_seconds=1.0, suite=SuiteSettings(metrics=()),
                                      plot_examples=0))
    assert limited["n_converted_now"] == 4 and limited["conversions_dir"] != first["conversions_dir"]
    record = torch.load(Path(limited["conversions_dir"]) / "tenor" / "tenor_0" / "alto.pt", weights_only=True)
    assert int(record["indices_wavlm"].max()) < 50  # 1 s of reference = 50 frames


@pytest.mark.slow
def test_bad_input_is_reported_per_item_and_the_rest_is_scored(dataset, tmp_path):
    root = tmp_path / "set"
    (root / "sources" / "tenor").mkdir(parents=True)
    (root / "targets").mkdir(parents=True)
    for path in (dataset / "sources" / "tenor").glob("*.wav"):
        (root / "sources" / "tenor" / path.name).write_bytes(path.read_bytes())
    (root / "sources" / "tenor" / "broken.wav").write_bytes(b"this is not audio")
    (root / "sources" / "silent").mkdir()
    sf.write(root / "sources" / "silent" / "quiet.wav", np.zeros(SR, dtype=np.float32), SR)
    (root / "targets" / "alto").mkdir()
    for path in (dataset / "targets" / "alto").glob("*.wav"):
        (root / "targets" / "alto" / path.name).write_bytes(path.read_bytes())
    (root / "targets" / "empty_singer").mkdir()
    (root / "targets" / "empty_singer" / "notes.txt").write_text("no audio here")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "src_speaker,tgt_speaker,x_path,y_path,label\n"
        "tenor,alto,tenor_0/alto,alto/alto_1,0\n"
        "tenor,alto,tenor_9/alto,alto/alto_1,0\n"       # no such source
        "tenor,alto,broken/alto,alto/alto_0,0\n"        # unreadable source
        "silent,alto,quiet/alto,alto/alto_0,0\n"        # silent source
        "tenor,alto,tenor_1/alto,alto/missing,0\n"      # no such target recording
        "tenor,ghost,tenor_1/ghost,ghost/g_0,0\n"       # no such target speaker
        "alto,alto,alto/alto_0,alto/alto_1,1\n"
        "tenor,alto,too,few\n"
    )
    out = tmp_path / "out"
    summary = run_evaluation(settings(root, out, pairs=pairs, suite=SuiteSettings(metrics=("speaker", "pitch"))))
    problems = summary["problems"]
    text = "\n".join(problems)
    assert all("\n" not in p for p in problems)
    assert "empty_singer: target speaker folder has no audio files" in text
    assert "line 3: x_path source: recording 'tenor_9' of speaker 'tenor' not found" in text
    assert "tenor/broken/alto: not converted" in text and "not a readable audio file" in text
    assert "silent/quiet/alto: not converted" in text and "silent" in text
    assert "line 6: y_path: recording 'alto/missing' of speaker 'alto' not found" in text
    assert "line 7: y_path: speaker 'ghost' not found" in text
    assert "line 9: expected 5 columns" in text
    assert summary["n_conversions"] == 1 and summary["sim"] is not None and summary["eer"] is not None
    assert summary["eer_trials"] == 2
    with (out / "utterances.csv").open() as handle:
        assert [r["item"] for r in csv.DictReader(handle)] == ["tenor/tenor_0/alto"]


def test_missing_checkpoint_stops_the_run_with_one_clear_error(dataset, tmp_path):
    from knnsvc.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        run_evaluation(settings(dataset, tmp_path, vocoder=str(tmp_path / "nope.pt")))


def test_a_pair_that_does_not_fit_stops_the_run_before_any_conversion(dataset, tmp_path):
    """The evaluation builds its converter with the commands' builder, so the encoder/vocoder
    compatibility check applies: the 64-dim kNN-VC vocoder with the 32-dim tiny WavLM is one error."""
    from knnsvc.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="64-dim features but the WavLM .* produces 32-dim"):
        run_evaluation(settings(dataset, tmp_path, vocoder=str(GOLDEN / "vocoder_knnvc_tiny.pt"),
                                vocoder_config=None, suite=SuiteSettings(metrics=())))
    assert not list((tmp_path / "cache").glob("conv-*/**/*.wav"))


def test_evaluation_converts_through_the_one_builder_and_the_one_file_conversion(dataset, tmp_path, monkeypatch):
    from knnsvc import conversion
    from knnsvc.eval import experiment

    built, converted = [], []
    real_build, real_convert = experiment.build_converter, conversion.convert_file

    def build(*args, **kwargs):
        built.append(kwargs)
        return real_build(*args, **kwargs)

    def convert(converter, pool, source, output, options, progress=None):
        converted.append((source, output))
        return real_convert(converter, pool, source, output, options, progress)

    monkeypatch.setattr(experiment, "build_converter", build)
    monkeypatch.setattr(experiment, "convert_file", convert)
    out = tmp_path / "run"
    run_evaluation(settings(dataset, out, vocoder=str(GOLDEN / "vocoder_knnvc_tiny32.pt"),
                            vocoder_config=str(GOLDEN / "vocoder_knnvc_tiny32_config.json"), f0="dio",
                            block_seconds=0.0, max_sources_per_speaker=1, suite=SuiteSettings(metrics=())))
    assert [(k["f0"], k["block_seconds"]) for k in built] == [("dio", 0.0)]
    assert len(converted) == 2 and all(output.is_file() for _, output in converted)
    assert {source.name for source, _ in converted} == {"tenor_0.wav"}
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["settings"]["f0"] == "dio" and summary["n_conversions"] == 2


@pytest.mark.slow
def test_score_cli_on_external_audio(dataset, tmp_path):
    converted = tmp_path / "converted"
    (converted / "tenor_0").mkdir(parents=True)
    # "another system": the alto's own second take, filed as the conversion of tenor_0 to alto
    (converted / "tenor_0" / "alto.wav").write_bytes((dataset / "targets" / "alto" / "alto_1.wav").read_bytes())
    (converted / "tenor_0_to_bass.wav").write_bytes((dataset / "targets" / "bass" / "bass_1.wav").read_bytes())
    (converted / "mystery.wav").write_bytes((dataset / "targets" / "bass" / "bass_0.wav").read_bytes())
    env = subprocess_env()
    done = subprocess.run(
        [sys.executable, "-m", "knnsvc.eval.score", str(converted), "--target", str(dataset / "targets"),
         "--source", str(dataset / "sources"), "--metrics", "speaker,pitch", "--csv", str(tmp_path / "rows.csv")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout)
    assert list(scores)[:10] == ["sim", "eer", "wer", "cer", "f0_rmse_cents", "vuv_error", "f0_corr", "dnsmos",
                                 "rtf", "peak_rss_gb"] == list(METRIC_KEYS)
    assert scores["rtf"] is None and scores["peak_rss_gb"] is None and scores["wer"] is None
    assert scores["sim"] > 0.5 and scores["f0_rmse_cents"] is not None
    assert scores["n_items"] == 2
    assert "mystery.wav: cannot tell which target speaker" in done.stderr
    with (tmp_path / "rows.csv").open() as handle:
        rows = {r["item"]: r for r in csv.DictReader(handle)}
    assert rows["tenor_0/alto"]["target_speaker"] == "alto" and rows["tenor_0_to_bass"]["target_speaker"] == "bass"
    assert rows["tenor_0/alto"]["source"].endswith("tenor_0.wav")


def _evaluate_app():
    spec = importlib.util.spec_from_file_location("evaluate_app", ROOT / "experiments" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("ablation", "system", "kind", "concat_weight", "optimise"),
    [
        ("knnvc", "kNN-VC", "knnvc", None, False),
        ("knnsvc_no_as_opt", "kNN-SVC w/o {AS, OPT}", "sine", None, False),
        ("knnsvc_no_opt", "kNN-SVC w/o {OPT}", "harmonic", None, False),
        ("knnsvc", "kNN-SVC", "harmonic", 0.2, True),
    ],
)
def test_table1_ablation_configs_compose_into_typed_settings(tmp_path, ablation, system, kind, concat_weight,
                                                            optimise):
    from hydra import compose, initialize_config_dir

    app = _evaluate_app()
    overrides = ["sources_dir=s", "targets_dir=t", "out_dir=o", f"ablations={ablation}", "vocoders.sine=sine.pt",
                 "reference_seconds=5", "match.pitch_shift=none"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    settings = app.settings_from_config(cfg, tmp_path)
    assert settings.system == system and settings.expect_vocoder_kind == kind
    assert settings.match.concat_weight == concat_weight and settings.match.optimise_weights is optimise
    assert settings.match.pitch_shift is None and settings.reference_seconds == 5.0
    assert settings.cache_dir == Path("o/cache") and settings.out_dir == tmp_path
    assert settings.vocoder == {"knnvc": "knnvc-prematched", "sine": "sine.pt"}.get(kind, "knnsvc-singing")
