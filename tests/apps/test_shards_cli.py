"""Sharded runs end to end on the tiny golden checkpoints: ``knnsvc-convert --num-shards N --shard-index I``
writes byte for byte what one process writes, resumes after a kill, shares one pool cache between shards
running at once; ``knnsvc-score`` shards merge into the unsharded JSON and CSV; ``knnsvc-merge`` refuses
what cannot be one run in one line; the Hydra app runs the shards as a joblib multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from knnsvc.apps import convert, merge, score
from knnsvc.apps.common import FAILED_STATUS, OK_STATUS, USAGE_STATUS
from knnsvc.eval.experiment import EvaluationSettings, run_evaluation
from knnsvc.eval.suite import SuiteSettings
from knnsvc.pool import ReferencePool
from knnsvc.shards import ShardError
from tests.apps.test_convert import HARMONIC, SR, TINY_CONFIG, WAVLM, sung_vowel, tiny_args

REPO = Path(__file__).resolve().parents[2]
N_FILES = 8


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[str, Path]:
    """Eight 0.4 s sung sources in a nested folder, a two-file singer, and their unsharded conversion
    (with its manifest)."""
    root = tmp_path_factory.mktemp("shards")
    for n in range(N_FILES):
        path = root / "songs" / ("verse" if n % 3 else "") / f"take{n}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, sung_vowel(0.4, 200.0 + 15 * n, seed=n), SR)
    (root / "singer").mkdir()
    sf.write(root / "singer" / "a.wav", sung_vowel(0.8, 180.0, seed=20), SR)
    sf.write(root / "singer" / "b.wav", sung_vowel(0.8, 240.0, seed=21), SR)
    paths = {"root": root, "songs": root / "songs", "singer": root / "singer", "single": root / "single"}
    assert convert.main(conversion(paths, "single", "--manifest", str(root / "single.json"))) == OK_STATUS
    return paths


def conversion(batch: dict[str, Path], out: str, *extra: str) -> list[str]:
    return [str(batch["songs"]), str(batch["singer"]), "-o", str(batch["root"] / out), *tiny_args(*extra)]


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*.wav"))}


def shard_args(num_shards: int, index: int, manifest: Path) -> list[str]:
    return ["--num-shards", str(num_shards), "--shard-index", str(index), "--manifest", str(manifest)]


def without_timings(manifest: dict, out: Path) -> dict:
    """A manifest with what differs between two runs of the same batch taken out: seconds, where the
    outputs went (the runs compared write to different folders) and so the fingerprint."""
    entries = [{**entry, "seconds": None, "output": Path(entry["output"]).relative_to(out).as_posix()}
               for entry in manifest["entries"]]
    settings = {**manifest["settings"], "output": None}
    return {**manifest, "entries": entries, "settings": settings, "fingerprint": None}


def test_four_shards_write_byte_for_byte_what_one_process_writes(batch, tmp_path, capsys):
    manifest = tmp_path / "run.json"
    for index in range(4):
        assert convert.main(conversion(batch, "sharded", *shard_args(4, index, manifest))) == OK_STATUS
    single = outputs(batch["single"])
    assert len(single) == N_FILES and outputs(batch["root"] / "sharded") == single
    shard_files = sorted(tmp_path.glob("run.shard-*-of-4.json"))
    assert [len(json.loads(p.read_text())["entries"]) for p in shard_files] == [2, 2, 2, 2]

    merged = tmp_path / "merged.json"
    capsys.readouterr()
    assert merge.main([*map(str, shard_files), "-o", str(merged)]) == OK_STATUS
    unsharded = json.loads((batch["root"] / "single.json").read_text())
    assert without_timings(json.loads(merged.read_text()), batch["root"] / "sharded") == without_timings(
        unsharded, batch["single"])
    assert {entry["status"] for entry in unsharded["entries"]} == {"converted"}

    # a second merge of the same shards: one line, the first merge kept
    before = merged.read_bytes()
    capsys.readouterr()
    assert merge.main([*map(str, shard_files), "-o", str(merged)]) == FAILED_STATUS
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ERROR: {merged}: already exists (merged before?); use --overwrite to replace it"]
    assert merged.read_bytes() == before
    assert merge.main([*map(str, shard_files), "-o", str(merged), "--overwrite"]) == OK_STATUS


def test_a_rerun_shard_only_converts_what_is_missing(batch, tmp_path, capsys):
    manifest, out = tmp_path / "run.json", batch["root"] / "resumed"
    for index in range(2):
        assert convert.main(conversion(batch, "resumed", *shard_args(2, index, manifest))) == OK_STATUS
    shard = tmp_path / "run.shard-1-of-2.json"
    mine = [Path(entry["output"]) for entry in json.loads(shard.read_text())["entries"]]
    # a pre-empted shard: its last output never written, its manifest one entry short
    mine[-1].unlink()
    data = json.loads(shard.read_text())
    data["entries"] = data["entries"][:-1]
    shard.write_text(json.dumps(data))
    capsys.readouterr()
    assert merge.main([str(tmp_path / "run.shard-0-of-2.json"), str(shard), "-o", str(tmp_path / "m.json")]) == 1
    assert "shard 1 of 2 is incomplete (3 of 4 items recorded); rerun it" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()

    assert convert.main(conversion(batch, "resumed", *shard_args(2, 1, manifest))) == OK_STATUS
    entries = json.loads(shard.read_text())["entries"]
    assert [entry["status"] for entry in entries] == ["converted"] * 4  # the earlier run's entries are kept
    skipped = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert len(skipped) == 3  # only this shard's finished outputs, not the other shard's
    assert outputs(out) == outputs(batch["single"])
    assert merge.main([str(tmp_path / "run.shard-0-of-2.json"), str(shard), "-o", str(tmp_path / "m.json")]) == 0


def test_two_shards_at_once_share_one_pool_cache(batch, tmp_path):
    cache, manifest = tmp_path / "cache", tmp_path / "run.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "knnsvc.convert", *conversion(
        batch, "together", "--pool-cache", str(cache), *shard_args(2, index, manifest))],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for index in range(2)]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [OK_STATUS, OK_STATUS], errors
    assert "WARNING" not in "".join(errors)  # no damaged or unwritable cache entry
    entries = sorted(cache.iterdir())
    assert len(entries) == 2 and all(path.suffix == ".pt" for path in entries)  # one per reference file, no temporaries
    for path in entries:
        assert ReferencePool.load(path).num_frames > 0
    assert outputs(batch["root"] / "together") == outputs(batch["single"])


@pytest.mark.parametrize(("extra", "message"), [
    (("--num-shards", "4", "--shard-index", "4"),
     "--shard-index 4: shard index 4 is out of range for 4 shard(s) (0-3)"),
    (("--shard-index", "1"), "--shard-index needs --num-shards N"),
    (("--num-shards", "2"), "--num-shards and --shard-index go together"),
    (("--num-shards", "0", "--shard-index", "0"), "--num-shards: expected a number of shards in [1,"),
])
def test_a_shard_outside_the_run_is_one_usage_line_and_nothing_is_written(batch, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as done:
        convert.main([str(batch["songs"]), str(batch["singer"]), "-o", str(tmp_path / "out"),
                      "--manifest", str(tmp_path / "m.json"), *tiny_args(*extra)])
    assert done.value.code == USAGE_STATUS
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_merge_refuses_shards_of_another_run_in_one_line(batch, tmp_path, capsys):
    for index in range(2):
        assert convert.main(conversion(batch, "a", *shard_args(2, index, tmp_path / "a.json"))) == OK_STATUS
    assert convert.main(conversion(batch, "b", "--topk", "2", *shard_args(2, 1, tmp_path / "b.json"))) == OK_STATUS
    capsys.readouterr()
    status = merge.main([str(tmp_path / "a.shard-0-of-2.json"), str(tmp_path / "b.shard-1-of-2.json"),
                         "-o", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == FAILED_STATUS and len(err) == 1 and "made with other settings" in err[0] and "topk" in err[0]
    assert not (tmp_path / "m.json").exists()


def test_score_shards_merge_into_the_unsharded_json_and_csv(batch, tmp_path, capsys):
    pytest.importorskip("resemblyzer")
    common = [str(batch["single"]), "--target", str(batch["singer"]), "--source", str(batch["songs"]),
              "--metrics", "speaker,pitch", "-q"]
    capsys.readouterr()
    assert score.main([*common, "--csv", str(tmp_path / "single.csv")]) == OK_STATUS
    single = capsys.readouterr().out
    assert json.loads(single)["n_items"] == N_FILES and json.loads(single)["eer_trials"] > 0
    for index in range(3):
        assert score.main([*common, *shard_args(3, index, tmp_path / "scores.json")]) == OK_STATUS
    assert capsys.readouterr().out == ""  # a shard prints nothing: the merge prints the whole run's line
    shard_files = [str(tmp_path / f"scores.shard-{i}-of-3.json") for i in range(3)]
    assert merge.main([*shard_files[::-1], "--csv", str(tmp_path / "merged.csv"), "-o",
                       str(tmp_path / "summary.json")]) == OK_STATUS
    assert capsys.readouterr().out == single
    assert (tmp_path / "summary.json").read_text() == single
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()


def test_score_shards_need_a_manifest(batch, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        score.main([str(batch["single"]), "--target", str(batch["singer"]), "--num-shards", "2", "--shard-index", "0"])
    assert done.value.code == USAGE_STATUS
    assert "--num-shards: give --manifest PATH" in capsys.readouterr().err


def evaluation(root: Path, out: Path, **changes) -> EvaluationSettings:
    base = dict(sources_dir=root / "sources", targets_dir=root / "targets", out_dir=out, cache_dir=out / "cache",
                wavlm=WAVLM, vocoder=HARMONIC, vocoder_config=TINY_CONFIG, suite=SuiteSettings(metrics=("pitch",)),
                plot_examples=0)
    return EvaluationSettings(**{**base, **changes})


def test_an_evaluation_converted_in_shards_reports_what_one_process_reports(tmp_path):
    for n in range(3):
        path = tmp_path / "sources" / "tenor" / f"line{n}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, sung_vowel(0.5, 150.0 + 20 * n, seed=40 + n), SR)
    for speaker, f0 in (("alto", 240.0), ("bass", 110.0)):
        for n in range(2):
            path = tmp_path / "targets" / speaker / f"{speaker}{n}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, sung_vowel(0.8, f0 * (1 + 0.05 * n), seed=50 + n), SR)
    single = run_evaluation(evaluation(tmp_path, tmp_path / "single"))
    sharded = tmp_path / "sharded"
    for index in range(2):
        part = run_evaluation(evaluation(tmp_path, sharded / f"job{index}", cache_dir=sharded / "cache",
                                         num_shards=2, shard_index=index))
        assert part["n_converted_now"] == 3 and "f0_rmse_cents" not in part  # converts its half, scores nothing
        assert not (sharded / f"job{index}" / "metrics.json").exists()
        entries = json.loads((sharded / f"job{index}" / f"conversions.shard-{index}-of-2.json").read_text())["entries"]
        assert [e["position"] for e in entries] == list(range(index, 6, 2))
    whole = run_evaluation(evaluation(tmp_path, sharded, cache_dir=sharded / "cache"))
    assert whole["n_converted_now"] == 0  # every conversion came from the shards
    differ = {"conversions_dir", "n_converted_now", "pool_seconds"}
    assert {k: v for k, v in whole.items() if k not in differ} == {k: v for k, v in single.items() if k not in differ}
    assert whole["f0_rmse_cents"] is not None and whole["n_conversions"] == 6
    rows = [(sharded / "utterances.csv").read_text(), (tmp_path / "single" / "utterances.csv").read_text()]
    assert rows[0].replace(whole["conversions_dir"], "") == rows[1].replace(single["conversions_dir"], "")
    with pytest.raises(ShardError) as err:
        run_evaluation(evaluation(tmp_path, sharded, num_shards=2, shard_index=2))
    assert "shard index 2 is out of range for 2 shard(s) (0-1)" in str(err.value)


@pytest.mark.slow
def test_the_hydra_app_runs_the_shards_as_a_joblib_multirun(batch, tmp_path):
    out = tmp_path / "hydra"
    done = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "convert.py"), "-m", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "num_shards=2", "shard_index=0,1", f"source={batch['songs']}",
         f"reference={batch['singer']}", f"output={out}", f"wavlm={WAVLM}", f"vocoder={HARMONIC}",
         f"vocoder_config={TINY_CONFIG}", "threads=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert outputs(out) == outputs(batch["single"])
    shard_files = sorted(tmp_path.glob("hydra.manifest.shard-*-of-2.json"))
    assert len(shard_files) == 2
    assert merge.main([*map(str, shard_files), "-o", str(tmp_path / "hydra.manifest.json")]) == OK_STATUS
