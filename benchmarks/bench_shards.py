"""Sharded batch conversion: one process against N shards of the Hydra app on the joblib launcher.

    python benchmarks/bench_shards.py                       # tiny golden models, 12 files, 4 shards
    python benchmarks/bench_shards.py --full --seconds 10   # WavLM-Large + harmonic vocoder, random weights

Makes a batch of synthetic sung files and one reference singer, converts the batch once with
``knnsvc-convert`` in one process and once with ``experiments/convert.py -m hydra/launcher=joblib
num_shards=N shard_index=0,...,N-1`` (the documented command), merges the shards' manifests with
``knnsvc-merge``, and prints one JSON object: both wall times (each includes starting Python and
loading the models, as a user's run does), the speed-up, and whether every output is byte for
byte the one-process output. The one-process run that is compared byte for byte has the torch
threads of one shard (OMP_NUM_THREADS): torch's thread count changes float rounding, so outputs are
byte-equal between processes with the same thread count; a run with all cores is timed and compared
too. Every run starts from an empty pool cache. Speed is printed, not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
sys.path.insert(0, str(REPO))

from knnsvc.config import SAMPLE_RATE  # noqa: E402
from knnsvc.synthetic import phrases  # noqa: E402


def make_batch(folder: Path, files: int, seconds: float) -> tuple[Path, Path]:
    """`files` sung phrases of `seconds` each under folder/songs (two subfolders) and a 4 s singer."""
    songs, singer = folder / "songs", folder / "singer"
    for n in range(files):
        path = songs / f"part{n % 2}" / f"take{n:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, phrases(seconds, n, 180.0, 400.0), SAMPLE_RATE, subtype="PCM_16")
    singer.mkdir(parents=True, exist_ok=True)
    sf.write(singer / "a.wav", phrases(4.0, 100, 150.0, 300.0), SAMPLE_RATE, subtype="PCM_16")
    return songs, singer


def models(full: bool, cache: Path) -> dict[str, str]:
    if not full:
        return {"wavlm": str(GOLDEN / "wavlm_tiny.pt"), "vocoder": str(GOLDEN / "vocoder_harmonic_tiny.pt"),
                "vocoder_config": str(GOLDEN / "vocoder_tiny_config.json")}
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import full_size_checkpoints

    wavlm, vocoder = full_size_checkpoints(cache)
    return {"wavlm": str(wavlm), "vocoder": str(vocoder)}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*.wav"))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="the tiny golden checkpoints (the default)")
    size.add_argument("--full", action="store_true", help="WavLM-Large and the harmonic vocoder, random weights")
    parser.add_argument("--files", type=int, default=12, help="files in the batch (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each file (default: %(default)s)")
    parser.add_argument("--shards", type=int, default=4, help="shards = joblib workers (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per shard (default: cores / shards, at least 1)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "knnsvc-bench",
                        help="where --full keeps its random-weight checkpoints")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.shards)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        songs, singer = make_batch(work, args.files, args.seconds)
        names = models(args.full, args.cache)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        flags = [f"--{key.replace('_', '-')}" for key in names]
        single = [sys.executable, "-m", "knnsvc.convert", str(songs), str(singer), "-o", str(work / "single"), "-q",
                  "--pool-cache", str(work / "cache-single"), "--device", "cpu",
                  *[item for flag, value in zip(flags, names.values(), strict=True) for item in (flag, value)]]
        # torch's thread count changes float rounding, so the byte comparison runs one process with the
        # threads each shard has; the all-cores run is timed too (and compared, for the record)
        single_s = timed(single, {**env, "OMP_NUM_THREADS": str(threads)})
        all_cores = [*single[:6], str(work / "single-all-cores"), *single[7:]]
        all_cores_s = timed(all_cores, env)
        sharded = [sys.executable, str(REPO / "experiments" / "convert.py"), "-m", "hydra/launcher=joblib",
                   f"hydra.launcher.n_jobs={args.shards}", f"num_shards={args.shards}",
                   "shard_index=" + ",".join(map(str, range(args.shards))), f"source={songs}", f"reference={singer}",
                   f"output={work / 'sharded'}", f"pool_cache={work / 'cache-sharded'}", "device=cpu",
                   f"threads={threads}", *[f"{key}={value}" for key, value in names.items()]]
        sharded_s = timed(sharded, env)
        manifests = sorted(str(p) for p in work.glob(f"sharded.manifest.shard-*-of-{args.shards}.json"))
        merge_s = timed([sys.executable, "-m", "knnsvc.merge", *manifests, "-o", str(work / "merged.json")], env)
        one, many, every_core = outputs(work / "single"), outputs(work / "sharded"), outputs(work / "single-all-cores")
        report = {
            "models": "full size, random weights" if args.full else "tiny golden checkpoints",
            "files": args.files,
            "seconds_per_file": args.seconds,
            "shards": args.shards,
            "threads_per_shard": threads,
            "cores": cores,
            "torch_threads_single": torch.get_num_threads(),
            "single_process_s": round(single_s, 2),
            "single_process_all_cores_s": round(all_cores_s, 2),
            "sharded_s": round(sharded_s, 2),
            "merge_s": round(merge_s, 2),
            "speedup": round(single_s / sharded_s, 2),
            "speedup_vs_all_cores": round(all_cores_s / sharded_s, 2),
            "outputs": len(one),
            "byte_equal": len(one) == args.files and one == many,
            "byte_equal_to_all_cores_run": every_core == many,
        }
    print(json.dumps(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
