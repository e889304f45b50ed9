"""Streaming: latency, compute per block, and how far features and output move from offline.

    python benchmarks/bench_streaming.py SOURCE.wav REFERENCE.wav [--seconds 10] [--models tiny,full]

For several (lookahead, context) settings it streams the first `--seconds` of SOURCE through
`StreamingConverter` (default block 160 ms, crossfade 40 ms) against REFERENCE, and compares with
the offline conversion of the same excerpt: the mean cosine between the streamed and the offline
WavLM layer-6 features of every frame, and the SI-SNR of the streamed output against the offline
output, with and without post-opt. Models: `tiny` = the golden tiny checkpoints, `full` =
WavLM-Large and the harmonic vocoder with random weights. Prints one Markdown table per model,
with the compute real-time factor per block (median, max) on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_blocks import si_snr_db  # noqa: E402
from common import DEFAULT_CACHE, full_size_checkpoints  # noqa: E402

from knnsvc import checkpoints  # noqa: E402
from knnsvc.audio import load_audio  # noqa: E402
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE  # noqa: E402
from knnsvc.encoder import WavLMEncoder  # noqa: E402
from knnsvc.pipeline import KnnSvc, MatchConfig  # noqa: E402
from knnsvc.streaming import StreamingConverter  # noqa: E402

SETTINGS = [  # (label, lookahead ms, context s)
    ("whole input", None, None),
    ("lookahead 200 ms, context 3 s", 200, 3.0),
    ("lookahead 80 ms, context 1 s (default)", 80, 1.0),
    ("lookahead 40 ms, context 1 s", 40, 1.0),
    ("lookahead 80 ms, context 0.5 s", 80, 0.5),
    ("lookahead 0 ms, context 0.5 s", 0, 0.5),
]


def models(name: str, cache: Path):
    golden = ROOT / "tests" / "golden"
    if name == "tiny":
        wavlm = checkpoints.load_wavlm(golden / "wavlm_tiny.pt", num_layers=6)
        kind, vocoder = checkpoints.load_vocoder(golden / "vocoder_harmonic_tiny.pt")
    else:
        wavlm_file, vocoder_file = full_size_checkpoints(cache)
        wavlm = checkpoints.load_wavlm(wavlm_file, num_layers=6)
        kind, vocoder = checkpoints.load_vocoder(vocoder_file)
    return WavLMEncoder(wavlm), kind, vocoder


def stream(converter: KnnSvc, pool, wav: torch.Tensor, lookahead_ms, context_s) -> StreamingConverter:
    seconds = wav.numel() / SAMPLE_RATE
    if lookahead_ms is None:  # everything: the offline-equivalent configuration
        lookahead_ms, context_s = 20 * (round(seconds * 50) + 5), seconds + 1
        f0_context = seconds + 1
    else:
        f0_context = min(context_s, 0.5)
    streamer = StreamingConverter(converter, pool, lookahead_ms=lookahead_ms, context_s=context_s,
                                  f0_context_s=f0_context, keep_features=True)
    chunk = streamer.block * HOP_LENGTH
    out = [streamer.push(wav[i : i + chunk]) for i in range(0, wav.numel(), chunk)] + [streamer.flush()]
    streamer.output = torch.cat(out)
    return streamer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--models", default="tiny,full")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    wav = load_audio(args.source)[: round(args.seconds * SAMPLE_RATE)]
    reference = load_audio(args.reference)
    post_opt, plain = MatchConfig(), MatchConfig(concat_weight=None, optimise_weights=False)
    for name in args.models.split(","):
        encoder, kind, vocoder = models(name, args.cache)
        offline = {label: KnnSvc(encoder, vocoder, kind, config) for label, config in (("post", post_opt),
                                                                                      ("plain", plain))}
        pool = offline["post"].build_pool([reference])
        offline_feats = offline["post"].analyse(wav).feats
        expected = {label: converter.convert(wav, pool) for label, converter in offline.items()}
        print(f"\n### {name} models, {args.seconds:g} s of {args.source.name}, block 160 ms, crossfade 40 ms\n")
        print("| setting | latency ms | feature cosine | SI-SNR post-opt | SI-SNR no post-opt | RTF median | RTF max |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, lookahead, context in SETTINGS:
            results = {key: stream(converter, pool, wav, lookahead, context) for key, converter in offline.items()}
            streamed = torch.cat(results["post"].source_features)
            cosine = torch.nn.functional.cosine_similarity(streamed, offline_feats[: streamed.shape[0]], dim=1)
            block_s = results["post"].block * HOP_LENGTH / SAMPLE_RATE
            rtf = [s / block_s for s in results["post"].compute_seconds]
            latency = results["post"].algorithmic_latency_ms if lookahead is not None else float("nan")
            print(f"| {label} | {latency:.0f} | {float(cosine.mean()):.4f} | "
                  f"{si_snr_db(results['post'].output, expected['post']):.1f} | "
                  f"{si_snr_db(results['plain'].output, expected['plain']):.1f} | "
                  f"{statistics.median(rtf):.2f} | {max(rtf):.2f} |")


if __name__ == "__main__":
    main()
