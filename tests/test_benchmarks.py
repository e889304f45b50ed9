"""The GPU and floor benchmarks run end to end on the CPU in their tiny mode and report every figure.

The scripts print numbers (speed is not asserted); these tests check that a session lent a GPU can
run them in one command: they finish, write every field, and what they compare is what they say.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_floor  # noqa: E402
import bench_gpu  # noqa: E402

STAGES = {"encode", "f0", "knn", "reselect", "optimise", "vocode"}
OFFLINE_FIELDS = {"source_s", "precision", "status", "wall_s", "rtf", "stage_seconds", "peak_gpu_gb", "peak_rss_gb",
                  "si_snr_db_vs_float32", "vocoder_only_si_snr_db", "feature_cosine_vs_float32"}
STREAM_FIELDS = {"variant", "status", "block_ms", "latency_ms", "steps", "step_ms_median", "step_ms_max",
                 "rtf_median", "rtf_max", "warmup_s", "si_snr_db_vs_eager"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_bench_gpu_tiny_on_cpu_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = run_script("bench_gpu.py", "--tiny", "--device", "cpu", "--threads", "1", "--cache", str(tmp_path),
                      "--json", str(out))
    report = json.loads(out.read_text())
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".partial")] == []
    assert {"device", "torch", "models", "reduced_dtype", "reduced_precision_via", "load_s", "pool_build_s",
            "offline", "streaming", "skipped", "total_s"} <= report.keys()
    assert "network_precision" in report["reduced_precision_via"] and "network_precision" in done.stdout
    assert report["skipped"] == [] and report["total_s"] < 420

    offline = report["offline"]
    assert [(row["source_s"], row["precision"]) for row in offline] == [
        (2.0, "float32"), (2.0, "bfloat16"), (4.0, "float32"), (4.0, "bfloat16")]
    for row in offline:
        assert row["status"] == "ok" and OFFLINE_FIELDS <= row.keys()
        assert STAGES <= row["stage_seconds"].keys()
        assert row["wall_s"] > 0 and row["rtf"] == pytest.approx(row["wall_s"] / row["source_s"])
        assert row["peak_gpu_gb"] is None and row["peak_rss_gb"] > 0  # no GPU memory on the CPU
    for row in offline[1::2]:
        # a real reduced-precision run (not float32 again) whose output stays close to float32's
        assert 20 < row["si_snr_db_vs_float32"] < 100
        assert 20 < row["vocoder_only_si_snr_db"] < 100
        assert 0.99 < row["feature_cosine_vs_float32"] < 1

    streaming = {row["variant"]: row for row in report["streaming"]}
    assert list(streaming) == ["eager", "torch.compile", "cuda-graphs"]
    eager = streaming["eager"]
    assert eager["status"] == "ok" and STREAM_FIELDS <= eager.keys()
    assert eager["latency_ms"] == 280 and eager["block_ms"] == 160  # the StreamingConverter defaults
    assert eager["steps"] >= 3 and 0 < eager["rtf_median"] <= eager["rtf_max"]
    assert eager["rtf_median"] == pytest.approx(eager["step_ms_median"] / eager["block_ms"])
    for variant in ("torch.compile", "cuda-graphs"):  # inductor is not compiled in the CPU tests
        assert streaming[variant]["status"].startswith("skipped")
    assert "streaming eager: block 160 ms, latency 280 ms" in done.stdout


def test_budget_skips_a_part_that_does_not_fit_with_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    budget = bench_gpu.Budget(limit_s=60.0)
    assert budget.allows("offline 60 s float32", 30.0)
    assert not budget.allows("offline 600 s float32", 300.0)
    assert budget.skipped == [line for line in capsys.readouterr().out.splitlines() if line]
    assert budget.skipped[0].startswith("skipped offline 600 s float32: predicted 300 s")


def test_flop_model_scales_the_vocoder_and_sums_the_encoder_chunks() -> None:
    converter = bench_gpu.tiny_converter(torch.device("cpu"))
    flops = bench_floor.FlopModel(converter)
    vocoder = converter.vocoder
    assert vocoder is not None
    frames = 300
    feats = torch.randn(1, frames, converter.encoder.dim)
    counted = bench_floor.counted_flops(
        lambda: vocoder(feats, torch.full((1, frames), 220.0), torch.rand(1, frames, 49)))
    assert flops.vocoder_per_frame * frames == pytest.approx(counted, rel=1e-3)  # FLOPs linear in frames
    # blocks add their margins on both sides of every inner edge
    converter.block_seconds = 2.0
    assert flops.vocoder(300) == pytest.approx(flops.vocoder_per_frame * (300 + 2 * 2 * vocoder.context_frames))

    chunk = converter.encoder.chunk_samples
    one = flops.encoder(chunk)
    assert one > 0 and flops.encoder(2 * chunk + 16000) == 2 * one + flops.encoder(16000)


@pytest.mark.slow
def test_bench_floor_tiny_reports_ratios_and_streaming_rtfs(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    done = run_script("bench_floor.py", "--tiny", "--threads", "1", "--cache", str(tmp_path), "--json", str(out))
    report = json.loads(out.read_text())
    assert report["matmul_gflops"] > 0 and report["encoder_gflop_per_s"] > 0 and report["vocoder_gflop_per_s"] > 0
    jobs = {row["job"]: row for row in report["jobs"]}
    assert list(jobs) == ["warm", "cold"]
    for row in jobs.values():
        assert row["floor_s"] == pytest.approx(row["neural_floor_s"] + row["harvest_floor_s"])
        assert row["harvest_floor_s"] == pytest.approx(row["harvest_1thread_s"] / report["threads"])
        assert row["ratio"] == pytest.approx(row["wall_s"] / row["floor_s"])
        assert math.isfinite(row["ratio"]) and row["neural_gflop"] > 0
    assert "harmonics" in jobs["cold"]["stage_seconds"]  # the cold job encodes its reference
    assert "harmonics" not in jobs["warm"]["stage_seconds"]  # the warm one uses the pool as it is
    assert [row["latency_ms"] for row in report["streaming"]] == [280, 360, 440, 600]
    assert all(0 < row["rtf_median"] <= row["rtf_max"] for row in report["streaming"])
    assert all(0 < row["uncached_rtf_median"] <= row["uncached_rtf_max"] for row in report["streaming"])
    assert "| warm |" in done.stdout and "| cold |" in done.stdout


@pytest.mark.slow
def test_bench_streaming_tiny_prints_the_rtf_per_latency_for_both_steps(tmp_path: Path) -> None:
    out = tmp_path / "streaming.json"
    done = run_script("bench_streaming.py", "--tiny", "--rtf-only", "--seconds", "1.5", "--cache", str(tmp_path),
                      "--json", str(out))
    rows = json.loads(out.read_text())["models"]["tiny"]["rtf"]
    assert [row["latency_ms"] for row in rows] == [280, 360, 440, 600]
    for row in rows:
        assert 0 < row["rtf_median"] <= row["rtf_max"] and 0 < row["uncached_rtf_median"] <= row["uncached_rtf_max"]
    assert "| 160 | 280 |" in done.stdout and "uncached RTF median" in done.stdout


@pytest.mark.slow
def test_bench_shards_tiny_times_both_runs_and_finds_the_outputs_byte_equal(tmp_path: Path) -> None:
    out = tmp_path / "shards.json"
    run_script("bench_shards.py", "--tiny", "--files", "4", "--seconds", "0.5", "--shards", "2", "--threads", "1",
               "--work", str(tmp_path / "work"), "--json", str(out))
    report = json.loads(out.read_text())
    assert report["byte_equal"] is True and report["outputs"] == 4 and report["shards"] == 2
    assert report["single_process_s"] > 0 and report["sharded_s"] > 0
    assert report["speedup"] == pytest.approx(report["single_process_s"] / report["sharded_s"], abs=0.01)
    merged = json.loads((tmp_path / "work" / "merged.json").read_text())
    assert merged["shard"] is None and [e["status"] for e in merged["entries"]] == ["converted"] * 4


@pytest.mark.slow
def test_bench_onnx_tiny_compares_both_backends_with_their_deviation(tmp_path: Path) -> None:
    out = tmp_path / "onnx.json"
    done = run_script("bench_onnx.py", "--tiny", "--threads", "1", "--repeats", "1", "--cache", str(tmp_path),
                      "--json", str(out))
    report = json.loads(out.read_text())
    rows = report["rows"]
    variants = [(row["model"], row["backend"], row["precision"], row["optimization"], row["threads"]) for row in rows]
    assert variants == [("wavlm", "pytorch", "float32", None, 1), ("vocoder", "pytorch", "float32", None, 1)] + [
        (model, "onnxruntime", precision, level, 1)
        for precision, level in (("float32", "basic"), ("float32", "all"), ("int8", "all"))
        for model in ("wavlm", "vocoder")]
    for row in rows:
        assert row["s_per_audio_s"] > 0 and row["first_call_s"] > 0
        if row["backend"] == "pytorch":
            assert row["si_snr_db"] is None
        elif row["precision"] == "float32":
            assert row["si_snr_db"] >= 60 and row["max_abs_diff"] < 1e-3
        else:  # int8: a real deviation, measured
            assert 15 < row["si_snr_db"] < 80
    assert "| wavlm | onnxruntime | int8 | all | 1 |" in done.stdout
    assert sorted(path.name for path in (tmp_path / "onnx-tiny").iterdir()) == sorted(
        f"{part}{variant}.onnx{side}" for part in ("wavlm", "vocoder") for variant in ("", ".int8")
        for side in ("", ".json"))
