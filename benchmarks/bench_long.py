"""Song-scale speed and memory: long sources against a long reference, full-size models.

    python benchmarks/bench_long.py [--sources 1,5,10,20] [--reference-minutes 10] [--block-seconds 30]
                                    [--whole 0] [--cache DIR]

Each conversion runs in a fresh process through the CLI's own functions (`load_converter`,
`cli_reference_pool`, `convert_file`), with WavLM-Large and the harmonic vocoder as random-weight
checkpoint files in the official formats (speed and memory do not depend on the values) and
synthetic singing as audio. A sampler thread records the peak resident memory per stage. The
first run is cold (the reference is encoded into an empty per-file pool cache), the others warm
(the pool comes from the cache). `--whole M` adds runs with ``--block-seconds 0`` (everything in
one block, the reference's behaviour) for the first M source lengths; whole-recording Harvest
grows about quadratically, so pair it with a short `--reference-minutes`. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CACHE, MemorySampler, full_size_checkpoints, rss_gb, singing_file  # noqa: E402

STAGES = ("load", "reference", "encode", "match", "vocode")


def child(args: argparse.Namespace) -> None:
    import torch

    from knnsvc.apps import common, convert
    from knnsvc.conversion import Options, convert_file

    torch.set_num_threads(args.threads)
    with MemorySampler() as sampler, tempfile.TemporaryDirectory(dir=args.cache) as work:
        cli = convert.build_parser().parse_args(
            [str(args.source), str(args.reference), "--wavlm", str(args.wavlm), "--vocoder", str(args.vocoder),
             "--block-seconds", str(args.block_seconds), "--pool-cache", str(args.pool_cache), "-q"]
        )
        cli.match_config = common.match_config(cli, convert.build_parser())
        cli.device = torch.device("cpu")
        baseline = rss_gb()
        start = time.perf_counter()
        sampler.stage = "load"
        converter = common.load_converter(cli)
        loaded = time.perf_counter()

        def progress(stage: str, done: int, total: int) -> None:
            sampler.stage = stage

        sampler.stage = "reference"
        pool, _ = common.reference_pool(converter, args.reference, [args.reference], args.pool_cache, progress)
        pooled = time.perf_counter()
        reference_timings = dict(converter.timings)
        converter.timings = {}
        sampler.stage = "encode"
        convert_file(converter, pool, args.source, Path(work) / "out.wav", Options(), progress)
        done = time.perf_counter()
    print(json.dumps({
        "baseline_gb": baseline,
        "load_s": loaded - start,
        "reference_s": pooled - loaded,
        "convert_s": done - pooled,
        "stage_seconds": converter.timings,
        "reference_seconds": reference_timings,
        "peak_gb": sampler.peak,
        "stage_peaks_gb": sampler.peaks,
        "pool_frames": pool.num_frames,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="1,5,10,20", help="source lengths in minutes")
    parser.add_argument("--reference-minutes", type=float, default=10.0)
    parser.add_argument("--block-seconds", type=float, default=30.0)
    parser.add_argument("--whole", type=int, default=0,
                        help="also run --block-seconds 0 for the first N lengths (the reference is then analysed "
                        "whole too: with 10 min of reference that needs over 24 GB)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("source", "reference", "wavlm", "vocoder", "pool-cache"):
        parser.add_argument(f"--{name}", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    wavlm, vocoder = full_size_checkpoints(args.cache)
    reference = singing_file(args.cache, "reference", args.reference_minutes * 60, seed=2, low_hz=140, high_hz=380)
    minutes = [float(m) for m in args.sources.split(",")]
    runs = [(m, args.block_seconds) for m in minutes] + [(m, 0.0) for m in minutes[: args.whole]]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.cache) as pools:
        for source_minutes, block in runs:
            source = singing_file(args.cache, "source", source_minutes * 60, seed=1, low_hz=220, high_hz=520)
            pool_cache = Path(pools) / f"block{block:g}"  # blocking changes F0 settings: one cache each
            cold = not pool_cache.exists()
            command = [sys.executable, __file__, "--child", "--source", str(source), "--reference", str(reference),
                       "--wavlm", str(wavlm), "--vocoder", str(vocoder), "--pool-cache", str(pool_cache),
                       "--block-seconds", str(block), "--threads", str(args.threads), "--cache", str(args.cache)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append((source_minutes, block, cold, None, done.stderr.strip().splitlines()[-1:]))
                print(f"{source_minutes:g} min, blocks {block:g} s: FAILED {done.stderr[-300:]}", file=sys.stderr)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((source_minutes, block, cold, result, None))
            print(f"{source_minutes:g} min, blocks {block:g} s ({'cold' if cold else 'warm'}): "
                  f"peak {result['peak_gb']:.2f} GB, convert {result['convert_s']:.0f} s", file=sys.stderr)

    print(f"\nreference {args.reference_minutes:g} min; peak RSS in GB (models included); seconds\n")
    print("| source | blocks | pool | peak RSS | load | reference | encode | match | vocode | convert s | s per s |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for source_minutes, block, cold, result, error in rows:
        label = f"{block:g} s" if block else "whole"
        if result is None:
            print(f"| {source_minutes:g} min | {label} | {'cold' if cold else 'warm'} | failed: {error} |")
            continue
        peaks = result["stage_peaks_gb"]
        cells = [f"{peaks.get(stage, 0.0):.2f}" for stage in STAGES]
        print(f"| {source_minutes:g} min | {label} | {'cold' if cold else 'warm'} | {result['peak_gb']:.2f} | "
              + " | ".join(cells)
              + f" | {result['convert_s']:.0f} | {result['convert_s'] / (source_minutes * 60):.3f} |")
    print("\nstage seconds (last run of each): ")
    for source_minutes, block, _cold, result, _ in rows:
        if result is not None:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in sorted(result["stage_seconds"].items()))
            print(f"- {source_minutes:g} min, blocks {block:g}: {stages}; model load {result['load_s']:.1f} s, "
                  f"reference {result['reference_s']:.1f} s")


if __name__ == "__main__":
    main()
