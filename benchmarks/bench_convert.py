"""Speed and memory of one conversion with the full-size architectures (random weights).

    python benchmarks/bench_convert.py [--source-seconds 30] [--reference-seconds 300]

Speed does not depend on the weights' values, so WavLM-Large and the harmonic HiFi-GAN are built
with random weights (`knnsvc.hub.knn_svc(pretrained=False)`), offline. The audio is synthetic
singing (notes with vibrato and breaths), so Harvest and the matching see realistic voicing. One
caveat: the number of weight-optimisation iterations depends on the features, which are not those
of the released WavLM; the per-iteration cost is what this measures reliably.

Two phases, each in a fresh process so that peak RSS is measured per phase:

- cold: the reference pool is encoded (WavLM + Harvest + harmonics) and written to the pool cache,
  then the source is converted;
- warm: the pool is read from the cache, then the source is converted.

Model construction is excluded; audio writing is included. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knnsvc.audio import save_audio  # noqa: E402
from knnsvc.config import SAMPLE_RATE  # noqa: E402
from knnsvc.hub import knn_svc  # noqa: E402
from knnsvc.pool import ReferencePool, cache_key  # noqa: E402

STAGES = [
    ("ref_encode", "reference: WavLM (layer 6)"),
    ("ref_f0", "reference: Harvest F0"),
    ("ref_harmonics", "reference: spectrum + harmonic amplitudes"),
    ("ref_wall", "reference pool, wall clock"),
    ("pool_io", "pool: save (cold) / load (warm)"),
    ("encode", "source: WavLM (layer 6)"),
    ("f0", "source: Harvest F0"),
    ("knn", "kNN top-32"),
    ("reselect", "reselection (passes A + B)"),
    ("optimise", "weight optimisation (passes A + B)"),
    ("vocode", "vocoder (harmonic HiFi-GAN + U(t))"),
    ("write", "write WAV"),
]


def synthetic_singing(seconds: float, seed: int, low_hz: float, high_hz: float) -> torch.Tensor:
    """Notes of 0.25-0.8 s with vibrato, harmonic spectra and short noisy breaths between phrases."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    f0 = np.zeros(n)
    position = 0
    while position < n:
        length = int(rng.uniform(0.25, 0.8) * SAMPLE_RATE)
        if rng.random() < 0.15:
            position += int(0.2 * SAMPLE_RATE)  # breath: unvoiced
            continue
        f0[position : position + length] = np.exp(rng.uniform(np.log(low_hz), np.log(high_hz)))
        position += length
    t = np.arange(n) / SAMPLE_RATE
    f0 *= 1 + 0.015 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = f0 > 0
    wav = np.zeros(n)
    for k in range(1, 30):
        audible = voiced & (k * f0 < SAMPLE_RATE / 2)
        wav += audible * (0.25 / k**1.2) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    wav += 0.01 * rng.standard_normal(n) * (1 + 3 * ~voiced)
    return torch.from_numpy((0.6 * wav / np.abs(wav).max()).astype(np.float32))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_phase(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    options = {} if not args.no_post_opt else {"concat_weight": None, "optimise_weights": False}
    converter = knn_svc(pretrained=False, progress=False, device=args.device, precision=args.precision, **options)
    source = synthetic_singing(args.source_seconds, seed=1, low_hz=220, high_hz=520)
    reference = synthetic_singing(args.reference_seconds, seed=2, low_hz=140, high_hz=380)
    cache = Path(args.cache_dir)
    audio_file = cache / "reference.npy"
    if args.phase == "cold":
        np.save(audio_file, reference.numpy())
    key = cache_key([audio_file], converter.encoder_id, converter.pool_settings())
    pool_file = cache / f"pool-{key}.pt"
    times: dict[str, float] = {}
    rss_before = peak_rss_mb()

    cpu_start = time.process_time()
    start = time.perf_counter()
    if args.phase == "cold":
        converter.timings.clear()
        tick = time.perf_counter()
        pool = converter.build_pool([reference], names=["reference"])
        times["ref_wall"] = time.perf_counter() - tick
        times["ref_encode"] = converter.timings.get("encode", 0.0)
        times["ref_f0"] = converter.timings.get("f0", 0.0)
        times["ref_harmonics"] = converter.timings.get("harmonics", 0.0)
        tick = time.perf_counter()
        pool.save(pool_file, settings=converter.pool_settings())
        times["pool_io"] = time.perf_counter() - tick
    else:
        tick = time.perf_counter()
        pool = ReferencePool.load(pool_file)
        times["pool_io"] = time.perf_counter() - tick
    converter.timings.clear()
    result = converter.match(converter.analyse(source), pool)
    wav = converter.vocode(result)
    tick = time.perf_counter()
    save_audio(cache / f"out_{args.phase}.wav", wav)
    times["write"] = time.perf_counter() - tick
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    for stage in ("encode", "f0", "knn", "reselect", "optimise", "vocode"):
        times[stage] = converter.timings.get(stage, 0.0)
    return {
        "phase": args.phase,
        "times": times,
        "total": total,
        "cpu": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_model_mb": rss_before,
        "pool_frames": pool.num_frames,
        "source_frames": result.feats.shape[0],
    }


def table(cold: dict, warm: dict, args: argparse.Namespace) -> str:
    src, ref = args.source_seconds, args.reference_seconds
    lines = [
        f"Full-size WavLM-Large + harmonic HiFi-GAN (random weights), {src:g} s source, {ref:g} s reference, "
        f"{args.precision}, {'no_post_opt' if args.no_post_opt else 'post_opt_0.2'}, device {args.device}, "
        f"{args.threads} thread(s), {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| stage | cold (s) | warm (s) |",
        "|---|---:|---:|",
    ]
    for key, label in STAGES:
        c, w = cold["times"].get(key), warm["times"].get(key)
        lines.append(f"| {label} | {'' if c is None else f'{c:.2f}'} | {'' if w is None else f'{w:.2f}'} |")
    ref_encode = cold["times"]["ref_wall"]  # WavLM and Harvest overlap: the stages sum to more
    lines += [
        f"| **end to end** | **{cold['total']:.2f}** | **{warm['total']:.2f}** |",
        f"| real-time factor (end to end / {src:g} s) | {cold['total'] / src:.2f} | {warm['total'] / src:.2f} |",
        f"| process CPU time, all threads (s) | {cold['cpu']:.2f} | {warm['cpu']:.2f} |",
        f"| peak RSS (MB) | {cold['peak_rss_mb']:.0f} | {warm['peak_rss_mb']:.0f} |",
        "",
        "WavLM and Harvest run concurrently, so their stage times overlap and add up to more than the "
        "wall-clock total.",
        f"Cold reference encoding (wall clock): {ref_encode:.1f} s for {ref:g} s = {ref_encode / ref:.3f} s per "
        f"second of reference (target <= 0.7). Warm RTF {warm['total'] / src:.2f} (target <= 1.5), warm peak RSS "
        f"{warm['peak_rss_mb'] / 1024:.2f} GB (target <= 4).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-seconds", type=float, default=30.0)
    parser.add_argument("--reference-seconds", type=float, default=300.0)
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64")
    parser.add_argument("--no-post-opt", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--phase", choices=("cold", "warm"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args)))
        return 0
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = {}
    with tempfile.TemporaryDirectory(prefix="knnsvc_bench_") as cache_dir:
        for phase in ("cold", "warm"):
            done = subprocess.run(
                [sys.executable, __file__, *forwarded, "--phase", phase, "--cache-dir", cache_dir],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                return done.returncode
            results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{phase}: {results[phase]['total']:.1f} s", file=sys.stderr)
    print(table(results["cold"], results["warm"], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
