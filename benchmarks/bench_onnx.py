"""PyTorch eager against ONNX Runtime on the CPU: WavLM to layer 6 and the harmonic vocoder.

    python benchmarks/bench_onnx.py --threads 2 --json onnx.json     # full size, random weights
    python benchmarks/bench_onnx.py --tiny --json tiny.json          # golden tiny models (the test)

Full size: WavLM-Large and the harmonic HiFi-GAN with random weights in the official formats
(`common.full_size_checkpoints`; speed does not depend on the values), their parameter counts
checked against tests/golden/manifests.json. Both are exported once with `knnsvc.onnx_export`
into ``--cache``/onnx (kept while the sidecar still matches its checkpoint); the audio is
`--seconds` of synthetic singing.

Per model it prints and records seconds per second of audio (best of `--repeats` calls after one
warm-up call) for PyTorch eager and for ONNX Runtime under the session options that matter: graph
optimisation level (basic, all) and intra-op threads (1 and `--threads`), plus the int8 graph
(dynamic quantisation); every ONNX row has its deviation from PyTorch's output (SI-SNR, max abs
difference). WavLM runs as the converter runs it (30 s chunks, `OnnxEncoder`/`WavLMEncoder`); the
vocoder gets the recording's features, Dio F0 and harmonic amplitudes in one call (the excitation
in torch in both backends).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CACHE, full_size_checkpoints, singing_file, tiny_checkpoints  # noqa: E402

from knnsvc.audio import load_audio  # noqa: E402
from knnsvc.checkpoints import CheckpointError, load_vocoder, load_wavlm, read_checkpoint  # noqa: E402
from knnsvc.config import WAVLM_LAYER  # noqa: E402
from knnsvc.encoder import WavLMEncoder  # noqa: E402
from knnsvc.onnx_export import (  # noqa: E402
    deviation,
    export_encoder_file,
    export_vocoder_file,
    read_sidecar,
    vocoder_inputs,
)
from knnsvc.onnx_runtime import OnnxEncoder, OnnxVocoder, session_options  # noqa: E402

MANIFESTS = ROOT / "tests" / "golden" / "manifests.json"


@dataclass
class Row:
    """One measured configuration."""

    model: str
    backend: str
    precision: str
    optimization: str | None
    threads: int
    s_per_audio_s: float
    first_call_s: float
    si_snr_db: float | None
    max_abs_diff: float | None


def best_of(call: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float, torch.Tensor]:
    """(first call's seconds, best later call's seconds, the output)."""
    began = time.perf_counter()
    output = call()
    first = time.perf_counter() - began
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        output = call()
        best = min(best, time.perf_counter() - began)
    return first, best, output


def check_manifest(checkpoint: Path, entry: str, key: str) -> None:
    """The full-size file holds the manifest's architecture: every key with its shape."""
    state = read_checkpoint(checkpoint)[entry]
    manifest = json.loads(MANIFESTS.read_text())[key]
    shapes = {name: list(tensor.shape) for name, tensor in state.items()}
    expected = {name: list(shape) for name, shape in manifest["keys"].items()}
    if shapes != expected:
        raise SystemExit(f"{checkpoint}: not the architecture of {key} in {MANIFESTS}")
    print(f"{checkpoint.name}: {sum(t.numel() for t in state.values()):,} parameters, as {key} in the manifest")


def graph(kind: str, checkpoint: Path, folder: Path, export: Callable[[Path], Any]) -> Path:
    """The exported graph of `checkpoint` in `folder`, exported again unless its sidecar still matches."""
    path = folder / f"{kind}.onnx"
    try:
        sidecar = read_sidecar(path, "wavlm" if kind == "wavlm" else "vocoder")
        if Path(sidecar["source"]["path"]) == checkpoint.resolve():
            return path
    except CheckpointError:
        pass
    began = time.perf_counter()
    export(path)
    print(f"exported {path.name} in {time.perf_counter() - began:.1f} s", flush=True)
    return path


def int8_graph(path: Path, checkpoint: Path, role: str) -> Path:
    target = path.with_name(path.stem + ".int8.onnx")
    try:
        if read_sidecar(target, role)["precision"] == "int8":
            return target
    except CheckpointError:
        pass
    if role == "wavlm":
        export_encoder_file(checkpoint, target, precision="int8", graph=path.read_bytes())
    else:
        export_vocoder_file(checkpoint, target, precision="int8", graph=path.read_bytes())
    return target


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="golden tiny models and seconds of audio (tests)")
    parser.add_argument("--seconds", type=float, help="audio length (default 20; tiny 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of both backends (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (default 3)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="checkpoints, graphs and audio")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.tiny else 20.0)
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    folder = args.cache / ("onnx-tiny" if args.tiny else "onnx")
    folder.mkdir(exist_ok=True)
    if args.tiny:
        wavlm_file, vocoder_file, _ = tiny_checkpoints()
    else:
        wavlm_file, vocoder_file = full_size_checkpoints(args.cache)
    wav = load_audio(singing_file(args.cache, "onnx_source", seconds, seed=21, low_hz=170.0, high_hz=420.0))

    encoder = WavLMEncoder(load_wavlm(wavlm_file, num_layers=WAVLM_LAYER), layer=WAVLM_LAYER)
    _, generator = load_vocoder(vocoder_file)
    if not args.tiny:
        check_manifest(wavlm_file, "model", "wavlm_large")
        check_manifest(vocoder_file, "generator", "vocoder_harmonic")
    wavlm_graph = graph("wavlm", wavlm_file, folder, lambda path: export_encoder_file(wavlm_file, path))
    vocoder_graph = graph("vocoder", vocoder_file, folder, lambda path: export_vocoder_file(vocoder_file, path))
    graphs = {"wavlm": {"float32": wavlm_graph, "int8": int8_graph(wavlm_graph, wavlm_file, "wavlm")},
              "vocoder": {"float32": vocoder_graph, "int8": int8_graph(vocoder_graph, vocoder_file, "vocoder")}}
    inputs = vocoder_inputs(wav, encoder, encoder.dim, f0="dio")
    vocoder_args = (inputs.feats[None], inputs.f0_hz[None], inputs.amps[None], None)

    report: dict[str, Any] = {
        "models": "tiny golden checkpoints" if args.tiny else "full size, random weights (WavLM-Large to layer 6, "
                  "harmonic HiFi-GAN)",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "audio_s": seconds,
        "threads": args.threads,
        "rows": [],
    }
    print(f"{report['models']}; {seconds:g} s of audio; torch {report['torch']}, onnxruntime "
          f"{report['onnxruntime']}; {args.threads} threads", flush=True)
    print("| model | backend | precision | optimisation | threads | s per s of audio | first call s | SI-SNR dB "
          "| max abs diff |\n|---|---|---|---|---|---|---|---|---|", flush=True)

    def record(row: Row) -> None:
        report["rows"].append(asdict(row))
        snr = "" if row.si_snr_db is None else f"{row.si_snr_db:.1f}"
        diff = "" if row.max_abs_diff is None else f"{row.max_abs_diff:.2g}"
        print(f"| {row.model} | {row.backend} | {row.precision} | {row.optimization or ''} | {row.threads} | "
              f"{row.s_per_audio_s:.4f} | {row.first_call_s:.3f} | {snr} | {diff} |", flush=True)

    with torch.inference_mode():
        first, best, reference_feats = best_of(lambda: encoder(wav), args.repeats)
        record(Row("wavlm", "pytorch", "float32", None, args.threads, best / seconds, first, None, None))
        first, best, reference_wav = best_of(lambda: generator(*vocoder_args), args.repeats)
        record(Row("vocoder", "pytorch", "float32", None, args.threads, best / seconds, first, None, None))
        variants = [("float32", level, threads) for level in ("basic", "all") for threads in sorted({1, args.threads})]
        variants.append(("int8", "all", args.threads))
        for precision, level, threads in variants:
            options = session_options(threads, level)
            onnx_encoder = OnnxEncoder(graphs["wavlm"][precision], options=options)
            first, best, feats = best_of(lambda model=onnx_encoder: model(wav), args.repeats)
            found = deviation(feats, reference_feats)
            record(Row("wavlm", "onnxruntime", precision, level, threads, best / seconds, first, found.si_snr_db,
                       found.max_abs_diff))
            onnx_vocoder = OnnxVocoder(graphs["vocoder"][precision], options=options)
            first, best, out = best_of(lambda model=onnx_vocoder: model(*vocoder_args), args.repeats)
            found = deviation(out, reference_wav)
            record(Row("vocoder", "onnxruntime", precision, level, threads, best / seconds, first, found.si_snr_db,
                       found.max_abs_diff))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
