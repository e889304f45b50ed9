"""Song-scale speed and memory: long sources against a long reference, full-size or tiny models.

    python benchmarks/bench_long.py [--sources 1,5,10,20] [--reference-minutes 10] [--block-seconds 30]
                                    [--whole 0] [--cache DIR] [--tiny] [--f0 harvest|dio|...]
                                    [--malloc-arena-max N] [--trim]

Memory only, to an hour, in minutes instead of hours (what grows with the length of the audio
stands out, as the models are small and the per-frame arrays keep their size):

    nice -n 19 python benchmarks/bench_long.py --tiny --f0 dio --sources 5,20,60 --reference-minutes 2 \
        --vocode-blocks 4

Each conversion runs in a fresh process through the CLI's own functions (`load_converter`,
`cli_reference_pool`, `convert_file`), with WavLM-Large and the harmonic vocoder as random-weight
checkpoint files in the official formats (speed and memory do not depend on the values) and
synthetic singing as audio. A sampler thread records the peak resident memory per stage. The
first run is cold (the reference is encoded into an empty per-file pool cache), the others warm
(the pool comes from the cache). `--whole M` adds runs with ``--block-seconds 0`` (everything in
one block, the reference's behaviour) for the first M source lengths; whole-recording Harvest
grows about quadratically, so pair it with a short `--reference-minutes`. Prints a Markdown table.

`--tiny` uses the golden tiny checkpoints of tests/golden instead (WavLM of width 32, the
harmonic vocoder of that width); `--f0 dio` is the fast F0 extractor. Besides the sampled peaks
(every 20 ms), each run records the kernel's exact high-water mark per stage (VmHWM, reset as a
stage begins) and the resident memory each stage leaves behind, over finer stages: reading the
source (`read`), WavLM with F0 beside it (`encode`), the frame energies (`energy`), the nearest
neighbours (`match`), the weight optimisation and harmonic amplitudes (`optimise`), the vocoder and
writer (`vocode`). `--trim` calls glibc's ``malloc_trim(0)`` as each stage begins (memory freed but
kept by the allocator is returned: what remains is live data); `--malloc-arena-max N` runs the
conversions with ``MALLOC_ARENA_MAX=N``. Both tell allocator fragmentation from data that is held.
The last column adds the resident memory of worker processes (sampled), where a stage runs in one.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEFAULT_CACHE,
    StagePeaks,
    TreeMemorySampler,
    full_size_checkpoints,
    rss_gb,
    singing_file,
    tiny_checkpoints,
)

STAGES = ("load", "reference", "encode", "match", "vocode")
DETAIL_STAGES = ("load", "reference", "read", "encode", "energy", "match", "optimise", "vocode")


def _malloc_trim() -> None:
    """Give memory freed in the C heap back to the system (glibc; nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _watch(owner: object, name: str, stage: str, enter) -> None:
    """Wrap ``owner.name`` so that `enter(stage)` runs as it is called (measurement only: the
    function itself runs unchanged, with its arguments and result passed through). A name the
    library no longer has is left alone: its work is then counted in the stage before."""
    original = getattr(owner, name, None)
    if original is None:
        return

    def wrapped(*args, **kwargs):
        enter(stage)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def child(args: argparse.Namespace) -> None:
    import torch

    from knnsvc import blocks, conversion
    from knnsvc.apps import common, convert
    from knnsvc.conversion import Options, convert_file

    torch.set_num_threads(args.threads)
    exact = StagePeaks()

    def enter(stage: str) -> None:
        if stage == exact.stage:
            return
        if args.trim:
            _malloc_trim()
        sampler.stage = stage
        exact.enter(stage)

    _watch(conversion, "usable_recording", "read", enter)
    _watch(blocks, "frame_energy", "energy", enter)
    _watch(blocks.SummingWeights, "_weights", "optimise", enter)
    with TreeMemorySampler() as sampler, tempfile.TemporaryDirectory(dir=args.cache) as work:
        options = [str(args.source), str(args.reference), "--wavlm", str(args.wavlm), "--vocoder", str(args.vocoder),
                   "--block-seconds", str(args.block_seconds), "--pool-cache", str(args.pool_cache), "-q"]
        if args.vocoder_config is not None:
            options += ["--vocoder-config", str(args.vocoder_config)]
        if args.f0 is not None:
            options += ["--f0", args.f0]
        cli = convert.build_parser().parse_args(options)
        cli.match_config = common.match_config(cli, convert.build_parser())
        cli.device = torch.device("cpu")
        baseline = rss_gb()
        start = time.perf_counter()
        enter("load")
        converter = common.load_converter(cli)
        loaded = time.perf_counter()
        if args.vocode_blocks:
            vocode_blocks = converter.vocode_blocks

            def first_blocks(*a, **k):
                return itertools.islice(vocode_blocks(*a, **k), args.vocode_blocks)

            converter.vocode_blocks = first_blocks  # type: ignore[method-assign]

        def progress(stage: str, done: int, total: int) -> None:
            enter(stage)

        enter("reference")
        pool, _ = common.reference_pool(converter, args.reference, [args.reference], args.pool_cache, progress)
        pooled = time.perf_counter()
        reference_timings = dict(converter.timings)
        converter.timings = {}
        enter("encode")
        convert_file(converter, pool, args.source, Path(work) / "out.wav", Options(), progress)
        done = time.perf_counter()
        exact.finish()
    print(json.dumps({
        "baseline_gb": baseline,
        "load_s": loaded - start,
        "reference_s": pooled - loaded,
        "convert_s": done - pooled,
        "stage_seconds": converter.timings,
        "reference_seconds": reference_timings,
        "peak_gb": sampler.peak,
        "stage_peaks_gb": sampler.peaks,
        "tree_peak_gb": max(sampler.tree_peaks.values(), default=0.0),
        "exact_peaks_gb": exact.peaks if exact.exact else {},
        "stage_end_gb": exact.at_end,
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
    parser.add_argument("--tiny", action="store_true",
                        help="the golden tiny checkpoints of tests/golden instead of full-size random ones "
                        "(a memory measurement: the per-frame arrays keep their size)")
    parser.add_argument("--f0", help="F0 extractor (default: the CLI's, Harvest); dio is the fast one")
    parser.add_argument("--malloc-arena-max", type=int, metavar="N",
                        help="run the conversions with MALLOC_ARENA_MAX=N (glibc)")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) as each stage begins (glibc)")
    parser.add_argument("--vocode-blocks", type=int, default=0, metavar="N",
                        help="memory only: vocode only the first N blocks (the vocoder works block by block, so "
                        "its stage's peak is reached in the first blocks; the output is then shorter and the "
                        "convert times exclude most of the vocoder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("source", "reference", "wavlm", "vocoder", "vocoder-config", "pool-cache"):
        parser.add_argument(f"--{name}", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    args.cache.mkdir(parents=True, exist_ok=True)
    vocoder_config = None
    if args.tiny:
        wavlm, vocoder, vocoder_config = tiny_checkpoints()
    else:
        wavlm, vocoder = full_size_checkpoints(args.cache)
    environment = dict(os.environ)
    if args.malloc_arena_max is not None:
        environment["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
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
            command += ["--vocoder-config", str(vocoder_config)] if vocoder_config is not None else []
            command += ["--f0", args.f0] if args.f0 is not None else []
            command += ["--trim"] if args.trim else []
            command += ["--vocode-blocks", str(args.vocode_blocks)] if args.vocode_blocks else []
            done = subprocess.run(command, capture_output=True, text=True, env=environment)
            if done.returncode != 0:
                rows.append((source_minutes, block, cold, None, done.stderr.strip().splitlines()[-1:]))
                print(f"{source_minutes:g} min, blocks {block:g} s: FAILED {done.stderr[-300:]}", file=sys.stderr)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((source_minutes, block, cold, result, None))
            print(f"{source_minutes:g} min, blocks {block:g} s ({'cold' if cold else 'warm'}): "
                  f"peak {result['peak_gb']:.2f} GB, convert {result['convert_s']:.0f} s", file=sys.stderr)

    models = "tiny models" if args.tiny else "full-size models"
    settings = f"{models}, F0 {args.f0 or 'default'}"
    if args.malloc_arena_max is not None:
        settings += f", MALLOC_ARENA_MAX={args.malloc_arena_max}"
    if args.trim:
        settings += ", malloc_trim at each stage"
    if args.vocode_blocks:
        settings += f", only the first {args.vocode_blocks} blocks vocoded (times exclude the rest)"
    print(f"\nreference {args.reference_minutes:g} min, {settings}; peak RSS in GB (models included); seconds\n")
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
    print("\nexact peak RSS per stage (kernel high-water mark, GB), and the RSS each stage leaves behind:\n")
    print("| source | blocks | " + " | ".join(DETAIL_STAGES) + " | left after vocode | with worker processes |")
    print("|---:|---:|" + "---:|" * (len(DETAIL_STAGES) + 2))
    for source_minutes, block, _cold, result, _ in rows:
        if result is None:
            continue
        exact, left = result["exact_peaks_gb"], result["stage_end_gb"]
        cells = [f"{exact[stage]:.3f}" if stage in exact else "-" for stage in DETAIL_STAGES]
        print(f"| {source_minutes:g} min | {f'{block:g} s' if block else 'whole'} | " + " | ".join(cells)
              + f" | {left.get('vocode', 0.0):.3f} | {result['tree_peak_gb']:.3f} |")
    print("\nstage seconds (last run of each): ")
    for source_minutes, block, _cold, result, _ in rows:
        if result is not None:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in sorted(result["stage_seconds"].items()))
            print(f"- {source_minutes:g} min, blocks {block:g}: {stages}; model load {result['load_s']:.1f} s, "
                  f"reference {result['reference_s']:.1f} s")


if __name__ == "__main__":
    main()
