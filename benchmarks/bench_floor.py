"""How far conversion is from this machine's floor, measured in the same run; streaming step RTFs.

    python benchmarks/bench_floor.py --json floor.json            # full size (run it alone)
    python benchmarks/bench_floor.py --tiny --json tiny.json      # tiny golden models (the tests)

The floor of a job is what its work costs at this machine's best rates:

    floor = neural FLOPs / matmul rate + single-thread Harvest seconds / cores

- neural FLOPs: WavLM to layer 6 and the vocoder, counted with `torch.utils.flop_counter`
  (matmuls, convolutions, attention; elementwise work is not counted): WavLM on each chunk length
  the encoder runs (30 s chunks are encoded independently), the vocoder per frame on a 2 s input,
  times the frames vocoded (blocks with their margins);
- matmul rate: the best of three timed float32 matmuls (4096 x 4096) on `--threads` threads
  (default: the cores this process may use);
- Harvest: `knnsvc.pitch.harvest_f0` of the same audio, in blocks as the converter runs it, on one
  thread, divided by the cores.

Jobs, timed in this process with the models already loaded (load time printed apart):

- warm: a 60 s source against a 2-minute reference pool built beforehand (as from the pool cache):
  `analyse`, `match`, `vocode_blocks`;
- cold: a 10 s source against a 60 s reference not yet encoded: `build_pool` of the reference,
  then the same conversion.

Then the streaming step real-time factor (compute per step / block length; median and max over the
steps of `push`) at each latency setting: blocks of 160 (the default: 280 ms latency), 240, 320 and
480 ms, with the default lookahead and crossfade; the default incremental step and, measured just
before it in the same run, the uncached one (``incremental=False``: every window computed whole).
Prints Markdown tables; `--json` writes them too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import (  # noqa: E402
    singing,
    step_summary,
    stream_steps,
    tiny_converter,
    write_json,
)
from common import DEFAULT_CACHE, full_size_checkpoints  # noqa: E402

from knnsvc.checkpoints import build_converter  # noqa: E402
from knnsvc.config import HOP_LENGTH, N_HARMONICS, SAMPLE_RATE  # noqa: E402
from knnsvc.matching import frame_blocks  # noqa: E402
from knnsvc.pipeline import KnnSvc  # noqa: E402
from knnsvc.pitch import harvest_f0  # noqa: E402
from knnsvc.pool import ReferencePool  # noqa: E402
from wavlm import ops as wavlm_ops  # noqa: E402


@dataclass
class Sizes:
    """Seconds of source and reference of the warm and the cold job, seconds streamed per latency
    setting, and the side of the timed matmul."""

    warm_source_s: float
    warm_reference_s: float
    cold_source_s: float
    cold_reference_s: float
    stream_s: float
    matmul: int


FULL = Sizes(60.0, 120.0, 10.0, 60.0, stream_s=10.0, matmul=4096)
TINY = Sizes(3.0, 6.0, 2.0, 4.0, stream_s=1.0, matmul=512)
BLOCKS_MS = (160.0, 240.0, 320.0, 480.0)
VOCODER_PROBE_FRAMES = 100


# ----------------------------------------------------------------------------- rates and counts
def matmul_rate(size: int, repeats: int = 3) -> float:
    """FLOP/s of the best of `repeats` (size x size) @ (size x size) float32 matmuls on torch's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # first call: allocation, thread pool start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def _cpu_attention_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """CPU flash attention (B, H, L_q, d) x (B, H, L_k, d): Q K^T and the weighted sum of V."""
    batch, heads, length_q, dim = query
    return 4 * batch * heads * length_q * key[-2] * dim


def counted_flops(run: Any) -> int:
    """FLOPs of the matmuls, convolutions and attention `run()` performs.

    WavLM's linears are counted as ``F.linear`` (its oneDNN route, `wavlm.ops.ONEDNN_LINEAR`, is
    the same product but invisible to the counter), and CPU flash attention by its two products.
    """
    route = wavlm_ops.ONEDNN_LINEAR
    wavlm_ops.ONEDNN_LINEAR = False
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    try:
        with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            run()
    finally:
        wavlm_ops.ONEDNN_LINEAR = route
    return counter.get_total_flops()


class FlopModel:
    """Neural FLOPs of a converter's networks for any audio length, from a few counted runs."""

    def __init__(self, converter: KnnSvc) -> None:
        self.converter = converter
        self._chunk: dict[int, int] = {}
        vocoder = converter.vocoder
        assert vocoder is not None
        frames = VOCODER_PROBE_FRAMES
        feats = torch.randn(1, frames, converter.encoder.dim)
        f0_hz = torch.full((1, frames), 220.0)
        amps = 0.01 * torch.rand(1, frames, N_HARMONICS) if vocoder.uses_harmonics else None
        self.vocoder_per_frame = counted_flops(lambda: vocoder(feats, f0_hz, amps)) / frames

    def encoder(self, num_samples: int) -> int:
        """WavLM to the converter's layer over a recording: the sum over its chunks."""
        total = 0
        for length in self.converter.encoder.chunk_lengths(num_samples):
            if length not in self._chunk:
                wav = 0.1 * torch.randn(length)
                self._chunk[length] = counted_flops(lambda wav=wav: self.converter.encoder(wav))
            total += self._chunk[length]
        return total

    def vocoder(self, num_frames: int) -> float:
        """The vocoder over `num_frames` output frames, vocoded in blocks with their margins."""
        vocoder = self.converter.vocoder
        assert vocoder is not None
        margin = vocoder.context_frames
        frames = sum(min(stop + margin, num_frames) - max(start - margin, 0)
                     for start, stop in frame_blocks(num_frames, self.converter.block_frames))
        return self.vocoder_per_frame * frames


def harvest_seconds(wav: torch.Tensor, block_seconds: float) -> float:
    """Seconds of `harvest_f0` on this thread, in the converter's blocks."""
    start = time.perf_counter()
    harvest_f0(wav, block_seconds or None)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- the jobs
def conversion(converter: KnnSvc, wav: torch.Tensor, pool: ReferencePool) -> int:
    """Convert `wav` against `pool` (analyse, match, vocode in blocks); the frames converted."""
    source = converter.analyse(wav)
    result = converter.match(source, pool)
    for _ in converter.vocode_blocks(result):
        pass
    source.close()
    return result.num_frames


def job(name: str, converter: KnnSvc, flops: FlopModel, rate: float, cores: int, source: torch.Tensor,
        reference: torch.Tensor, pool: ReferencePool | None) -> dict[str, Any]:
    """Wall seconds of one job and its floor; `pool` None = cold (the reference is encoded first)."""
    converter.timings = {}
    start = time.perf_counter()
    if pool is None:
        pool = converter.build_pool([reference])
    frames = conversion(converter, source, pool)
    wall = time.perf_counter() - start
    stages = dict(converter.timings)

    analysed = [source] if name == "warm" else [reference, source]
    neural = sum(flops.encoder(wav.numel()) for wav in analysed) + flops.vocoder(frames)
    harvest = sum(harvest_seconds(wav, converter.block_seconds) for wav in analysed)
    floor = neural / rate + harvest / cores
    return {
        "job": name,
        "source_s": source.numel() / SAMPLE_RATE,
        "reference_s": reference.numel() / SAMPLE_RATE,
        "wall_s": wall,
        "stage_seconds": stages,
        "neural_gflop": neural / 1e9,
        "neural_floor_s": neural / rate,
        "harvest_1thread_s": harvest,
        "harvest_floor_s": harvest / cores,
        "floor_s": floor,
        "ratio": wall / floor,
    }


def streaming_rows(converter: KnnSvc, pool: ReferencePool, wav: torch.Tensor) -> list[dict[str, Any]]:
    """Step real-time factors at each block length (default lookahead and crossfade), after a warm-up:
    the default incremental step, and the uncached one (every window computed whole) just before it."""
    stream_steps(converter, pool, wav[: SAMPLE_RATE])
    rows = []
    for block_ms in BLOCKS_MS:
        streamer, _, pushed = stream_steps(converter, pool, wav, block_ms=block_ms, incremental=False)
        uncached = step_summary(streamer, pushed)
        streamer, _, pushed = stream_steps(converter, pool, wav, block_ms=block_ms)
        row = step_summary(streamer, pushed)
        row.update({f"uncached_{key}": uncached[key] for key in ("step_ms_median", "rtf_median", "rtf_max")})
        rows.append(row)
    return rows


def print_tables(report: dict[str, Any]) -> None:
    print(f"\n{report['models']}; {report['threads']} threads; matmul {report['matmul_gflops']:.1f} GFLOP/s; "
          f"per second of audio: WavLM {report['encoder_gflop_per_s']:.2f} GFLOP, "
          f"vocoder {report['vocoder_gflop_per_s']:.2f} GFLOP; model load {report['load_s']:.1f} s\n")
    print("| job | source s | reference s | wall s | floor s (neural + Harvest/cores) | ratio | stages s |")
    print("|---|---:|---:|---:|---|---:|---|")
    for row in report["jobs"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["stage_seconds"].items()))
        print(f"| {row['job']} | {row['source_s']:g} | {row['reference_s']:g} | {row['wall_s']:.2f} | "
              f"{row['floor_s']:.2f} ({row['neural_floor_s']:.2f} + {row['harvest_floor_s']:.2f}) | "
              f"{row['ratio']:.2f} | {stages} |")
    print(f"\nstreaming, {report['stream_s']:g} s streamed per setting\n")
    print("| block ms | latency ms | steps | step ms median | step ms max | RTF median | RTF max "
          "| uncached RTF median | uncached RTF max |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in report["streaming"]:
        print(f"| {row['block_ms']:.0f} | {row['latency_ms']:.0f} | {row['steps']} | {row['step_ms_median']:.1f} | "
              f"{row['step_ms_max']:.1f} | {row['rtf_median']:.2f} | {row['rtf_max']:.2f} | "
              f"{row['uncached_rtf_median']:.2f} | {row['uncached_rtf_max']:.2f} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="golden tiny models and seconds of audio (tests)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads = the cores of the floor (default: the cores this process may use)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="random-weight checkpoints and synthetic audio are kept here")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    sizes = TINY if args.tiny else FULL
    args.cache.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if args.tiny:
        converter = tiny_converter(torch.device("cpu"))
    else:
        wavlm_file, vocoder_file = full_size_checkpoints(args.cache)
        converter = build_converter(wavlm_file, vocoder_file, device="cpu", progress=False)
    load_s = time.perf_counter() - began

    rate = matmul_rate(sizes.matmul)
    flops = FlopModel(converter)
    chunk = converter.encoder.chunk_samples  # the encoder's 30 s chunk: its attention span
    report: dict[str, Any] = {
        "models": "tiny golden checkpoints" if args.tiny else "full size, random weights",
        "threads": args.threads,
        "load_s": load_s,
        "matmul_gflops": rate / 1e9,
        "encoder_gflop_per_s": flops.encoder(chunk) / (chunk / SAMPLE_RATE) / 1e9,
        "vocoder_gflop_per_s": flops.vocoder_per_frame * SAMPLE_RATE / HOP_LENGTH / 1e9,
        "stream_s": sizes.stream_s,
    }

    source = singing(args.cache, "source", max(sizes.warm_source_s, sizes.cold_source_s))
    warm_reference = singing(args.cache, "reference", sizes.warm_reference_s)
    cold_reference = singing(args.cache, "reference", sizes.cold_reference_s)
    pool = converter.build_pool([warm_reference])  # the cached pool of the warm job
    warm = source[: round(sizes.warm_source_s * SAMPLE_RATE)]
    cold = source[: round(sizes.cold_source_s * SAMPLE_RATE)]
    report["jobs"] = [
        job("warm", converter, flops, rate, args.threads, warm, warm_reference, pool),
        job("cold", converter, flops, rate, args.threads, cold, cold_reference, None),
    ]
    report["streaming"] = streaming_rows(converter, pool, source[: round(sizes.stream_s * SAMPLE_RATE)])
    print_tables(report)
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
