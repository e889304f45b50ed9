"""What does a vocoder cost per second of audio? HiFi-GAN V1 against the new families and rates.

    nice -n 19 python benchmarks/bench_vocoders.py [--seconds 2] [--repeats 3] [--threads N] [--harmonics 49]

Full-size architectures with random weights (cost does not depend on the values): the harmonic
HiFi-GAN V1 at 16 kHz (the released kNN-SVC vocoder), the harmonic HiFi-GAN at 24 and 44.1 kHz
(``hifigan.presets``) and the Vocos-style generator (``hifigan.vocos``) at 16, 24 and 44.1 kHz.
For each it prints a markdown table row:

- GFLOP per second of audio, counted by ``torch.utils.flop_counter`` on the meta device for one
  second of frames (convolutions and matrix products; the FFTs of the iSTFT head and the sines of
  the excitation are not counted by the counter);
- seconds of compute per second of audio on this CPU (best of ``--repeats`` after one warm-up,
  weight norm folded, ``torch.inference_mode``), and its inverse, the real-time factor;
- the real-time factor of one streaming step at the default latency: the vocoder over what
  `knnsvc.streaming.StreamingConverter` hands it for one 160 ms block (its past margin of
  ``context_frames``, the 40 ms crossfade, the 8-frame block and the 80 ms lookahead), timed
  per step and divided by the block's 160 ms (median of ``--repeats`` after one warm-up);
- parameters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hifigan.generator import build_generator  # noqa: E402
from hifigan.presets import FRAME_RATE, hifigan_config  # noqa: E402
from hifigan.vocos import vocos_config  # noqa: E402

ROWS = (
    ("HiFi-GAN V1 harmonic (released)", "harmonic", 16_000),
    ("HiFi-GAN harmonic", "harmonic", 24_000),
    ("HiFi-GAN harmonic", "harmonic", 44_100),
    ("Vocos harmonic (iSTFT head)", "vocos", 16_000),
    ("Vocos harmonic (iSTFT head)", "vocos", 24_000),
    ("Vocos harmonic (iSTFT head)", "vocos", 44_100),
)


def build(kind: str, sample_rate: int) -> torch.nn.Module:
    config = vocos_config(sample_rate) if kind == "vocos" else hifigan_config(sample_rate)
    return build_generator(kind, config)


def inputs(n_frames: int, n_harmonics: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Features (1, T, 1024), a sung f0 line around 220 Hz (1, T), decaying amplitudes (1, T, H)."""
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(1, n_frames, 1024, generator=generator).to(device)
    f0_hz = (220.0 * 2 ** (torch.sin(torch.arange(n_frames) / 20.0) / 6))[None].to(device)
    amps = (0.3 / torch.arange(1, n_harmonics + 1)).expand(1, n_frames, n_harmonics).contiguous().to(device)
    return feats, f0_hz, amps


def gflop_per_second(kind: str, sample_rate: int, n_harmonics: int) -> float:
    with torch.device("meta"):
        model = build(kind, sample_rate)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs(FRAME_RATE, n_harmonics, device="meta"))
    return counter.get_total_flops() / 1e9


def seconds_per_second(kind: str, sample_rate: int, n_harmonics: int, seconds: float, repeats: int) -> float:
    torch.manual_seed(0)
    model = build(kind, sample_rate).eval()
    model.remove_weight_norm()
    batch = inputs(round(seconds * FRAME_RATE), n_harmonics)
    with torch.inference_mode():
        model(*batch)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model(*batch)
            best = min(best, time.perf_counter() - start)
    return best / seconds


STEP_BLOCK, STEP_CROSSFADE, STEP_LOOKAHEAD = 8, 2, 4
"""Frames of one streaming step at the default 280 ms latency (160 ms block, 40 ms crossfade, 80 ms lookahead)."""


def step_rtf(kind: str, sample_rate: int, n_harmonics: int, repeats: int) -> float:
    """Seconds the vocoder takes for one default streaming step, divided by the block's duration."""
    torch.manual_seed(0)
    model = build(kind, sample_rate).eval()
    model.remove_weight_norm()
    frames = model.context_frames + STEP_CROSSFADE + STEP_BLOCK + STEP_LOOKAHEAD
    batch = inputs(frames, n_harmonics)
    times = []
    with torch.inference_mode():
        model(*batch)  # warm-up
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            model(*batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / (STEP_BLOCK / FRAME_RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--harmonics", type=int, default=49, help="harmonic amplitudes per frame (49: the release)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.seconds:g} s of audio per call, best of {args.repeats}, {args.threads} thread(s), "
          f"{args.harmonics} harmonics, torch {torch.__version__}")
    print("| vocoder | rate | GFLOP / s audio | vs HiFi-GAN V1 16 kHz | CPU s / s audio | x real time "
          "| stream step RTF | params |")
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    for name, kind, sample_rate in ROWS:
        gflop = gflop_per_second(kind, sample_rate, args.harmonics)
        reference = reference if reference is not None else gflop
        cost = seconds_per_second(kind, sample_rate, args.harmonics, args.seconds, args.repeats)
        step = step_rtf(kind, sample_rate, args.harmonics, args.repeats)
        params = sum(p.numel() for p in build(kind, sample_rate).parameters()) / 1e6
        print(f"| {name} | {sample_rate / 1000:g} kHz | {gflop:.2f} | {gflop / reference:.3f} | {cost:.3f} | "
              f"{1 / cost:.1f} | {step:.2f} | {params:.1f} M |", flush=True)


if __name__ == "__main__":
    main()
