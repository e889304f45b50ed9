"""Does blocking change the result? Measured on real singing with the full-size architectures.

    python benchmarks/bench_blocks.py SOURCE.wav REFERENCE.wav [--blocks 30,10] [--cache DIR]

For each block length it prints (1) how Harvest F0 in blocks differs from the whole-recording
analysis on both recordings (frames that differ, voiced/unvoiced flips, largest difference in
cents and Hz), and (2) the SI-SNR between the conversion with ``block_seconds=S`` and with
``block_seconds=0`` (everything in one block), with WavLM-Large and the harmonic vocoder as
random-weight checkpoints (the comparison does not depend on the values). The 60 s a-cappella
clips of the kNN-SVC samples are the intended inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CACHE, full_size_checkpoints  # noqa: E402

from knnsvc import checkpoints  # noqa: E402
from knnsvc.audio import load_audio  # noqa: E402
from knnsvc.encoder import WavLMEncoder  # noqa: E402
from knnsvc.pipeline import KnnSvc  # noqa: E402
from knnsvc.pitch import harvest_f0  # noqa: E402


def si_snr_db(estimate: torch.Tensor, target: torch.Tensor) -> float:
    estimate, target = estimate.double(), target.double()
    scaled = (estimate @ target) / (target @ target) * target
    noise = (estimate - scaled).pow(2).sum()
    return float("inf") if noise == 0 else float(10 * torch.log10(scaled.pow(2).sum() / noise))


def f0_differences(wav: torch.Tensor, block_seconds: float, whole: torch.Tensor) -> str:
    blocked = harvest_f0(wav, block_seconds)
    both = (blocked > 0) & (whole > 0)
    cents = (1200 * torch.log2(blocked[both] / whole[both])).abs()
    hz = (blocked[both] - whole[both]).abs()
    return (f"{int((blocked != whole).sum())} of {whole.numel()} frames differ, "
            f"{int(((blocked > 0) != (whole > 0)).sum())} voiced/unvoiced flips, "
            f"max {float(cents.max()) if cents.numel() else 0.0:.2e} cents / "
            f"{float(hz.max()) if hz.numel() else 0.0:.2e} Hz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--blocks", default="30,10", help="block lengths in seconds")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    blocks = [float(b) for b in args.blocks.split(",")]
    source, reference = load_audio(args.source), load_audio(args.reference)

    print("## Harvest F0 in blocks vs the whole recording")
    for name, wav in (("source", source), ("reference", reference)):
        whole = harvest_f0(wav, None)
        for block in blocks:
            print(f"- {name} ({wav.numel() / 16000:.1f} s), {block:g} s blocks: {f0_differences(wav, block, whole)}")

    wavlm_file, vocoder_file = full_size_checkpoints(args.cache)
    wavlm = checkpoints.load_wavlm(wavlm_file, num_layers=6)
    kind, vocoder = checkpoints.load_vocoder(vocoder_file)
    print("\n## Conversion in blocks vs one block (full-size random weights, post_opt_0.2)")
    whole_converter = KnnSvc(WavLMEncoder(wavlm), vocoder, kind, block_seconds=0)
    expected = whole_converter.convert(source, whole_converter.build_pool([reference]))
    for block in blocks:
        converter = KnnSvc(WavLMEncoder(wavlm), vocoder, kind, block_seconds=block)
        output = converter.convert(source, converter.build_pool([reference]))
        assert output.shape == expected.shape
        print(f"- {block:g} s blocks: SI-SNR {si_snr_db(output, expected):.1f} dB against block_seconds=0 "
              f"({output.numel()} samples, max abs difference {float((output - expected).abs().max()):.2e})")


if __name__ == "__main__":
    main()
