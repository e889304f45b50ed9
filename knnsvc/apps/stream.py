"""`knnsvc-stream SRC REF -o OUT`: stream a file through kNN-SVC as live input would arrive.

The file is fed to `knnsvc.streaming.StreamingConverter` in chunks of one block, as an audio
interface would deliver them; the output is written as it comes out and the run ends by printing
one JSON line: ``algorithmic_latency_ms`` (block + lookahead + crossfade), ``rtf`` (compute time
per block / block duration: median and max), ``blocks`` and the settings. With ``--live``
(the optional extra ``sounddevice``) it runs microphone -> speaker instead, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from knnsvc import __version__, streaming
from knnsvc.apps.common import (
    INTERRUPTED_STATUS,
    StageBars,
    add_conversion_arguments,
    cli_logging,
    load_converter,
    match_config,
    reference_files,
    reference_pool,
    stop_on_sigterm,
)
from knnsvc.audio import AudioError, AudioWriter, load_audio
from knnsvc.checkpoints import CheckpointError
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.runtime import first_line, resolve_device
from knnsvc.streaming import StreamingConverter

log = logging.getLogger("knnsvc.stream")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knnsvc-stream",
        description="Streaming kNN-SVC: convert SRC block by block (as live input), or the microphone with --live.",
    )
    parser.add_argument("source", metavar="SRC", nargs="?", type=Path, help="audio file to stream (not with --live)")
    parser.add_argument("reference", metavar="REF", type=Path, help="the target singer's recording or folder")
    parser.add_argument("-o", "--output", type=Path, help="output file (required unless --live)")
    parser.add_argument("--block-ms", type=float, default=streaming.DEFAULT_BLOCK_MS,
                        help="new audio per step (default: %(default)s)")
    parser.add_argument("--lookahead-ms", type=float, default=streaming.DEFAULT_LOOKAHEAD_MS,
                        help="future audio each step waits for (default: %(default)s)")
    parser.add_argument("--context-s", type=float, default=streaming.DEFAULT_CONTEXT_S,
                        help="past audio WavLM sees (default: %(default)s)")
    parser.add_argument("--crossfade-ms", type=float, default=streaming.DEFAULT_CROSSFADE_MS,
                        help="overlap of consecutive blocks (default: %(default)s)")
    parser.add_argument("--sola-ms", type=float, default=streaming.DEFAULT_SOLA_MS,
                        help="alignment search of the crossfade, +- ms (default: %(default)s)")
    parser.add_argument("--f0-context-s", type=float, default=streaming.DEFAULT_F0_CONTEXT_S,
                        help="past audio the F0 extractor sees (default: %(default)s)")
    parser.add_argument("--live", action="store_true", help="microphone -> speaker (needs `pip install sounddevice`)")
    add_conversion_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only")
    parser.add_argument("--version", action="version", version=f"knnsvc {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; exit status 0 ok, 1 failed, 2 bad usage, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.live and (args.source is None or args.output is None):
        parser.error("SRC and -o OUT are required (or --live)")
    if args.live and args.source is not None:
        parser.error("--live streams the microphone: give REF only")
    args.match_config = match_config(args, parser)
    try:
        args.device = resolve_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    with cli_logging(args.quiet):
        try:
            with stop_on_sigterm():
                return _run(args, parser)
        except KeyboardInterrupt:
            log.error("interrupted")
            return INTERRUPTED_STATUS


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.output is not None and args.output.exists() and not args.overwrite:
        log.error("%s already exists (use --overwrite to replace it)", args.output)
        return 1
    try:
        references = reference_files(args.reference)
        converter = load_converter(args)
        pool, _ = reference_pool(converter, args.reference, references, args.pool_cache,
                                     StageBars(disabled=args.quiet))
        stream = StreamingConverter(converter, pool, args.block_ms, args.lookahead_ms, args.context_s,
                                    args.crossfade_ms, args.sola_ms, args.f0_context_s)
    except (CheckpointError, AudioError, ValueError, ImportError) as err:
        log.error("%s", first_line(err))
        return 1
    if args.live:
        return _live(stream)
    try:
        wav_16k = load_audio(args.source, nonfinite="repair" if args.repair_audio else "error")
    except AudioError as err:
        log.error("%s", err)
        return 1
    chunk = stream.block * HOP_LENGTH
    with AudioWriter(args.output, loudness_lufs=args.loudness) as writer:
        for start in range(0, wav_16k.numel(), chunk):
            writer.write(stream.push(wav_16k[start : start + chunk]))
        writer.write(stream.flush())
    print(json.dumps(report(stream)), flush=True)
    log.info("wrote %s", args.output)
    return 0


def report(stream: StreamingConverter) -> dict:
    """The run's latency and real-time factors, as printed by the CLI."""
    block_seconds = stream.block * HOP_LENGTH / SAMPLE_RATE
    rtfs = [seconds / block_seconds for seconds in stream.compute_seconds] or [0.0]
    return {
        "algorithmic_latency_ms": stream.algorithmic_latency_ms,
        "rtf": {"median": statistics.median(rtfs), "max": max(rtfs)},
        "blocks": len(stream.compute_seconds),
        "block_ms": stream.block * 1000 * HOP_LENGTH / SAMPLE_RATE,
        "lookahead_ms": stream.lookahead * 1000 * HOP_LENGTH / SAMPLE_RATE,
        "crossfade_ms": stream.crossfade * 1000 * HOP_LENGTH / SAMPLE_RATE,
        "semitones": stream.semitones,
    }


def _live(stream: StreamingConverter) -> int:
    """Microphone -> speaker: blocks from the input callback are converted on this thread."""
    try:
        import sounddevice
    except ImportError:
        log.error("--live needs the sounddevice package: pip install sounddevice")
        return 1
    blocks: queue.Queue = queue.Queue()
    chunk = stream.block * HOP_LENGTH

    def captured(indata, frames, time_info, status) -> None:
        if status:
            log.warning("audio input: %s", status)
        blocks.put(indata[:, 0].copy())

    log.info("streaming the microphone with %.0f ms of algorithmic latency; Ctrl-C stops",
             stream.algorithmic_latency_ms)
    with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, blocksize=chunk, dtype="float32",
                                 callback=captured), \
            sounddevice.OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32") as speaker:
        try:
            while True:
                out = stream.push(blocks.get())
                if out.numel():
                    speaker.write(out.numpy()[:, None])
        except KeyboardInterrupt:
            print(json.dumps(report(stream)), flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
