"""`python -m knnsvc.convert SRC REF [-o OUT]`: convert recordings to a target singer's voice.

SRC is an audio file or a folder (every recording below it, converted one by one); REF is an
audio file or a folder of one singer's recordings (all of them form the reference pool).

Output names (never inside an input folder unless asked to with -o):

- one source file: ``-o OUT`` is the output file (or, if OUT is a folder or ends with "/",
  ``OUT/<src_stem>_to_<ref_stem>.wav``); without -o: ``./<src_stem>_to_<ref_stem>.wav``.
- a source folder: outputs mirror its tree under ``-o OUT`` (``OUT/<sub/dirs>/<stem>.wav``);
  without -o: under ``./<src_folder>_to_<ref_stem>/``. An output folder inside the source
  folder is never scanned for sources.

``<ref_stem>`` is the reference file's stem or the reference folder's name. Existing outputs are
kept (and reported as skipped) unless --overwrite is given; outputs are written block by block into
a temporary file that is renamed at the end, so a failed or interrupted run leaves no partial
file, and a rerun converts only what is missing. Outputs are mono at the vocoder's rate (16 kHz for
the released vocoders; a vocoder trained at 24 or 44.1 kHz writes at that rate); the inputs are read
at 16 kHz whatever their own rate.

Exit status: 0 when every file was converted or already there, 1 when anything failed (each
failure is one line on stderr naming the file and the problem; the rest of a batch is still
processed), 2 for bad usage, 130 when interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knnsvc import checkpoints
from knnsvc.apps.common import (
    Batch,
    Inputs,
    StageBars,
    add_conversion_arguments,
    add_version_argument,
    clean_stale_temporaries,
    conversion_inputs,
    conversion_options,
    folder_problem,
    input_problem,
    load_converter,
    name_problem,
    output_problem,
    path_type,
    reference_files,
    reference_pool,
    run_batch,
    run_each,
)
from knnsvc.audio import OUTPUT_SUFFIXES, AudioError, find_audio
from knnsvc.checkpoints import CheckpointError
from knnsvc.conversion import Prefetch, accepts, convert_file
from knnsvc.runtime import first_line

log = logging.getLogger("knnsvc.convert")


@dataclass
class Job:
    """One source file and where its conversion goes."""

    source: Path
    output: Path


@dataclass
class Plan:
    """The jobs to run, those already done, and how many were refused before starting."""

    todo: list[Job]
    skipped: int = 0
    failed: int = 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI; defaults come from `MatchConfig` (one default per setting)."""
    parser = argparse.ArgumentParser(
        prog="python -m knnsvc.convert",
        description="Zero-shot singing voice conversion with kNN-SVC: sing SRC in the voice of REF.",
        epilog=(
            "Outputs: one source file -> ./<src>_to_<ref>.wav (or -o FILE / -o FOLDER/); a source "
            "folder -> ./<src_folder>_to_<ref>/ mirroring its tree (or -o FOLDER). "
            "Checkpoint names: " + ", ".join(checkpoints.RELEASES) + " (see --list-checkpoints)."
        ),
    )
    parser.add_argument("source", metavar="SRC", nargs="?", type=path_type, help="audio file or folder to convert")
    parser.add_argument("reference", metavar="REF", nargs="?", type=path_type,
                        help="audio file or folder of the target singer's recordings (searched recursively)")
    parser.add_argument("-o", "--output", type=path_type, help="output file (one source) or folder")
    add_conversion_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="in a batch, read the next file and compute its F0 only at its turn, not while the "
                             "current one is vocoded (the outputs are the same; this only saves the memory of one "
                             "file's waveform and F0)")
    parser.add_argument("--list-checkpoints", action="store_true", help="print the known checkpoints and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only, no progress bars")
    add_version_argument(parser)
    return parser

# ----------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 something failed, 2 bad usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_checkpoints:
        print(checkpoints.describe_releases())
        return 0
    if args.source is None or args.reference is None:
        parser.error("SRC and REF are required")
    return run_batch(args, parser, run, "converted")


def run(args: argparse.Namespace, batch: Batch) -> int:
    """The conversion of one CLI invocation (see the module docstring)."""
    try:
        jobs = plan_jobs(args.source, args.reference, args.output)
        references = reference_files(args.reference)
    except ValueError as err:
        log.error("%s", err)
        return 1
    if args.f0_file is not None:
        problem = input_problem(args.f0_file, "file")
        if problem or not args.source.is_file():
            log.error("%s", problem or f"--f0-file needs one source file, but {args.source} is a folder")
            return 1
    plan = _screen_jobs(jobs, conversion_inputs(args, [job.source for job in jobs], references), args.overwrite)
    batch.total, batch.skipped, batch.failed = len(jobs), plan.skipped, plan.failed
    plan = _drop_unwritable_folders(plan, batch)
    if not plan.todo:
        return 1 if batch.failed else 0

    try:
        converter = load_converter(args)
    except (CheckpointError, ValueError, ImportError) as err:
        log.error("%s", first_line(err))
        return 1
    log.info("vocoder: %s (%s, output at %d Hz), device %s, precision %s, blocks of %g s", args.vocoder,
             converter.kind.value, converter.sample_rate, args.device, args.precision, converter.block_seconds)

    bars = StageBars(disabled=args.quiet)
    try:
        pool, left_out = reference_pool(converter, args.reference, references, args.pool_cache, bars,
                                        args.max_duration)
    except (ValueError, AudioError) as err:
        log.error("%s", first_line(err))
        return 1
    finally:
        bars.close()
    batch.failed += left_out

    options = conversion_options(args)
    with Prefetch(converter, options) as ahead:
        def work(job: Job, bars: StageBars) -> str:
            extra = {"ahead": ahead} if not args.no_prefetch and accepts(convert_file, "ahead") else {}
            converted = convert_file(converter, pool, job.source, job.output, options, bars, **extra)
            return converted.describe(converter.kind.uses_pitch)

        def upcoming(job: Job | None) -> None:
            ahead.announce(None if job is None else job.source)

        return run_each(plan.todo, batch, args.quiet, "file", lambda job: job.source, work, lambda job: job.output,
                        extra_failures=left_out, upcoming=upcoming)




# ----------------------------------------------------------------------------------- planning
def plan_jobs(source: Path, reference: Path, output: Path | None) -> list[Job]:
    """Map each source file to its output path (see the module docstring).

    Raises:
        ValueError: SRC or REF missing or neither a file nor a folder (FIFO, device), SRC folder
            without audio, -o naming a file for a folder, or -o naming the source folder itself.
    """
    for path in (source, reference):
        problem = input_problem(path)
        if problem:
            raise ValueError(problem)
    problem = name_problem(output) if output is not None else None
    if problem:
        raise ValueError(problem)
    ref_stem = reference.stem if reference.is_file() else reference.resolve().name
    if source.is_file():
        default_name = f"{source.stem}_to_{ref_stem}.wav"
        if output is None:
            target = Path.cwd() / default_name
        elif output.is_dir() or str(output).endswith(("/", os.sep)) or output.suffix.lower() not in OUTPUT_SUFFIXES:
            target = output / default_name
        else:
            target = output
        return [Job(source, target)]
    folder = output if output is not None else Path.cwd() / f"{source.resolve().name}_to_{ref_stem}"
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: is a file, but a folder is needed for a folder of sources")
    if folder.resolve() == source.resolve():
        raise ValueError(f"{folder}: -o is the source folder itself, whose files the outputs would replace; "
                         "choose another -o")
    files = find_audio(source, exclude=[folder])
    if not files:
        raise ValueError(f"{source}: no audio files ({', '.join(OUTPUT_SUFFIXES)}) in this folder")
    return [Job(f, folder / f.relative_to(source).with_suffix(".wav")) for f in files]



def _screen_jobs(jobs: list[Job], inputs: Inputs, overwrite: bool) -> Plan:
    """Skip outputs that exist (already converted); refuse those that can never be outputs (an input,
    a folder, a name too long: `output_problem`) or that collide with each other."""
    plan = Plan([])
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.output.resolve()
        problem = output_problem(job.output, inputs)
        if problem:
            log.error("%s: %s", job.source, problem)
        elif target in seen:
            log.error("%s: output %s is also the output of %s; rename one of them", job.source, job.output,
                      seen[target])
        elif job.output.exists() and not overwrite:
            log.warning("%s: skipped, %s already exists (use --overwrite to replace it)", job.source, job.output)
            plan.skipped += 1
            continue
        else:
            seen[target] = job.source
            plan.todo.append(job)
            continue
        plan.failed += 1
    return plan


def _drop_unwritable_folders(plan: Plan, batch: Batch) -> Plan:
    """Check, before any model loads, that every output folder can be written; clean up the
    temporary files an earlier, killed run may have left for the outputs planned now."""
    verdicts: dict[Path, str | None] = {}
    kept = []
    for job in plan.todo:
        folder = job.output.parent
        if folder not in verdicts:
            verdicts[folder] = folder_problem(folder)
        if verdicts[folder] is None:
            kept.append(job)
        else:
            log.error("%s: cannot write %s (%s)", job.source, job.output, verdicts[folder])
            batch.failed += 1
    clean_stale_temporaries(job.output for job in kept)
    return Plan(kept, plan.skipped, plan.failed)



if __name__ == "__main__":
    sys.exit(main())
