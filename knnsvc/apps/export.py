"""`knnsvc-export OUT_DIR`: the encoder and the vocoder as ONNX graphs, self-checked against PyTorch.

    knnsvc-export exported/ [--wavlm NAME|PATH] [--vocoder NAME|PATH] [--vocoder-config JSON]
                  [--only wavlm|vocoder] [--match-layers LAYERS] [--quantize int8]
                  [--check-audio FILE] [--overwrite]
    (also ``python -m knnsvc.export``)

Writes ``OUT_DIR/wavlm.onnx`` (WavLM up to the layers in use) and ``OUT_DIR/vocoder.onnx`` (the
vocoder network after its excitation), each with its sidecar ``*.onnx.json`` (see
`knnsvc.onnx_export`); ``--quantize int8`` adds ``wavlm.int8.onnx`` and ``vocoder.int8.onnx``.
Every graph is run in ONNX Runtime on a recording (``--check-audio``, else a synthetic sung
phrase) against the PyTorch model and the deviation is printed, one line per graph:

    wavlm.onnx: float32, layers [6], 4.0 s checked: SI-SNR 121.3 dB, max abs difference 4.1e-06

The vocoder's check takes the recording's WavLM features (from ``--wavlm``; with ``--only vocoder``
and no ``--wavlm``, seeded Gaussian features), its Harvest F0 and its harmonic amplitudes.
Convert with the graphs: ``knnsvc-convert SRC REF --wavlm OUT_DIR/wavlm.onnx --vocoder
OUT_DIR/vocoder.onnx``.

Files are written through temporaries and renamed when complete (graph, then sidecar); an existing
graph is kept (one ``WARNING: ... skipped`` line) unless ``--overwrite``. Exit status: 0 every graph
written or already there, 1 a model could not be exported (one line), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from knnsvc.apps.common import (
    FAILED_STATUS,
    INTERRUPTED_STATUS,
    OK_STATUS,
    add_version_argument,
    clean_stale_temporaries,
    cli_logging,
    folder_problem,
    input_problem,
    layers_type,
    missing_extra,
    name_or_path_type,
    path_type,
    stop_on_sigterm,
)
from knnsvc.audio import AudioError, load_audio
from knnsvc.checkpoints import DEFAULT_VOCODER, DEFAULT_WAVLM, CheckpointError, load_wavlm
from knnsvc.config import DEFAULT_F0, SAMPLE_RATE, WAVLM_LAYER
from knnsvc.encoder import WavLMEncoder
from knnsvc.onnx_export import Deviation, VocoderInputs, export_encoder_file, export_vocoder_file, vocoder_inputs
from knnsvc.pitch import F0_EXTRACTORS
from knnsvc.runtime import first_line

log = logging.getLogger("knnsvc.apps.export")

PARTS = ("wavlm", "vocoder")
CHECK_SECONDS = 4.0
"""Length of the synthetic sung phrase the self-check uses without ``--check-audio``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knnsvc-export",
        description="Export WavLM and the vocoder to ONNX graphs with sidecars, checked against PyTorch.",
    )
    parser.add_argument("output", type=path_type, metavar="OUT_DIR", help="folder for the graphs and sidecars")
    parser.add_argument("--wavlm", type=name_or_path_type, default=None,
                        help=f"WavLM checkpoint: release name or file path (default: {DEFAULT_WAVLM})")
    parser.add_argument("--vocoder", type=name_or_path_type, default=DEFAULT_VOCODER,
                        help="vocoder checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder-config", type=path_type, metavar="JSON",
                        help="HiFi-GAN config for a vocoder of non-standard width (default: read from the checkpoint)")
    parser.add_argument("--only", choices=PARTS, help="export only this graph (default: both)")
    parser.add_argument("--match-layers", type=layers_type, metavar="LAYERS",
                        help="also export these WavLM layers (e.g. 20-24), for knnsvc-convert --match-layers")
    parser.add_argument("--quantize", choices=["int8"],
                        help="also write an int8 variant (dynamic weight quantisation) of each graph, self-checked")
    parser.add_argument("--check-audio", type=path_type, metavar="FILE",
                        help="recording for the self-check (default: a synthetic sung phrase)")
    parser.add_argument("--f0", default=DEFAULT_F0, choices=sorted(F0_EXTRACTORS),
                        help="pitch extractor of the vocoder's self-check (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing graphs (otherwise skipped)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    add_version_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 something failed, 2 bad usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for module in ("onnx", "onnxscript", "onnxruntime"):
        problem = missing_extra(module, "knnsvc[export]")
        if problem:
            parser.error(problem)
    if args.only == "vocoder" and args.match_layers:
        parser.error("--match-layers applies to the WavLM graph, which --only vocoder does not export")
    if args.vocoder_config is not None and input_problem(args.vocoder_config, "file"):
        parser.error(f"--vocoder-config {input_problem(args.vocoder_config, 'file')}")
    if args.check_audio is not None and input_problem(args.check_audio, "file"):
        parser.error(f"--check-audio {input_problem(args.check_audio, 'file')}")
    with cli_logging(args.quiet):
        try:
            with stop_on_sigterm():
                return run(args)
        except KeyboardInterrupt:
            log.error("interrupted; nothing partial was written, rerun to continue")
            return INTERRUPTED_STATUS


def planned(args: argparse.Namespace) -> list[tuple[str, str, Path]]:
    """(part, precision, graph path) of every graph this run writes."""
    parts = [args.only] if args.only else list(PARTS)
    precisions = ["float32", *([args.quantize] if args.quantize else [])]
    return [(part, precision, args.output / (f"{part}.onnx" if precision == "float32" else f"{part}.{precision}.onnx"))
            for part in parts for precision in precisions]


def run(args: argparse.Namespace) -> int:
    """The export of one CLI invocation (see the module docstring)."""
    out: Path = args.output
    if out.exists() and not out.is_dir():
        log.error("%s: exists and is not a folder", out)
        return FAILED_STATUS
    problem = folder_problem(out)
    if problem:
        log.error("%s: cannot write there (%s)", out, problem)
        return FAILED_STATUS
    plan = planned(args)
    inputs = {os.path.realpath(p) for p in (args.wavlm, args.vocoder, args.vocoder_config, args.check_audio)
              if p is not None and Path(p).exists()}
    todo = []
    for part, precision, path in plan:
        for target in (path, path.with_name(path.name + ".json")):
            if target.exists() and os.path.realpath(target) in inputs:
                log.error("%s: is one of this run's inputs; choose another OUT_DIR", target)
                return FAILED_STATUS
        if path.is_dir():
            log.error("%s: is a folder, not a graph file", path)
            return FAILED_STATUS
        if path.exists() and not args.overwrite:
            log.warning("%s: exists, skipped (use --overwrite to replace it)", path)
            continue
        todo.append((part, precision, path))
    if not todo:
        return OK_STATUS
    clean_stale_temporaries([p for _, _, p in todo] + [p.with_name(p.name + ".json") for _, _, p in todo])
    try:
        wav = _check_recording(args.check_audio)
    except (AudioError, ValueError, OSError) as err:
        log.error("%s", first_line(err))
        return FAILED_STATUS
    status = OK_STATUS
    for part in PARTS:
        jobs = [(precision, path) for job_part, precision, path in todo if job_part == part]
        if not jobs:
            continue
        try:
            export_part(args, part, jobs, wav)
        except (CheckpointError, AudioError, ValueError, OSError, ImportError, RuntimeError) as err:
            log.error("%s: %s", part, first_line(err))
            log.debug("%s export failed", part, exc_info=True)
            status = FAILED_STATUS
    return status


def _check_recording(path: Path | None) -> torch.Tensor:
    """(L,) 16 kHz recording for the self-check: the file given, else a synthetic sung phrase."""
    if path is not None:
        return load_audio(path)
    from knnsvc.synthetic import phrases

    return torch.from_numpy(phrases(CHECK_SECONDS, seed=0, low_hz=180.0, high_hz=420.0))


def export_part(args: argparse.Namespace, part: str, jobs: list[tuple[str, Path]], wav: torch.Tensor) -> None:
    """Export one graph (and its int8 variant), each self-checked; prints one line per graph."""
    float_graph = None
    wavlm_name = args.wavlm or DEFAULT_WAVLM
    if part == "wavlm":
        layers = sorted({WAVLM_LAYER, *(args.match_layers or [])})
        for precision, path in sorted(jobs, key=lambda job: job[0] != "float32"):
            report = export_encoder_file(wavlm_name, path, layers, check_wav=wav, precision=precision,
                                         graph=float_graph if precision != "float32" else None)
            float_graph = report.graph if precision == "float32" else float_graph
            _print(path, f"{precision}, layers {layers}", wav, report.deviation)
        return
    encoder = None
    if args.wavlm is not None or args.only != "vocoder":
        encoder = WavLMEncoder(load_wavlm(wavlm_name, num_layers=WAVLM_LAYER), layer=WAVLM_LAYER)
    made: dict[int, VocoderInputs] = {}

    def check_inputs(dim: int) -> VocoderInputs:
        if dim not in made:
            made[dim] = vocoder_inputs(wav, encoder, dim, f0=args.f0)
        return made[dim]

    for precision, path in sorted(jobs, key=lambda job: job[0] != "float32"):
        report = export_vocoder_file(args.vocoder, path, args.vocoder_config, check_inputs=check_inputs,
                                     precision=precision, graph=float_graph if precision != "float32" else None)
        float_graph = report.graph if precision == "float32" else float_graph
        _print(path, f"{precision}, {report.sidecar['kind']} vocoder", wav, report.deviation)


def _print(path: Path, what: str, wav: torch.Tensor, deviation: Deviation | None) -> None:
    checked = f"{wav.numel() / SAMPLE_RATE:.1f} s checked: {deviation.describe()}" if deviation else "not checked"
    print(f"{path}: {what}, {checked}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
