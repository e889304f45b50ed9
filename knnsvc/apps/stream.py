"""`knnsvc-stream SRC REF -o OUT`: stream a file through kNN-SVC as live input would arrive.

The file is fed to `knnsvc.streaming.StreamingConverter` in chunks of one block, as an audio
interface would deliver them; the output is written as it comes out (into a temporary file beside
OUT, renamed at the end), a bar shows the seconds of input done (unless -q), and the run ends by
printing one JSON line: ``algorithmic_latency_ms`` (block + lookahead + crossfade), ``rtf``
(compute time per block / block duration: median and max), ``blocks``, the settings and
``sample_rate`` (the output's). With ``--live`` (the optional extra ``sounddevice``) it runs
microphone -> speaker instead, until Ctrl-C.

The input is read (or recorded) at 16 kHz; the output (OUT, or the speaker) is at the vocoder's
rate: 16 kHz for the released vocoders, 24 or 44.1 kHz for a vocoder trained at that rate, as
long as ``knnsvc-convert``'s output of the same file. Samples beyond ±1 (a Vocos vocoder is not
tanh-bounded) are clipped.

Every conversion option of ``knnsvc-convert`` means the same here, except ``--block-seconds``
(offline blocks; streaming works in blocks of ``--block-ms``: refused), and, with ``--live``,
the options about a source file or an output file (``--f0-file``, ``--loudness``,
``--repair-audio``, ``-o``, ``--overwrite``: refused). An existing OUT is kept (a warning, exit 0)
unless --overwrite is given; OUT is never one of the inputs.

Exit status: 0 written (or already there), 1 an input, the output or a model could not be used
(one line), 2 bad usage (before any model loads), 130 interrupted (Ctrl-C or SIGTERM; nothing
written).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from knnsvc import streaming
from knnsvc.apps.common import (
    FAILED_STATUS,
    INTERRUPTED_STATUS,
    OK_STATUS,
    StageBars,
    add_conversion_arguments,
    add_version_argument,
    check_conversion_arguments,
    clean_stale_temporaries,
    cli_logging,
    conversion_inputs,
    folder_problem,
    input_problem,
    load_converter,
    missing_extra,
    name_problem,
    number_type,
    output_problem,
    path_type,
    reference_files,
    reference_pool,
    stop_on_sigterm,
)
from knnsvc.audio import OUTPUT_SUFFIXES, AudioError, AudioWriter, check_disk_space, output_bytes
from knnsvc.checkpoints import CheckpointError
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.conversion import accepts, read_f0_file, samples_per_frame
from knnsvc.pipeline import KnnSvc
from knnsvc.pool import ReferencePool
from knnsvc.references import usable_recording
from knnsvc.runtime import first_line
from knnsvc.streaming import FRAME_MS, StreamingConverter

log = logging.getLogger("knnsvc.stream")

MAX_STREAM_MS = 60_000.0
"""The longest block, lookahead or crossfade accepted (a minute: far beyond any live setting)."""

MAX_CONTEXT_S = 600.0
"""The longest WavLM or F0 context accepted (seconds)."""


def build_parser() -> argparse.ArgumentParser:
    """The CLI: the stream's own timing options and the conversion options of ``knnsvc-convert``."""
    parser = argparse.ArgumentParser(
        prog="knnsvc-stream",
        description="Streaming kNN-SVC: convert SRC block by block (as live input), or the microphone with --live.",
    )
    parser.add_argument("source", metavar="SRC", nargs="?", type=path_type,
                        help="audio file to stream (not with --live)")
    parser.add_argument("reference", metavar="REF", type=path_type,
                        help="the target singer's recording or folder")
    parser.add_argument("-o", "--output", type=path_type,
                        help=f"output file ({', '.join(OUTPUT_SUFFIXES)}; required unless --live)")
    frames = f"a multiple of {FRAME_MS:g} ms"
    parser.add_argument("--block-ms", type=number_type(FRAME_MS, MAX_STREAM_MS, f"{frames}"),
                        default=streaming.DEFAULT_BLOCK_MS, help="new audio per step (default: %(default)s)")
    parser.add_argument("--lookahead-ms", type=number_type(0.0, MAX_STREAM_MS, f"{frames}"),
                        default=streaming.DEFAULT_LOOKAHEAD_MS,
                        help="future audio each step waits for (default: %(default)s)")
    parser.add_argument("--context-s", type=number_type(0.0, MAX_CONTEXT_S, "a duration in seconds"),
                        default=streaming.DEFAULT_CONTEXT_S, help="past audio WavLM sees (default: %(default)s)")
    parser.add_argument("--crossfade-ms", type=number_type(FRAME_MS, MAX_STREAM_MS, f"{frames}"),
                        default=streaming.DEFAULT_CROSSFADE_MS,
                        help="overlap of consecutive blocks, at most the block (default: %(default)s)")
    parser.add_argument("--sola-ms", type=number_type(0.0, FRAME_MS, "a duration in ms"),
                        default=streaming.DEFAULT_SOLA_MS,
                        help=f"alignment search of the crossfade, +- ms, at most {FRAME_MS:g} (default: %(default)s)")
    parser.add_argument("--f0-context-s", type=number_type(0.0, MAX_CONTEXT_S, "a duration in seconds"),
                        default=streaming.DEFAULT_F0_CONTEXT_S,
                        help="past audio the F0 extractor sees (default: %(default)s)")
    parser.add_argument("--live", action="store_true", help="microphone -> speaker (needs `pip install sounddevice`)")
    add_conversion_arguments(parser, streaming=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only, no progress bar")
    add_version_argument(parser)
    return parser


def stream_settings_problem(block_ms: float, lookahead_ms: float, crossfade_ms: float) -> str | None:
    """Why the stream's durations cannot be used (one line naming the option), or None: the block,
    lookahead and crossfade are whole frames (multiples of 20 ms), the crossfade at most the block.
    (The same rules as `StreamingConverter`, checked before any model loads.)"""
    for option, value in (("--block-ms", block_ms), ("--lookahead-ms", lookahead_ms),
                          ("--crossfade-ms", crossfade_ms)):
        frames = round(value / FRAME_MS)
        if abs(frames * FRAME_MS - value) > 1e-6 * max(1.0, value):
            return f"{option} must be a multiple of {FRAME_MS:g} ms, got {value:g}"
    if crossfade_ms > block_ms:
        return f"--crossfade-ms ({crossfade_ms:g}) must not exceed --block-ms ({block_ms:g})"
    return None


def check_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Every usage check of the command line, before any file is read or model loaded (exit 2)."""
    if args.live:
        if args.source is not None:
            parser.error("--live streams the microphone: give REF only")
        refused = [name for name, given in (("-o", args.output is not None), ("--overwrite", args.overwrite),
                                            ("--f0-file", args.f0_file is not None),
                                            ("--loudness", args.loudness is not None),
                                            ("--repair-audio", args.repair_audio)) if given]
        if refused:
            parser.error(f"{refused[0]} applies to a source or output file: not with --live")
    elif args.source is None or args.output is None:
        parser.error("SRC and -o OUT are required (or --live)")
    elif args.output.suffix.lower() not in OUTPUT_SUFFIXES and (name_problem(args.output) or not args.output.is_dir()):
        parser.error(f"-o {args.output}: cannot write {args.output.suffix or 'a file without a suffix'!r} files "
                     f"(writable: {', '.join(OUTPUT_SUFFIXES)})")
    if args.block_seconds is not None:
        parser.error("--block-seconds does not apply to streaming, which works in blocks of --block-ms")
    if args.f0_file is not None and not accepts(StreamingConverter, "f0_hz"):
        parser.error("--f0-file: this version's streaming converter cannot take an F0 curve")
    problem = stream_settings_problem(args.block_ms, args.lookahead_ms, args.crossfade_ms)
    if problem:
        parser.error(problem)
    check_conversion_arguments(args, parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; exit status 0 ok, 1 failed, 2 bad usage, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(args, parser)
    with cli_logging(args.quiet):
        try:
            with stop_on_sigterm():
                return _run(args)
        except KeyboardInterrupt:
            log.error("interrupted%s", "" if args.live else f"; {args.output} not written")
            return INTERRUPTED_STATUS


def _run(args: argparse.Namespace) -> int:
    """Check the inputs and the output (before any model loads), then stream."""
    try:
        references = reference_files(args.reference)
    except ValueError as err:
        log.error("%s", err)
        return FAILED_STATUS
    for path, what in ((args.source, "file"), (args.f0_file, "file")):
        problem = input_problem(path, what) if path is not None else None
        if problem:
            log.error("%s", problem)
            return FAILED_STATUS
    if args.live:
        missing = missing_extra("sounddevice", "sounddevice")
        if missing:
            log.error("--live: %s", missing)
            return FAILED_STATUS
    else:
        problem = output_problem(args.output, conversion_inputs(args, [args.source], references))
        problem = problem or folder_problem(args.output.parent)
        if problem:
            log.error("%s", problem if str(args.output) in problem else f"cannot write {args.output} ({problem})")
            return FAILED_STATUS
        if args.output.exists() and not args.overwrite:
            log.warning("%s: skipped, %s already exists (use --overwrite to replace it)", args.source, args.output)
            return OK_STATUS
        clean_stale_temporaries([args.output])
    try:
        converter = load_converter(args)
        pool, _ = reference_pool(converter, args.reference, references, args.pool_cache,
                                 StageBars(disabled=args.quiet), args.max_duration)
        if args.live:
            with _converter(args, converter, pool) as live:
                return _live(live)
        limits = {} if args.max_duration is None else {"max_seconds": args.max_duration}
        wav_16k = usable_recording(args.source, converter, nonfinite="repair" if args.repair_audio else "error",
                                   **limits)
        f0_hz = None if args.f0_file is None else read_f0_file(args.f0_file, converter.encoder.num_frames(
            wav_16k.numel()))
        stream = _converter(args, converter, pool, f0_hz)
    except (CheckpointError, AudioError, ValueError, ImportError, RuntimeError) as err:
        log.error("%s", first_line(err))
        return FAILED_STATUS
    try:
        with stream:  # an interrupt or an error ends its F0 thread too
            _stream_file(stream, wav_16k, args.output, args.loudness, args.quiet)
    except (AudioError, ValueError, RuntimeError, OSError) as err:
        message = first_line(err)
        log.error("%s", message if str(args.output) in message else f"{args.output}: {message}")
        return FAILED_STATUS
    print(json.dumps(report(stream)), flush=True)
    log.info("wrote %s", args.output)
    return OK_STATUS


def _converter(args: argparse.Namespace, converter: KnnSvc, pool: ReferencePool,
               f0_hz: torch.Tensor | None = None) -> StreamingConverter:
    """The `StreamingConverter` of the parsed options (with the source's (T,) F0 curve, if given)."""
    extra: dict[str, Any] = {} if f0_hz is None else {"f0_hz": f0_hz}
    return StreamingConverter(converter, pool, args.block_ms, args.lookahead_ms, args.context_s, args.crossfade_ms,
                              args.sola_ms, args.f0_context_s, **extra)


def output_rate(stream: StreamingConverter) -> int:
    """The rate `stream`'s output comes out at: its vocoder's (16 kHz for the released vocoders)."""
    return stream.converter.sample_rate


def _stream_file(stream: StreamingConverter, wav_16k: torch.Tensor, output: Path, loudness: float | None,
                 quiet: bool) -> None:
    """Push `wav_16k` (L,) through `stream` one block at a time into `output` (atomically, at the
    stream's output rate: floor(L / 320) frames of the vocoder's samples per frame), with a bar in
    seconds of input."""
    rate = output_rate(stream)
    n_out = (wav_16k.numel() // HOP_LENGTH) * samples_per_frame(stream.converter)
    check_disk_space(output, output_bytes(n_out, output, rate, loudness=loudness is not None))
    chunk = stream.block * HOP_LENGTH
    seconds = wav_16k.numel() / SAMPLE_RATE
    with tqdm(total=math.ceil(seconds * 100) / 100, desc="streaming", unit="s", disable=quiet, leave=False,
              dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]") as bar, \
            AudioWriter(output, rate, loudness_lufs=loudness) as writer:
        for start in range(0, wav_16k.numel(), chunk):
            piece = wav_16k[start : start + chunk]
            writer.write(stream.push(piece))
            bar.update(piece.numel() / SAMPLE_RATE)
        writer.write(stream.flush())


def report(stream: StreamingConverter) -> dict:
    """The run's latency and real-time factors, as printed by the CLI."""
    block_seconds = stream.block * HOP_LENGTH / SAMPLE_RATE
    rtfs = [seconds / block_seconds for seconds in stream.compute_seconds] or [0.0]
    return {
        "algorithmic_latency_ms": stream.algorithmic_latency_ms,
        "rtf": {"median": statistics.median(rtfs), "max": max(rtfs)},
        "rtf_running": stream.real_time_factor,
        "blocks": len(stream.compute_seconds),
        "block_ms": stream.block * 1000 * HOP_LENGTH / SAMPLE_RATE,
        "lookahead_ms": stream.lookahead * 1000 * HOP_LENGTH / SAMPLE_RATE,
        "crossfade_ms": stream.crossfade * 1000 * HOP_LENGTH / SAMPLE_RATE,
        "semitones": stream.semitones,
        "sample_rate": output_rate(stream),
    }


def _live(stream: StreamingConverter) -> int:
    """Microphone (16 kHz) -> speaker (the stream's output rate, samples clipped to ±1): blocks from the
    input callback are converted on this thread."""
    import sounddevice

    stream.live = True  # warn when the stream falls behind the microphone (running RTF above 1)
    blocks: queue.Queue = queue.Queue()
    chunk = stream.block * HOP_LENGTH

    def captured(indata, frames, time_info, status) -> None:
        if status:
            log.warning("audio input: %s", status)
        blocks.put(indata[:, 0].copy())

    rate = output_rate(stream)
    log.info("streaming the microphone with %.0f ms of algorithmic latency, output at %d Hz; Ctrl-C stops",
             stream.algorithmic_latency_ms, rate)
    with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, blocksize=chunk, dtype="float32",
                                 callback=captured), \
            sounddevice.OutputStream(samplerate=rate, channels=1, dtype="float32") as speaker:
        try:
            while True:
                out = stream.push(blocks.get())
                if out.numel():
                    speaker.write(out.clamp(-1.0, 1.0).numpy()[:, None])
        except KeyboardInterrupt:
            print(json.dumps(report(stream)), flush=True)
            return OK_STATUS


if __name__ == "__main__":
    sys.exit(main())
