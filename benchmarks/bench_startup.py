"""Start-up: seconds from process start to the first stage, and model-load seconds, full size.

    python benchmarks/bench_startup.py [--repeats 3] [--cache DIR]

With WavLM-Large and the harmonic vocoder as random-weight files in the official formats (read
from the page cache after the first run), it times: importing the CLI; `knnsvc-convert` from
process start until its first stage begins (the log line after the models are loaded); and, in
this process, loading each model the way the CLI does (meta-device build, memory-mapped
checkpoint, WavLM truncated to the 6 blocks in use) against the plain way (random
initialisation of all 24 blocks, then `load_state_dict`). Prints medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CACHE, full_size_checkpoints  # noqa: E402


def time_import(repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import knnsvc.convert"], check=True, cwd=ROOT)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def time_to_first_stage(wavlm: Path, vocoder: Path, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "knnsvc.convert", str(ROOT / "examples" / "source.wav"),
                       str(ROOT / "examples" / "target_singer"), "-o", str(Path(out) / "x.wav"),
                       "--wavlm", str(wavlm), "--vocoder", str(vocoder)]
            start = time.perf_counter()
            process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                       cwd=ROOT)
            assert process.stderr is not None
            first_stage = None
            for line in process.stderr:
                if first_stage is None and line.startswith("INFO: vocoder:"):
                    first_stage = time.perf_counter() - start
            process.wait()
            if first_stage is None or process.returncode != 0:
                raise RuntimeError("the CLI did not reach its first stage")
            runs.append(first_stage)
    return statistics.median(runs)


def time_loading(wavlm: Path, vocoder: Path, repeats: int) -> dict[str, float]:
    import torch

    from hifigan.generator import VocoderKind, build_generator
    from knnsvc import checkpoints
    from wavlm import WavLM, WavLMConfig

    def median(fn) -> float:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    def plain_wavlm() -> None:
        checkpoint = torch.load(wavlm, map_location="cpu", weights_only=True)
        WavLM(WavLMConfig.from_dict(checkpoint["cfg"])).load_state_dict(checkpoint["model"])

    def plain_vocoder() -> None:
        state = torch.load(vocoder, map_location="cpu", weights_only=True)["generator"]
        build_generator(VocoderKind.HARMONIC).load_state_dict(state)

    return {
        "wavlm (meta + mmap, 6 blocks)": median(lambda: checkpoints.load_wavlm(wavlm, num_layers=6)),
        "wavlm (random init, 24 blocks, copy)": median(plain_wavlm),
        "vocoder (meta + mmap, weight norm folded)": median(lambda: checkpoints.load_vocoder(vocoder)),
        "vocoder (random init, copy)": median(plain_vocoder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    wavlm, vocoder = full_size_checkpoints(args.cache)
    for path in (wavlm, vocoder):  # into the page cache
        path.read_bytes()
    print(f"import knnsvc.convert: {time_import(args.repeats):.2f} s")
    print(f"knnsvc-convert, process start to first stage: {time_to_first_stage(wavlm, vocoder, args.repeats):.2f} s")
    for name, seconds in time_loading(wavlm, vocoder, args.repeats).items():
        print(f"load {name}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
