"""Streaming: the step real-time factor per latency, and how far features and output move from offline.

    python benchmarks/bench_streaming.py --models full --rtf-only       # the RTF table (run it alone)
    python benchmarks/bench_streaming.py --tiny                         # tiny golden models (the tests)
    python benchmarks/bench_streaming.py SOURCE.wav REFERENCE.wav [--seconds 10] [--models tiny,full]

Models: `tiny` (``--tiny``) = the golden tiny checkpoints, `full` = WavLM-Large and the harmonic
vocoder with random weights (speed does not depend on the weights). Without SOURCE and REFERENCE
the synthetic singing of `common.singing_file` is streamed against a synthetic reference.

Per model, two Markdown tables:

- step real-time factors (compute per step of `push` / block length; median and max over the steps
  after `--skip` warm-up steps) for blocks of 160 (the default: 280 ms latency), 240, 320 and
  480 ms with the default lookahead (80 ms), crossfade (40 ms) and contexts; for each, the default
  incremental step and the uncached one (``incremental=False``: every window computed whole)
  alternate `--repeats` times in this process, so both see the same machine load;
- unless ``--rtf-only``, for several (lookahead, context) settings: the mean cosine between the
  streamed and the offline WavLM layer-6 features of every frame, and the SI-SNR of the streamed
  output against the offline output, with and without post-opt (block 160 ms, crossfade 40 ms).

The machine's load average is printed with each table: timings from a loaded machine are slower
and noisier (compare within one run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_blocks import si_snr_db  # noqa: E402
from bench_gpu import write_json  # noqa: E402
from common import DEFAULT_CACHE, full_size_checkpoints, singing_file  # noqa: E402

from knnsvc import checkpoints  # noqa: E402
from knnsvc.audio import load_audio  # noqa: E402
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE  # noqa: E402
from knnsvc.encoder import WavLMEncoder  # noqa: E402
from knnsvc.pipeline import KnnSvc, MatchConfig  # noqa: E402
from knnsvc.pool import ReferencePool  # noqa: E402
from knnsvc.streaming import StreamingConverter  # noqa: E402

SETTINGS = [  # (label, lookahead ms, context s)
    ("whole input", None, None),
    ("lookahead 200 ms, context 3 s", 200, 3.0),
    ("lookahead 80 ms, context 1 s (default)", 80, 1.0),
    ("lookahead 40 ms, context 1 s", 40, 1.0),
    ("lookahead 80 ms, context 0.5 s", 80, 0.5),
    ("lookahead 0 ms, context 0.5 s", 0, 0.5),
]
BLOCKS_MS = (160.0, 240.0, 320.0, 480.0)


def models(name: str, cache: Path) -> tuple[WavLMEncoder, Any, Any]:
    golden = ROOT / "tests" / "golden"
    if name == "tiny":
        wavlm = checkpoints.load_wavlm(golden / "wavlm_tiny.pt", num_layers=6)
        kind, vocoder = checkpoints.load_vocoder(golden / "vocoder_harmonic_tiny.pt")
    else:
        wavlm_file, vocoder_file = full_size_checkpoints(cache)
        wavlm = checkpoints.load_wavlm(wavlm_file, num_layers=6)
        kind, vocoder = checkpoints.load_vocoder(vocoder_file)
    return WavLMEncoder(wavlm), kind, vocoder


def stream(converter: KnnSvc, pool: ReferencePool, wav: torch.Tensor, lookahead_ms: float | None,
           context_s: float | None, **options: Any) -> StreamingConverter:
    """Stream `wav` block by block; the output is left in ``streamer.output`` and the number of
    steps taken by `push` (not `flush`) in ``streamer.pushed``."""
    seconds = wav.numel() / SAMPLE_RATE
    if lookahead_ms is None or context_s is None:  # everything: the offline-equivalent configuration
        lookahead_ms, context_s = 20 * (round(seconds * 50) + 5), seconds + 1
        f0_context = seconds + 1
    else:
        f0_context = min(context_s, 0.5)
    streamer = StreamingConverter(converter, pool, lookahead_ms=lookahead_ms, context_s=context_s,
                                  f0_context_s=f0_context, keep_features=True, **options)
    chunk = streamer.block * HOP_LENGTH
    out = [streamer.push(wav[i : i + chunk]) for i in range(0, wav.numel(), chunk)]
    streamer.pushed = len(streamer.compute_seconds)  # type: ignore[attr-defined]
    streamer.output = torch.cat(out + [streamer.flush()])  # type: ignore[attr-defined]
    return streamer


def rtf_rows(converter: KnnSvc, pool: ReferencePool, wav: torch.Tensor, blocks_ms: tuple[float, ...] = BLOCKS_MS,
             repeats: int = 1, skip: int = 2) -> list[dict[str, Any]]:
    """Per block length: step RTF median and max of the incremental and the uncached step (default
    lookahead, crossfade and contexts), the two alternating `repeats` times; the first `skip`
    steps of each run are left out (first calls of new shapes)."""
    stream(converter, pool, wav[:SAMPLE_RATE], 80, 1.0)  # warm-up
    rows = []
    for block_ms in blocks_ms:
        steps: dict[bool, list[float]] = {False: [], True: []}
        latency = 0.0
        for _ in range(repeats):
            for incremental in (False, True):
                streamer = stream(converter, pool, wav, 80, 1.0, block_ms=block_ms, incremental=incremental)
                pushed = streamer.compute_seconds[: streamer.pushed]  # type: ignore[attr-defined]
                steps[incremental] += pushed[skip:] or pushed
                latency = streamer.algorithmic_latency_ms
        block_s = block_ms / 1000.0
        row: dict[str, Any] = {"block_ms": block_ms, "latency_ms": latency, "steps": len(steps[True])}
        for incremental, prefix in ((True, ""), (False, "uncached_")):
            row[f"{prefix}step_ms_median"] = 1000.0 * statistics.median(steps[incremental])
            row[f"{prefix}rtf_median"] = statistics.median(steps[incremental]) / block_s
            row[f"{prefix}rtf_max"] = max(steps[incremental]) / block_s
        rows.append(row)
    return rows


def print_rtf_table(rows: list[dict[str, Any]]) -> None:
    print("| block ms | latency ms | steps | step ms median | RTF median | RTF max | uncached step ms median "
          "| uncached RTF median | uncached RTF max |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['block_ms']:.0f} | {row['latency_ms']:.0f} | {row['steps']} | {row['step_ms_median']:.0f} | "
              f"{row['rtf_median']:.2f} | {row['rtf_max']:.2f} | {row['uncached_step_ms_median']:.0f} | "
              f"{row['uncached_rtf_median']:.2f} | {row['uncached_rtf_max']:.2f} |")


def quality_rows(converter: KnnSvc, plain: KnnSvc, pool: ReferencePool, wav: torch.Tensor) -> list[dict[str, Any]]:
    """Per (lookahead, context) setting: feature cosine and SI-SNR against offline (post-opt and not)."""
    offline_feats = converter.analyse(wav).feats
    expected = {"post": converter.convert(wav, pool), "plain": plain.convert(wav, pool)}
    rows = []
    for label, lookahead, context in SETTINGS:
        results = {"post": stream(converter, pool, wav, lookahead, context),
                   "plain": stream(plain, pool, wav, lookahead, context)}
        streamed = torch.cat(results["post"].source_features)
        cosine = torch.nn.functional.cosine_similarity(streamed, offline_feats[: streamed.shape[0]], dim=1)
        block_s = results["post"].block * HOP_LENGTH / SAMPLE_RATE
        rtf = [s / block_s for s in results["post"].compute_seconds]
        rows.append({
            "setting": label,
            "latency_ms": results["post"].algorithmic_latency_ms if lookahead is not None else float("nan"),
            "feature_cosine": float(cosine.mean()),
            "si_snr_post_db": si_snr_db(results["post"].output, expected["post"]),  # type: ignore[attr-defined]
            "si_snr_plain_db": si_snr_db(results["plain"].output, expected["plain"]),  # type: ignore[attr-defined]
            "rtf_median": statistics.median(rtf),
            "rtf_max": max(rtf),
        })
    return rows


def print_quality_table(rows: list[dict[str, Any]]) -> None:
    print("| setting | latency ms | feature cosine | SI-SNR post-opt | SI-SNR no post-opt | RTF median | RTF max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['setting']} | {row['latency_ms']:.0f} | {row['feature_cosine']:.4f} | "
              f"{row['si_snr_post_db']:.1f} | {row['si_snr_plain_db']:.1f} | {row['rtf_median']:.2f} | "
              f"{row['rtf_max']:.2f} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, nargs="?", help="default: synthetic singing")
    parser.add_argument("reference", type=Path, nargs="?", help="default: synthetic singing")
    parser.add_argument("--seconds", type=float, default=None, help="seconds streamed (default 10; 3 with --tiny)")
    parser.add_argument("--models", default="tiny,full")
    parser.add_argument("--tiny", action="store_true", help="the tiny golden models only (same as --models tiny)")
    parser.add_argument("--rtf-only", action="store_true", help="only the step RTF table")
    parser.add_argument("--repeats", type=int, default=1, help="runs per block length and step kind")
    parser.add_argument("--skip", type=int, default=2, help="warm-up steps left out of each run's RTFs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, help="also write the tables to this JSON file")
    args = parser.parse_args(argv)
    if (args.source is None) != (args.reference is None):
        parser.error("give both SOURCE and REFERENCE, or neither")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["tiny"] if args.tiny else args.models.split(",")
    seconds = args.seconds if args.seconds is not None else (3.0 if args.tiny else 10.0)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.source is None:
        args.source = singing_file(args.cache, "source", max(seconds, 10.0), seed=1, low_hz=220.0, high_hz=520.0)
        args.reference = singing_file(args.cache, "reference", 30.0, seed=2, low_hz=140.0, high_hz=380.0)
    wav = load_audio(args.source)[: round(seconds * SAMPLE_RATE)]
    reference = load_audio(args.reference)
    report: dict[str, Any] = {"source": str(args.source), "seconds": wav.numel() / SAMPLE_RATE,
                              "threads": torch.get_num_threads(), "models": {}}
    for name in names:
        encoder, kind, vocoder = models(name, args.cache)
        converter = KnnSvc(encoder, vocoder, kind, MatchConfig())
        pool = converter.build_pool([reference])
        rows = rtf_rows(converter, pool, wav, repeats=args.repeats, skip=args.skip)
        load = os.getloadavg()[0]
        result: dict[str, Any] = {"rtf": rows, "load_average_1min": load}
        print(f"\n### {name} models: step real-time factors, {wav.numel() / SAMPLE_RATE:g} s of {args.source.name}, "
              f"{torch.get_num_threads()} threads, load average {load:.2f}\n")
        print_rtf_table(rows)
        if not args.rtf_only:
            plain = KnnSvc(encoder, vocoder, kind, MatchConfig(concat_weight=None, optimise_weights=False))
            result["quality"] = quality_rows(converter, plain, pool, wav)
            print(f"\n### {name} models: streaming vs offline, block 160 ms, crossfade 40 ms\n")
            print_quality_table(result["quality"])
        report["models"][name] = result
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
