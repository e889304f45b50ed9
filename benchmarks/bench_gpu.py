"""The GPU path, measured in one command: offline conversion, reduced precision, streaming steps.

    python benchmarks/bench_gpu.py --device cuda --json gpu.json          # full size, under 8 minutes
    python benchmarks/bench_gpu.py --tiny --device cpu --json tiny.json   # tiny golden models, seconds

Full size: WavLM-Large (the 6 blocks in use) and the harmonic HiFi-GAN with random weights
(`knnsvc.hub.knn_svc(pretrained=False)`: speed and memory do not depend on the values), synthetic
singing as audio. It measures, in this order:

1. offline conversion (`analyse`, `match`, `vocode_blocks`) of a 60 s and a 10 min source against
   a 2-minute reference pool: per-stage seconds (`converter.timings`, which synchronises CUDA),
   wall seconds, real-time factor, peak GPU memory (`torch.cuda.max_memory_allocated`) and peak
   resident memory; the networks first in float32, then in bfloat16 (or `--dtype float16`)
   through the library's named option (`KnnSvc.network_precision`, `--network-precision` on the
   commands: autocast around WavLM and the vocoder only; matching stays as configured). For the
   reduced precision it prints the SI-SNR of the output against the
   float32 output (end to end, where WavLM's rounding can change chosen neighbours), of the
   float32 match vocoded in reduced precision (the vocoder alone), and the mean cosine of the
   WavLM features against float32;
2. streaming (`StreamingConverter` with its defaults: 280 ms latency) of `--stream-seconds` of the
   source, after a warm-up stream: seconds per step and step real-time factor (median, max),
   eager, with the vocoder under `torch.compile`, and under ``torch.compile(mode="reduce-overhead")``
   (CUDA graphs); a variant that fails says "not available" and why.

A global budget (`--budget-s`, default 420) skips every part predicted to end beyond it, with a
line saying so, so the whole script stays under 8 minutes; `--json` is rewritten after each part,
so a run stopped from outside (``timeout 470 python ...``) keeps what it measured. `--tiny` runs the golden tiny
checkpoints on seconds of audio (what the tests run, on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_blocks import si_snr_db  # noqa: E402
from common import DEFAULT_CACHE, MemorySampler, singing_file  # noqa: E402

from knnsvc.audio import load_audio  # noqa: E402
from knnsvc.checkpoints import build_converter  # noqa: E402
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE  # noqa: E402
from knnsvc.hub import knn_svc  # noqa: E402
from knnsvc.pipeline import KnnSvc  # noqa: E402
from knnsvc.pool import ReferencePool  # noqa: E402
from knnsvc.streaming import StreamingConverter  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
REDUCED_VIA = ("KnnSvc.network_precision (--network-precision): autocast around WavLM and the vocoder; "
               "matching keeps its own precision")


@dataclass
class Sizes:
    """Seconds of audio: the offline sources, the reference pool, the stream, the warm-up source."""

    sources_s: list[float]
    pool_s: float
    stream_s: float
    warmup_s: float


FULL = Sizes(sources_s=[60.0, 600.0], pool_s=120.0, stream_s=20.0, warmup_s=4.0)
TINY = Sizes(sources_s=[2.0, 4.0], pool_s=6.0, stream_s=1.0, warmup_s=1.0)
COMPILE_ALLOWANCE_S = 90.0
"""Predicted compilation time of a `torch.compile` variant, for the budget."""


# ----------------------------------------------------------------------------- models and audio
def tiny_converter(device: torch.device) -> KnnSvc:
    """The golden tiny WavLM and harmonic vocoder (the tests' checkpoints), loaded the CLI's way."""
    return build_converter(GOLDEN / "wavlm_tiny.pt", GOLDEN / "vocoder_harmonic_tiny.pt",
                           GOLDEN / "vocoder_tiny_config.json", device=device, progress=False)


def full_converter(device: torch.device) -> KnnSvc:
    """WavLM-Large (6 blocks) and the harmonic vocoder with random weights, built in memory."""
    return knn_svc(pretrained=False, progress=False, device=device)


def singing(cache: Path, role: str, seconds: float) -> torch.Tensor:
    """(L,) synthetic singing: sources sing higher (220-520 Hz) than the reference (140-380 Hz)."""
    low, high, seed = (220.0, 520.0, 1) if role == "source" else (140.0, 380.0, 2)
    return load_audio(singing_file(cache, role, seconds, seed=seed, low_hz=low, high_hz=high))


# ----------------------------------------------------------------------------- measuring
def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def networks_in(converter: KnnSvc, dtype: torch.dtype | None) -> Iterator[None]:
    """The converter's networks in `dtype` (None = float32) for the duration of the block."""
    before = converter.network_precision
    converter.network_precision = "float32" if dtype is None else str(dtype).removeprefix("torch.")
    try:
        yield
    finally:
        converter.network_precision = before


def peak_gpu_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None


def convert(converter: KnnSvc, wav: torch.Tensor, pool: ReferencePool,
            dtype: torch.dtype | None) -> dict[str, Any]:
    """One offline conversion, timed: the networks under `dtype` autocast (None = float32).

    Returns:
        wall_s, stage_seconds, peak_gpu_gb, peak_rss_gb, and (not printed) the output waveform,
        the match result and the source features (for the comparisons against float32).
    """
    device = converter.device
    converter.timings = {}
    peak_gpu_reset(device)
    with MemorySampler() as memory:
        synchronise(device)
        start = time.perf_counter()
        with networks_in(converter, dtype):
            source = converter.analyse(wav)
        result = converter.match(source, pool)
        with networks_in(converter, dtype):
            output = torch.cat(list(converter.vocode_blocks(result)))
        synchronise(device)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "stage_seconds": dict(converter.timings), "peak_gpu_gb": peak_gpu_gb(device),
            "peak_rss_gb": memory.peak, "output": output, "result": result, "source": source}


def vocode(converter: KnnSvc, result: Any, dtype: torch.dtype | None) -> torch.Tensor:
    """The waveform of a match result, the vocoder under `dtype` autocast."""
    with networks_in(converter, dtype):
        return torch.cat(list(converter.vocode_blocks(result)))


def feature_cosine(a: Any, b: Any) -> float:
    """Mean cosine between two sources' WavLM features (T, D), compared block by block."""
    frames = min(a.num_frames, b.num_frames)
    total = 0.0
    for start in range(0, frames, 4096):
        stop = min(start + 4096, frames)
        total += float(torch.nn.functional.cosine_similarity(a.feats[start:stop], b.feats[start:stop], dim=1).sum())
    return total / max(frames, 1)


def stream_steps(converter: KnnSvc, pool: ReferencePool, wav: torch.Tensor,
                 **options: Any) -> tuple[StreamingConverter, torch.Tensor, int]:
    """Stream `wav` block by block; returns (streamer, output, steps taken by `push`).

    The steps of the final `flush` (a partial block) are counted apart: they are not the steady state.
    """
    streamer = StreamingConverter(converter, pool, **options)
    chunk = streamer.block * HOP_LENGTH
    outputs = [streamer.push(wav[i : i + chunk]) for i in range(0, wav.numel(), chunk)]
    pushed = len(streamer.compute_seconds)
    outputs.append(streamer.flush())
    return streamer, torch.cat(outputs), pushed


def step_summary(streamer: StreamingConverter, pushed: int) -> dict[str, Any]:
    """Median and max seconds per step of `push` and the step real-time factor (step / block)."""
    block_s = streamer.block * HOP_LENGTH / SAMPLE_RATE
    steps = streamer.compute_seconds[:pushed] or streamer.compute_seconds
    return {
        "block_ms": 1000.0 * block_s,
        "latency_ms": streamer.algorithmic_latency_ms,
        "steps": len(steps),
        "step_ms_median": 1000.0 * statistics.median(steps),
        "step_ms_max": 1000.0 * max(steps),
        "rtf_median": statistics.median(steps) / block_s,
        "rtf_max": max(steps) / block_s,
    }


@contextmanager
def vocoder_swapped(converter: KnnSvc, vocoder: Any) -> Iterator[None]:
    """Run the converter with another (e.g. compiled) vocoder, then put the original back."""
    original = converter.vocoder
    converter.vocoder = vocoder
    try:
        yield
    finally:
        converter.vocoder = original


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Write the report (so far) as standard JSON, atomically: a killed run leaves the last whole file."""
    if path is None:
        return
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(json_safe(report), indent=1))
    os.replace(partial, path)


def cpu_name() -> str:
    """The CPU's model name (Linux), or the platform's word for it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0]}, {len(names)} logical CPUs" if names else platform.processor()


def json_safe(value: Any) -> Any:
    """Infinite or NaN floats as strings, so the JSON file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


# ----------------------------------------------------------------------------- the run
class Budget:
    """Seconds since the start against a limit; `allows` says whether a part predicted to take
    `seconds` still fits, and records a line for every part it refuses."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.start = time.perf_counter()
        self.skipped: list[str] = []

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, part: str, seconds: float) -> bool:
        if self.elapsed + seconds <= self.limit_s:
            return True
        line = (f"skipped {part}: predicted {seconds:.0f} s, {self.elapsed:.0f} s used of the "
                f"{self.limit_s:.0f} s budget (--budget-s)")
        self.skipped.append(line)
        print(line, flush=True)
        return False


def offline_part(converter: KnnSvc, pool: ReferencePool, cache: Path, seconds_list: list[float],
                 dtype: torch.dtype, budget: Budget) -> list[dict[str, Any]]:
    """Float32 and reduced-precision conversions of every source length (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    seconds_per_second: float | None = None  # wall per second of audio of the last float32 run
    for seconds in seconds_list:
        wav: torch.Tensor | None = None  # made when a run needs it (10 minutes take seconds to synthesise)
        float32: dict[str, Any] | None = None
        for name, precision in (("float32", None), (str(dtype).removeprefix("torch."), dtype)):
            row: dict[str, Any] = {"source_s": seconds, "precision": name, "status": "ok"}
            rows.append(row)
            predicted = 0.0 if seconds_per_second is None else seconds_per_second * seconds
            if float32 is not None:
                predicted = float32["wall_s"] + (float32["stage_seconds"].get("vocode", 0.0))
            if precision is not None and float32 is None:
                row["status"] = "skipped: no float32 run to compare with"
                continue
            if not budget.allows(f"offline {seconds:g} s {name}", predicted):
                row["status"] = "skipped: over the budget"
                continue
            if wav is None:
                wav = singing(cache, "source", seconds)
            run = convert(converter, wav, pool, precision)
            row.update({key: run[key] for key in ("wall_s", "stage_seconds", "peak_gpu_gb", "peak_rss_gb")})
            row["rtf"] = run["wall_s"] / seconds
            if float32 is None:
                float32 = run
                seconds_per_second = run["wall_s"] / seconds
                row.update(si_snr_db_vs_float32=None, vocoder_only_si_snr_db=None, feature_cosine_vs_float32=None)
            else:
                row["si_snr_db_vs_float32"] = si_snr_db(run["output"], float32["output"])
                row["vocoder_only_si_snr_db"] = si_snr_db(vocode(converter, float32["result"], precision),
                                                          float32["output"])
                row["feature_cosine_vs_float32"] = feature_cosine(run["source"], float32["source"])
                run["source"].close()
            print(offline_line(row), flush=True)
        if float32 is not None:
            float32["source"].close()
    return rows


def streaming_part(converter: KnnSvc, pool: ReferencePool, wav: torch.Tensor, warmup: torch.Tensor,
                   compile_variants: list[str], backend: str, budget: Budget) -> list[dict[str, Any]]:
    """Streaming steps at the default latency: eager, then each `torch.compile` variant of the vocoder."""
    rows: list[dict[str, Any]] = []
    stream_wall: float | None = None
    eager_output: torch.Tensor | None = None
    device = converter.device
    for variant in ["eager", *compile_variants]:
        row: dict[str, Any] = {"variant": variant, "status": "ok"}
        rows.append(row)
        if variant == "cuda-graphs" and device.type != "cuda":
            row["status"] = "not available: CUDA graphs need a CUDA device"
            print(f"streaming {variant}: {row['status']}", flush=True)
            continue
        predicted = (stream_wall or 0.0) + (COMPILE_ALLOWANCE_S if variant != "eager" and backend == "inductor"
                                            else 0.0)
        if not budget.allows(f"streaming {variant}", predicted):
            row["status"] = "skipped: over the budget"
            continue
        try:
            vocoder: Any = converter.vocoder
            if variant != "eager":
                torch.compiler.reset()  # each variant compiles afresh, with its own mode
            if variant == "torch.compile":
                vocoder = torch.compile(vocoder, backend=backend)
            elif variant == "cuda-graphs":
                vocoder = torch.compile(vocoder, backend=backend, mode="reduce-overhead")
            with vocoder_swapped(converter, vocoder):
                began = time.perf_counter()
                stream_steps(converter, pool, warmup)  # compiles, tunes kernels, records graphs
                row["warmup_s"] = time.perf_counter() - began
                streamer, output, pushed = stream_steps(converter, pool, wav)
                stream_wall = stream_wall or time.perf_counter() - began  # eager: warm-up and stream
        except Exception as err:  # noqa: BLE001 - any failure of a variant is a result to report
            message = (str(err).strip().splitlines() or [""])[0][:200]
            row["status"] = f"not available: {type(err).__name__}: {message}"
            print(f"streaming {variant}: {row['status']}", flush=True)
            continue
        row.update(step_summary(streamer, pushed))
        if eager_output is None:
            eager_output = output
            row["si_snr_db_vs_eager"] = None
        else:
            row["si_snr_db_vs_eager"] = si_snr_db(output, eager_output)
        print(streaming_line(row), flush=True)
    return rows


def offline_line(row: dict[str, Any]) -> str:
    stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["stage_seconds"].items()))
    gpu = "" if row["peak_gpu_gb"] is None else f", peak GPU {row['peak_gpu_gb']:.2f} GB"
    line = (f"offline {row['source_s']:g} s, {row['precision']}: {row['wall_s']:.2f} s (RTF {row['rtf']:.3f})"
            f"{gpu}, peak RSS {row['peak_rss_gb']:.2f} GB; stages: {stages}")
    if row.get("si_snr_db_vs_float32") is not None:
        line += (f"; vs float32: SI-SNR {row['si_snr_db_vs_float32']:.1f} dB end to end, "
                 f"{row['vocoder_only_si_snr_db']:.1f} dB vocoder alone, "
                 f"feature cosine {row['feature_cosine_vs_float32']:.5f}")
    return line


def streaming_line(row: dict[str, Any]) -> str:
    line = (f"streaming {row['variant']}: block {row['block_ms']:.0f} ms, latency {row['latency_ms']:.0f} ms, "
            f"{row['steps']} steps, step {row['step_ms_median']:.1f} ms median / {row['step_ms_max']:.1f} ms max, "
            f"RTF {row['rtf_median']:.3f} / {row['rtf_max']:.3f}, warm-up {row['warmup_s']:.1f} s")
    if row.get("si_snr_db_vs_eager") is not None:
        line += f", SI-SNR vs eager {row['si_snr_db_vs_eager']:.1f} dB"
    return line


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="golden tiny models and seconds of audio (tests)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16",
                        help="reduced precision of the networks (autocast)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip parts predicted to end later")
    parser.add_argument("--sources", help="source lengths in seconds, comma-separated (default 60,600; tiny 2,4)")
    parser.add_argument("--stream-seconds", type=float, help="audio streamed per variant (default 20; tiny 1)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile variants of the streaming vocoder (auto: on CUDA only; on a CPU "
                        "inductor compiles for minutes)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (the tests use 'eager' to run the path quickly)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the synthetic audio is kept")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    budget = Budget(args.budget_s)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    sizes = TINY if args.tiny else FULL
    if args.sources:
        sizes = replace(sizes, sources_s=[float(s) for s in args.sources.split(",")])
    if args.stream_seconds:
        sizes = replace(sizes, stream_s=args.stream_seconds)
    dtype = getattr(torch, args.dtype)
    args.cache.mkdir(parents=True, exist_ok=True)
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_name()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "models": "tiny golden checkpoints" if args.tiny else "full size, random weights (WavLM-Large 6 blocks, "
                  "harmonic HiFi-GAN)",
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "reduced_dtype": args.dtype,
        "reduced_precision_via": REDUCED_VIA,
        "pool_s": sizes.pool_s,
    }
    print(f"{report['models']} on {report['device']}, torch {report['torch']}; reduced precision: {REDUCED_VIA}",
          flush=True)
    began = time.perf_counter()
    converter = tiny_converter(device) if args.tiny else full_converter(device)
    synchronise(device)
    report["load_s"] = time.perf_counter() - began

    began = time.perf_counter()
    pool = converter.build_pool([singing(args.cache, "reference", sizes.pool_s)])
    report["pool_build_s"] = time.perf_counter() - began
    print(f"models built in {report['load_s']:.1f} s; {sizes.pool_s:g} s pool in {report['pool_build_s']:.1f} s",
          flush=True)
    warmup = singing(args.cache, "source", sizes.warmup_s)
    for precision in (None, dtype):  # first calls: CUDA context, kernel choice, autocast caches
        convert(converter, warmup, pool, precision)["source"].close()

    write_json(args.json, report)
    report["offline"] = offline_part(converter, pool, args.cache, sizes.sources_s, dtype, budget)
    write_json(args.json, report)
    stream_wav = singing(args.cache, "source", sizes.sources_s[0])[: round(sizes.stream_s * SAMPLE_RATE)]
    variants = ["torch.compile", "cuda-graphs"] if compile_on else []
    report["streaming"] = streaming_part(converter, pool, stream_wav, warmup, variants, args.compile_backend, budget)
    if not compile_on:
        for variant in ("torch.compile", "cuda-graphs"):
            report["streaming"].append({"variant": variant, "status": "skipped: --compile off (auto: CUDA only)"})
    report["skipped"] = budget.skipped
    report["total_s"] = budget.elapsed
    print(f"total {report['total_s']:.0f} s" + (f"; {len(budget.skipped)} part(s) skipped" if budget.skipped else ""))
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
