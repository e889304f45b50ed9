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
file, and a rerun converts only what is missing.

Exit status: 0 when every file was converted or already there, 1 when anything failed (each
failure is one line on stderr naming the file and the problem; the rest of a batch is still
processed), 2 for bad usage, 130 when interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from knnsvc import __version__, checkpoints
from knnsvc.audio import (
    OUTPUT_SUFFIXES,
    AudioError,
    AudioWriter,
    check_disk_space,
    find_audio,
    output_bytes,
)
from knnsvc.checkpoints import CheckpointError
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE, WAVLM_LAYER
from knnsvc.encoder import WavLMEncoder
from knnsvc.files import remove_stale_temporaries
from knnsvc.pipeline import DEFAULT_BLOCK_SECONDS, PROTECT_OFF, KnnSvc, MatchConfig, Progress
from knnsvc.pitch import AUTO_SHIFTS, F0_EXTRACTORS, get_f0_extractor, load_f0_curve, pitch_shift_argument
from knnsvc.pool import ReferencePool
from knnsvc.references import PoolCache, build_reference_pool, usable_recording
from knnsvc.runtime import first_line, resolve_device

log = logging.getLogger("knnsvc.convert")

INTERRUPTED_STATUS = 130


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


@dataclass
class Batch:
    """What a run has done so far (read when it is interrupted)."""

    total: int = 0
    converted: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass
class Options:
    """Per-file output settings of a conversion."""

    loudness: float | None = None
    f0_file: Path | None = None
    repair_audio: bool = False


# ----------------------------------------------------------------------------------- arguments
def _number(low: float | None = None, high: float | None = None, what: str = "a number"):
    """An argparse type: a finite float within [low, high] (either bound may be open)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in [{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}, got {text!r}")
        return value

    return parse


def _layers(text: str) -> list[int]:
    """"20-24" or "12,18,24" (or a mix) -> sorted distinct layer numbers."""
    layers: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            layers.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layers like 20-24 or 12,18,24, got {text!r}") from None
    if not layers or min(layers) < 0:
        raise argparse.ArgumentTypeError(f"expected layer numbers >= 0, got {text!r}")
    return sorted(layers)


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
    parser.add_argument("source", metavar="SRC", nargs="?", type=Path, help="audio file or folder to convert")
    parser.add_argument("reference", metavar="REF", nargs="?", type=Path,
                        help="audio file or folder of the target singer's recordings (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, help="output file (one source) or folder")
    add_conversion_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--list-checkpoints", action="store_true", help="print the known checkpoints and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only, no progress bars")
    parser.add_argument("--version", action="version", version=f"knnsvc {__version__}")
    return parser


def add_conversion_arguments(parser: argparse.ArgumentParser, pitch_shift: object = None) -> None:
    """The model, matching, control and output options every conversion command shares.

    Args:
        pitch_shift: the command's default pitch shift (None: `MatchConfig`'s, "auto").
    """
    defaults = MatchConfig()
    if pitch_shift is None:
        pitch_shift = defaults.pitch_shift
    parser.add_argument("--wavlm", default=checkpoints.DEFAULT_WAVLM,
                        help="WavLM checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder", default=checkpoints.DEFAULT_VOCODER,
                        help="vocoder checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder-config", type=Path, metavar="JSON",
                        help="HiFi-GAN config (official config_v1_wavlm.json format) for a non-standard vocoder; "
                             "default: read the widths from the checkpoint")
    smoothing = parser.add_mutually_exclusive_group()
    smoothing.add_argument("--post-opt", type=_number(0.0, what="a concatenation weight"),
                           default=defaults.concat_weight, metavar="M",
                           help="concatenation weight m of the reselection, with summing-weight optimisation "
                                "(default: %(default)s, the paper's post_opt_0.2)")
    smoothing.add_argument("--no-post-opt", action="store_true",
                           help="no reselection and no weight optimisation: mean of the top-k (no_post_opt)")
    parser.add_argument("--topk", type=int, default=defaults.topk,
                        help="neighbours averaged per frame (default: %(default)s)")
    parser.add_argument("--pitch-shift", type=pitch_shift_argument, default=pitch_shift,
                        metavar="|".join(AUTO_SHIFTS) + "|SEMITONES|none",
                        help="auto: move the source's median pitch to the reference's (the paper); auto-semitone / "
                             "auto-octave: the same rounded to whole semitones / octaves (octaves keep a song's "
                             "key); a number: shift by that many semitones; none: keep the source pitch "
                             "(default: %(default)s)")
    parser.add_argument("--f0", choices=F0_EXTRACTORS, default="harvest",
                        help="pitch extractor (default: %(default)s, which the released vocoders were trained on)")
    parser.add_argument("--f0-file", type=Path, metavar="CSV",
                        help="use this F0 curve (time_s,f0_hz per line) for the source instead of extracting it "
                             "(one source file only)")
    parser.add_argument("--index-rate", type=_number(0.0, 1.0), default=defaults.index_rate, metavar="R",
                        help="features = R * matched + (1 - R) * source, as RVC's index_rate "
                             "(default: %(default)s = matched only)")
    parser.add_argument("--protect", type=_number(0.0, PROTECT_OFF), default=defaults.protect, metavar="P",
                        help="RVC's protect: unvoiced source frames keep (1 - P) of the source features "
                             "(default: %(default)s = off; 0 keeps them entirely)")
    parser.add_argument("--rms-mix", type=_number(0.0, 1.0), default=defaults.rms_mix, metavar="M",
                        help="the output's loudness envelope follows the source's by M (default: %(default)s = off; "
                             "RVC's rms_mix_rate is 1 - M)")
    parser.add_argument("--match-layers", type=_layers, default=defaults.match_layers, metavar="LAYERS",
                        help="match on the mean of these WavLM layers (e.g. 20-24, as NeuCoSVC) and vocode the "
                             "chosen frames' layer-6 features (default: match on layer 6, the reference)")
    parser.add_argument("--precision", choices=("float64", "float32"), default=defaults.precision,
                        help="arithmetic of matching and weight optimisation; float64 is the reference's "
                             "(default: %(default)s)")
    parser.add_argument("--respect-file-boundaries", action="store_true",
                        help="successor frames and smoothness neighbours stay inside each reference file "
                             "(the reference treats the reference files as one recording)")
    parser.add_argument("--block-seconds", type=_number(0.0, what="a block length in seconds"),
                        default=DEFAULT_BLOCK_SECONDS, metavar="S",
                        help="F0 extraction and vocoding work in blocks of S seconds, so memory is bounded for any "
                             "length; the result is the same (0 = whole recordings at once) (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--pool-cache", type=Path, metavar="DIR",
                        help="cache each reference recording's encoded pool here (keyed by its audio bytes, the "
                             "encoder weights and the analysis settings), so a singer is encoded once")
    parser.add_argument("--loudness", type=_number(-70.0, 0.0, what="a loudness in LUFS"), metavar="LUFS",
                        help="normalise each output to this integrated loudness (default: off, as the reference)")
    parser.add_argument("--repair-audio", action="store_true",
                        help="replace NaN/inf samples in inputs by 0 (with a warning) instead of refusing the file")


def match_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> MatchConfig:
    """The `MatchConfig` the parsed options describe (a usage error if they do not fit together)."""
    try:
        return MatchConfig(
            topk=args.topk,
            concat_weight=None if args.no_post_opt else args.post_opt,
            optimise_weights=not args.no_post_opt,
            pitch_shift=args.pitch_shift,
            precision=args.precision,
            respect_file_boundaries=args.respect_file_boundaries,
            index_rate=args.index_rate,
            protect=args.protect,
            rms_mix=args.rms_mix,
            match_layers=args.match_layers,
        )
    except ValueError as err:
        parser.error(str(err))


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


def run_batch(args: argparse.Namespace, parser: argparse.ArgumentParser,
              run: Callable[[argparse.Namespace, Batch], int], done_word: str) -> int:
    """What the batch commands (convert, cover) share around their `run`: the match settings and the
    device from the arguments (bad ones are usage errors), logging through the bars, and Ctrl-C or
    SIGTERM ending in one line that counts what is done (exit status 130)."""
    args.match_config = match_config(args, parser)
    try:
        args.device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device: {err}")
    with cli_logging(args.quiet):
        batch = Batch()
        try:
            with stop_on_sigterm():
                return run(args, batch)
        except KeyboardInterrupt:
            done = batch.converted + batch.skipped
            log.error("interrupted: %d of %d %s; rerun to continue", done, batch.total or done, done_word)
            return INTERRUPTED_STATUS


@contextmanager
def cli_logging(quiet: bool) -> Iterator[None]:
    """Log the package's messages to stderr as ``LEVEL: message``, through tqdm bars."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_log = logging.getLogger("knnsvc")
    previous_level = package_log.level
    package_log.addHandler(handler)
    package_log.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        with logging_redirect_tqdm(loggers=[package_log]):
            yield
    finally:
        package_log.removeHandler(handler)
        package_log.setLevel(previous_level)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C does (temporary files are removed on the way out)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace, batch: Batch) -> int:
    """The conversion of one CLI invocation (see the module docstring)."""
    if args.f0_file is not None and not args.source.is_file():
        log.error("--f0-file needs one source file, but %s is a folder", args.source)
        return 1
    try:
        jobs = plan_jobs(args.source, args.reference, args.output)
        references = reference_files(args.reference)
    except ValueError as err:
        log.error("%s", err)
        return 1
    plan = _screen_jobs(jobs, references, args.overwrite)
    batch.total, batch.skipped, batch.failed = len(jobs), plan.skipped, plan.failed
    plan = _drop_unwritable_folders(plan, batch)
    if not plan.todo:
        return 1 if batch.failed else 0

    try:
        converter = load_converter(args)
    except (CheckpointError, ValueError, ImportError) as err:
        log.error("%s", first_line(err))
        return 1
    log.info("vocoder: %s (%s), device %s, precision %s, blocks of %g s", args.vocoder, converter.kind.value,
             args.device, args.precision, converter.block_seconds)

    bars = StageBars(disabled=args.quiet)
    try:
        pool, left_out = cli_reference_pool(converter, args.reference, references, args.pool_cache, bars)
    except (ValueError, AudioError) as err:
        log.error("%s", first_line(err))
        return 1
    finally:
        bars.close()
    batch.failed += left_out

    options = Options(loudness=args.loudness, f0_file=args.f0_file, repair_audio=args.repair_audio)
    files = tqdm(plan.todo, desc="files", unit="file", disable=args.quiet or len(plan.todo) < 2 or None,
                 dynamic_ncols=True, position=0)
    for job in files:
        bars = StageBars(disabled=args.quiet, label=job.source.name, position=1)
        try:
            report = convert_file(converter, pool, job, options, bars)
        except (ValueError, RuntimeError, OSError) as err:
            batch.failed += 1
            message = first_line(err)
            if isinstance(err, AudioError) or message.startswith(str(job.source)):
                log.error("%s", message)
            else:
                log.error("%s: %s", job.source, message)
            log.debug("conversion of %s failed", job.source, exc_info=True)
        else:
            batch.converted += 1
            log.info("wrote %s (%s)", job.output, report)
        finally:
            bars.close()
    files.close()
    if batch.failed and batch.total + left_out > 1:
        log.error("%d problem(s); %d of %d source file(s) converted%s", batch.failed, batch.converted, batch.total,
                  f", {batch.skipped} already there" if batch.skipped else "")
    return 1 if batch.failed else 0


def load_converter(args: argparse.Namespace) -> KnnSvc:
    """The models and settings the arguments name, loaded once.

    Raises:
        CheckpointError: a checkpoint cannot be found, fetched or used.
        ValueError, ImportError: an unknown or uninstalled pitch extractor.
    """
    progress = not args.quiet
    f0 = get_f0_extractor(args.f0, args.device)
    encoder_layer = WAVLM_LAYER
    depth = max([encoder_layer, *(args.match_config.match_layers or [])])  # only the blocks in use are loaded
    wavlm_path = checkpoints.resolve_checkpoint(args.wavlm, "wavlm", progress=progress)
    wavlm = checkpoints.load_wavlm(wavlm_path, device=args.device, num_layers=depth)
    kind, vocoder = checkpoints.load_vocoder(args.vocoder, args.vocoder_config, device=args.device, progress=progress)
    checkpoints.check_compatible(wavlm, vocoder, args.wavlm, args.vocoder)
    return KnnSvc(WavLMEncoder(wavlm, layer=encoder_layer), vocoder, kind, config=args.match_config,
                  block_seconds=args.block_seconds, f0=f0)


# ----------------------------------------------------------------------------------- one file
def convert_file(converter: KnnSvc, pool: ReferencePool, job: Job, options: Options,
                 progress: Progress | None = None) -> str:
    """Convert `job.source` into `job.output` (written block by block, atomically).

    Returns:
        A short description of what was done (duration, pitch shift) for the log.

    Raises:
        AudioError, ValueError: the source cannot be used, or the output cannot be written.
    """
    wav_16k = usable_recording(job.source, converter, nonfinite="repair" if options.repair_audio else "error")
    n_samples = converter.encoder.num_frames(wav_16k.numel()) * HOP_LENGTH
    check_disk_space(job.output, output_bytes(n_samples, job.output, loudness=options.loudness is not None))

    source = converter.analyse(wav_16k, progress)
    del wav_16k
    try:
        if options.f0_file is not None:
            source.f0_hz = load_f0_curve(options.f0_file, source.num_frames)
        if _needs_voicing(converter) and not bool((source.f0_hz > 0).any()):
            raise AudioError(job.source, "no voiced frames, so the automatic pitch shift to the reference is "
                                         "undefined (use --pitch-shift 0 or none)")
        result = converter.match(source, pool, progress)
        with AudioWriter(job.output, loudness_lufs=options.loudness) as writer:
            for block in converter.vocode_blocks(result, progress):
                writer.write(block)
    finally:
        source.close()
    seconds = writer.samples_written / SAMPLE_RATE
    if not converter.kind.uses_pitch:
        return f"{seconds:.1f} s"
    return f"{seconds:.1f} s, pitch shift {result.semitones:+.2f} semitones (x{result.shift_ratio:.4f})"


class StageBars:
    """One tqdm bar per stage of a conversion (with ETA), as a `Progress` callback."""

    NAMES = {"reference": "encoding reference", "encode": "encoding", "match": "matching", "vocode": "vocoding"}
    UNITS = {"reference": "file"}

    def __init__(self, disabled: bool, label: str = "", position: int = 0) -> None:
        self.disabled = disabled
        self.label = label
        self.position = position
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.disabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            name = self.NAMES.get(stage, stage)
            self.bar = tqdm(total=total, desc=f"{self.label}: {name}" if self.label else name,
                            unit=self.UNITS.get(stage, "frame"), unit_scale=stage != "reference",
                            leave=False, dynamic_ncols=True, position=self.position)
        assert self.bar is not None
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


# ----------------------------------------------------------------------------------- planning
def plan_jobs(source: Path, reference: Path, output: Path | None) -> list[Job]:
    """Map each source file to its output path (see the module docstring).

    Raises:
        ValueError: SRC or REF missing, SRC folder without audio, or -o naming a file for a folder.
    """
    if not source.exists():
        raise ValueError(f"{source}: no such file or folder")
    if not reference.exists():
        raise ValueError(f"{reference}: no such file or folder")
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
    if folder.is_file():
        raise ValueError(f"{folder}: is a file, but a folder is needed for a folder of sources")
    files = find_audio(source, exclude=[folder])
    if not files:
        raise ValueError(f"{source}: no audio files ({', '.join(OUTPUT_SUFFIXES)}) in this folder")
    return [Job(f, folder / f.relative_to(source).with_suffix(".wav")) for f in files]


def reference_files(reference: Path) -> list[Path]:
    """The recordings a REF argument names (one file, or the audio under a folder).

    Raises:
        ValueError: a folder without audio.
    """
    if reference.is_file():
        return [reference]
    files = find_audio(reference)
    if not files:
        raise ValueError(f"{reference}: no audio files ({', '.join(OUTPUT_SUFFIXES)}) in this folder")
    return files


def _screen_jobs(jobs: list[Job], references: list[Path], overwrite: bool) -> Plan:
    """Skip outputs that exist (already converted); refuse those that would replace an input or
    collide with each other."""
    inputs = {p.resolve() for p in references} | {j.source.resolve() for j in jobs}
    plan = Plan([])
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.output.resolve()
        if target in inputs:
            log.error("%s: output %s would replace an input file; choose another -o", job.source, job.output)
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
    temporary files an earlier, killed run may have left there."""
    verdicts: dict[Path, str | None] = {}
    kept = []
    for job in plan.todo:
        folder = job.output.parent
        if folder not in verdicts:
            verdicts[folder] = _folder_problem(folder)
            if verdicts[folder] is None and folder.is_dir():
                for stale in remove_stale_temporaries(folder):
                    log.info("removed %s, left by an interrupted run", stale)
        if verdicts[folder] is None:
            kept.append(job)
        else:
            log.error("%s: cannot write %s (%s)", job.source, job.output, verdicts[folder])
            batch.failed += 1
    return Plan(kept, plan.skipped, plan.failed)


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (or in the folder that will hold it), or None."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return "no existing parent folder"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


# ----------------------------------------------------------------------------------- reference
def cli_reference_pool(
    converter: KnnSvc, reference: Path, files: list[Path], cache: Path | None, progress: Progress
) -> tuple[ReferencePool, int]:
    """A command's pool: a bad single reference file stops the run; in a folder it is left out
    (reported); the pool must be long enough and voiced where the pitch shift needs it.

    Raises:
        ValueError, AudioError: no usable reference (one line naming the file or folder).
    """

    def on_bad_file(err: AudioError) -> None:
        if len(files) == 1:
            raise err
        log.error("%s (left out of the reference)", err)

    pool_cache = PoolCache(cache, converter.pool_settings()) if cache is not None else None
    pool, left_out = build_reference_pool(converter, files, pool_cache, on_bad_file, progress)
    if pool is None:
        raise ValueError(f"{reference}: no usable reference recording in this folder")
    _check_pool(pool, reference, converter)
    return pool, left_out


def _needs_voicing(converter: KnnSvc) -> bool:
    """Whether an automatic pitch shift applies (it needs voiced frames in source and reference)."""
    return isinstance(converter.config.pitch_shift, str) and converter.kind.uses_pitch


def _check_pool(pool: ReferencePool, reference: Path, converter: KnnSvc) -> None:
    config = converter.config
    if pool.num_frames < config.n_candidates:
        raise ValueError(
            f"{reference}: the reference is too short ({pool.num_frames} frames = {pool.seconds:.2f} s); "
            f"at least {config.n_candidates} frames ({config.n_candidates * HOP_LENGTH / SAMPLE_RATE:.2f} s) are needed"
        )
    if _needs_voicing(converter) and not bool((pool.f0_hz > 0).any()):
        raise ValueError(
            f"{reference}: the reference has no voiced frames, so its median pitch is undefined "
            "(use --pitch-shift 0 or none)"
        )


if __name__ == "__main__":
    sys.exit(main())
