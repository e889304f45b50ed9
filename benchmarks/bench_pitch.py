"""Speed and accuracy of the F0 extractors (knnsvc.pitch) on real singing and on known F0.

    python benchmarks/bench_pitch.py [CLIP.wav ...] [--extractors harvest,dio,fcpe,swiftf0]
                                     [--repeats 3] [--threads N] [--block-seconds 30]
    python benchmarks/bench_pitch.py --workers 1,2 [--scaling-seconds 600] [--extractors harvest]

For each extractor:

- speed: seconds of analysis per second of audio on the clips, for whole-file analysis and in
  blocks of `--block-seconds` (median of `--repeats` runs, models loaded and warmed up first);
- agreement with Harvest on the clips (Harvest is what the released vocoders were trained on):
  cents RMSE over frames voiced in both, the share of those frames within 50 cents (no octave
  or gross error), V/UV agreement over all frames, and the share of frames voiced;
- accuracy on synthetic sung vowels (`knnsvc.synthetic.sung_vowel`: harmonic-rich, 5 Hz / 30
  cent vibrato, 2 s) at 100-800 Hz, whose F0 is known: cents RMSE over voiced frames and V/UV
  recall, both over the frames 0.1 s or more from the ends.

Without clips only the synthetic part runs. Extractors whose package is missing are left out.

With `--workers 1,2` only the scaling run happens instead: the F0 of one synthetic recording of
`--scaling-seconds` (default: 10 minutes) in blocks of `--block-seconds`, with each number of
worker processes (1 = in the calling thread): the time to start the workers, the analysis time
(median of `--repeats`, workers already started), its ratio to 1 worker's (target for 2 workers:
<= 0.6) and whether the output is identical to 1 worker's. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from knnsvc.audio import load_audio
from knnsvc.pitch import F0_EXTRACTORS, F0Extractor, get_f0_extractor, harvest_f0
from knnsvc.synthetic import sung_vowel

SYNTHETIC_HZ = (100.0, 150.0, 220.0, 330.0, 440.0, 600.0, 800.0)
VIBRATO_HZ, VIBRATO_CENTS, SYNTHETIC_SECONDS, EDGE_SECONDS = 5.0, 30.0, 2.0, 0.1
FRAME_SECONDS = 0.02

logger = logging.getLogger("bench_pitch")


def cents(f0_hz: np.ndarray, reference_hz: np.ndarray) -> np.ndarray:
    return 1200.0 * np.log2(f0_hz / reference_hz)


def agreement(f0_hz: np.ndarray, harvest_hz: np.ndarray) -> dict[str, float]:
    """Cents RMSE and share within 50 cents on frames voiced in both; V/UV agreement; voiced share."""
    both = (f0_hz > 0) & (harvest_hz > 0)
    error = cents(f0_hz[both], harvest_hz[both])
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "within50": 100.0 * float(np.mean(np.abs(error) < 50.0)),
        "vuv": 100.0 * float(np.mean((f0_hz > 0) == (harvest_hz > 0))),
        "voiced": 100.0 * float(np.mean(f0_hz > 0)),
    }


def synthetic_accuracy(extractor: F0Extractor) -> tuple[dict[float, float], float, float]:
    """Per-pitch cents RMSE, pooled cents RMSE and pooled V/UV recall on the sung vowels."""
    per_pitch, errors, voiced, frames = {}, [], 0, 0
    for f0_hz in SYNTHETIC_HZ:
        f0 = extractor(sung_vowel(SYNTHETIC_SECONDS, f0_hz, vibrato_hz=VIBRATO_HZ, vibrato_cents=VIBRATO_CENTS))
        f0 = f0.numpy()
        times = np.arange(f0.shape[0]) * FRAME_SECONDS
        true_hz = f0_hz * 2 ** (VIBRATO_CENTS / 1200 * np.sin(2 * np.pi * VIBRATO_HZ * times))
        inner = (times >= EDGE_SECONDS) & (times <= SYNTHETIC_SECONDS - EDGE_SECONDS)
        hit = inner & (f0 > 0)
        error = cents(f0[hit], true_hz[hit])
        per_pitch[f0_hz] = float(np.sqrt(np.mean(error**2))) if hit.any() else float("nan")
        errors.append(error)
        voiced, frames = voiced + int(hit.sum()), frames + int(inner.sum())
    pooled = np.concatenate(errors)
    return per_pitch, float(np.sqrt(np.mean(pooled**2))), 100.0 * voiced / frames


def seconds_per_second(
    extractor: F0Extractor, clips: list[torch.Tensor], repeats: int, block_seconds: float | None
) -> float:
    """Median over `repeats` of (analysis seconds / audio seconds) over all clips."""
    audio_seconds = sum(clip.shape[0] for clip in clips) / 16_000
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for clip in clips:
            extractor(clip, block_seconds)
        runs.append((time.perf_counter() - start) / audio_seconds)
    return statistics.median(runs)


def scaling_recording(seconds: float) -> torch.Tensor:
    """`seconds` of sung notes (a 12 s phrase of six pitches, repeated, with fresh noise throughout)."""
    phrase = torch.cat([sung_vowel(2.0, f0_hz, seed=k) for k, f0_hz in enumerate((110.0, 165.0, 220.0, 330.0, 440.0,
                                                                                    660.0))])
    wav = phrase.repeat(int(np.ceil(seconds / 12.0)))[: int(seconds * 16_000)]
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(wav.shape[0]).astype(np.float32))
    return wav + 0.002 * noise


def worker_scaling(names: list[str], counts: list[int], seconds: float, block_seconds: float, repeats: int) -> None:
    """Print the time of one recording's F0 with each number of workers, and whether outputs agree."""
    wav = scaling_recording(seconds)
    warm_up = sung_vowel(float(max(counts)), 220.0)  # max(counts) blocks of 0.5 s (+ margins): every worker starts
    print(f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} core(s) usable; "
          f"{seconds:g} s recording in {block_seconds:g} s blocks; median of {repeats} run(s)\n")
    print("| extractor | workers | warm-up, starts the workers (s) | F0 (s) | x of 1 worker | identical to 1 worker |")
    print("|---|---|---|---|---|---|")
    for name in names:
        baseline: tuple[float, torch.Tensor] | None = None
        for workers in counts:
            extractor = get_f0_extractor(name, workers=workers)
            start = time.perf_counter()
            extractor(warm_up, 0.5)
            started = time.perf_counter() - start
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                f0 = extractor(wav, block_seconds)
                runs.append(time.perf_counter() - start)
            seconds_taken = statistics.median(runs)
            if baseline is None:
                baseline = (seconds_taken, f0)
            ratio = seconds_taken / baseline[0]
            print(f"| {name} | {workers} | {started:.2f} | {seconds_taken:.2f} | {ratio:.2f} | "
                  f"{'yes' if torch.equal(f0, baseline[1]) else 'NO'} |")
    print("\nTarget: 2 workers <= 0.6x the time of 1 (issue #16), outputs identical.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path, help="real recordings (any format; analysed at 16 kHz)")
    parser.add_argument("--extractors", default=",".join(F0_EXTRACTORS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per extractor (the median is shown)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--block-seconds", type=float, default=30.0, help="block length of the blocked timing")
    parser.add_argument("--workers", help="comma-separated worker counts: run only the scaling run (e.g. 1,2)")
    parser.add_argument("--scaling-seconds", type=float, default=600.0, help="length of the scaling run's recording")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.workers:
        names = args.extractors.split(",") if args.extractors != ",".join(F0_EXTRACTORS) else ["harvest"]
        worker_scaling(names, [int(n) for n in args.workers.split(",")], args.scaling_seconds, args.block_seconds,
                       args.repeats)
        return

    clips = [load_audio(path) for path in args.clips]
    harvest = [harvest_f0(clip).numpy() for clip in clips]
    extractors = []
    for name in args.extractors.split(","):
        try:
            extractors.append(get_f0_extractor(name))
        except ImportError as error:
            logger.warning("skipping %s: %s", name, error)

    rows, per_pitch_rows = [], []
    for extractor in extractors:
        extractor(sung_vowel(1.0, 220.0))  # warm-up (lazy initialisation, allocator)
        speed = [seconds_per_second(extractor, clips, args.repeats, block) if clips else float("nan")
                 for block in (None, args.block_seconds)]
        scores = [agreement(extractor(clip).numpy(), reference) for clip, reference in zip(clips, harvest, strict=True)]
        per_pitch, rmse, recall = synthetic_accuracy(extractor)
        mean = {key: statistics.mean(s[key] for s in scores) if scores else float("nan") for key in
                ("rmse", "within50", "vuv", "voiced")}
        rows.append((extractor.name, speed, mean, rmse, recall))
        per_pitch_rows.append((extractor.name, per_pitch))
        logger.info("%s done (%s)", extractor.name, extractor.cache_id)

    total = sum(clip.shape[0] for clip in clips) / 16_000
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread(s) (fcpe), ONNX Runtime's default (swiftf0), "
          "pyworld single-threaded; "
          f"{len(clips)} clip(s), {total:.0f} s of audio\n")
    print(f"| extractor | s per s of audio: whole | in {args.block_seconds:g} s blocks | vs Harvest: cents RMSE | "
          "within 50 cents | V/UV agreement | voiced | sung vowels: cents RMSE | V/UV recall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, speed, mean, rmse, recall in rows:
        print(f"| {name} | {speed[0]:.3f} | {speed[1]:.3f} | {mean['rmse']:.1f} | {mean['within50']:.1f} % | "
              f"{mean['vuv']:.1f} % | {mean['voiced']:.1f} % | {rmse:.2f} | {recall:.1f} % |")
    print("\nSung vowels, cents RMSE per pitch:\n")
    print("| extractor | " + " | ".join(f"{f:g} Hz" for f in SYNTHETIC_HZ) + " |")
    print("|---|" + "---|" * len(SYNTHETIC_HZ))
    for name, per_pitch in per_pitch_rows:
        print(f"| {name} | " + " | ".join(f"{per_pitch[f]:.2f}" for f in SYNTHETIC_HZ) + " |")


if __name__ == "__main__":
    main()
