"""`python -m knnsvc.convert SRC REF [-o OUT]`: convert recordings to a target singer's voice.

SRC is an audio file or a folder (every wav/flac/mp3/ogg below it, converted one by one); REF is
an audio file or a folder of one singer's recordings (all of them form the reference pool).

Output names (never inside an input folder unless asked to with -o):

- one source file: ``-o OUT`` is the output file (or, if OUT is a folder or ends with "/",
  ``OUT/<src_stem>_to_<ref_stem>.wav``); without -o: ``./<src_stem>_to_<ref_stem>.wav``.
- a source folder: outputs mirror its tree under ``-o OUT`` (``OUT/<sub/dirs>/<stem>.wav``);
  without -o: under ``./<src_folder>_to_<ref_stem>/``.

``<ref_stem>`` is the reference file's stem or the reference folder's name. Existing outputs are
kept unless --overwrite is given; outputs are written atomically (no partial files).

Exit status: 0 when every file converted, 1 when anything failed (each failure is one line on
stderr naming the file and the problem; the rest of a batch is still processed), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hifigan.generator import VocoderKind
from knnsvc import __version__, checkpoints
from knnsvc.audio import AUDIO_SUFFIXES, AudioError, find_audio, is_silent, load_audio, loudness_normalise, save_audio
from knnsvc.checkpoints import CheckpointError
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.encoder import WavLMEncoder
from knnsvc.pipeline import KnnSvc, MatchConfig
from knnsvc.pool import ReferencePool, cache_key

log = logging.getLogger("knnsvc.convert")


@dataclass
class Job:
    """One source file and where its conversion goes."""

    source: Path
    output: Path


@dataclass
class Plan:
    """The jobs to run, and how many were refused before starting."""

    todo: list[Job]
    failed: int = 0


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--wavlm", default=checkpoints.DEFAULT_WAVLM,
                        help="WavLM checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder", default=checkpoints.DEFAULT_VOCODER,
                        help="vocoder checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder-config", type=Path, metavar="JSON",
                        help="HiFi-GAN config (official config_v1_wavlm.json format) for a non-standard vocoder; "
                             "default: read the widths from the checkpoint")
    smoothing = parser.add_mutually_exclusive_group()
    smoothing.add_argument("--post-opt", type=float, default=0.2, metavar="M",
                           help="concatenation weight m of the reselection, with summing-weight optimisation "
                                "(default: %(default)s, the paper's post_opt_0.2)")
    smoothing.add_argument("--no-post-opt", action="store_true",
                           help="no reselection and no weight optimisation: mean of the top-k (no_post_opt)")
    parser.add_argument("--topk", type=int, default=4, help="neighbours averaged per frame (default: %(default)s)")
    parser.add_argument("--pitch-shift", type=_pitch_shift, default="auto", metavar="auto|SEMITONES|none",
                        help="auto: move the source's median pitch to the reference's (the paper); a number: "
                             "shift by that many semitones; none: keep the source pitch (default: %(default)s)")
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64",
                        help="arithmetic of matching and weight optimisation; float64 is the reference's "
                             "(default: %(default)s)")
    parser.add_argument("--respect-file-boundaries", action="store_true",
                        help="successor frames and smoothness neighbours stay inside each reference file "
                             "(the reference treats the reference files as one recording)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--pool-cache", type=Path, metavar="DIR",
                        help="cache encoded reference pools here (keyed by audio bytes, encoder weights and "
                             "settings), so a singer is encoded once")
    parser.add_argument("--loudness", type=float, metavar="LUFS",
                        help="normalise each output to this integrated loudness (default: off, peak-limited only)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--list-checkpoints", action="store_true", help="print the known checkpoints and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bars")
    parser.add_argument("--version", action="version", version=f"knnsvc {__version__}")
    return parser


def _pitch_shift(text: str) -> str | float | None:
    lowered = text.strip().lower()
    if lowered == "auto":
        return "auto"
    if lowered == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number of semitones, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 something failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_checkpoints:
        print(checkpoints.describe_releases())
        return 0
    if args.source is None or args.reference is None:
        parser.error("SRC and REF are required")
    try:
        args.match_config = MatchConfig(
            topk=args.topk,
            concat_weight=None if args.no_post_opt else args.post_opt,
            optimise_weights=not args.no_post_opt,
            pitch_shift=args.pitch_shift,
            precision=args.precision,
            respect_file_boundaries=args.respect_file_boundaries,
        )
    except ValueError as err:
        parser.error(str(err))
    try:
        args.device = _device(args.device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device: {err}")

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_log = logging.getLogger("knnsvc")
    previous_level = package_log.level
    package_log.addHandler(handler)
    package_log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        with logging_redirect_tqdm(loggers=[package_log]):
            return _run(args)
    finally:
        package_log.removeHandler(handler)
        package_log.setLevel(previous_level)


def _run(args: argparse.Namespace) -> int:
    try:
        jobs = plan_jobs(args.source, args.reference, args.output)
        references = _reference_files(args.reference)
    except ValueError as err:
        log.error("%s", err)
        return 1
    plan = _drop_unwritable(jobs, references, args.overwrite)
    if not plan.todo:
        return 1

    device = args.device
    try:
        wavlm_path = checkpoints.resolve_checkpoint(args.wavlm, "wavlm", progress=not args.quiet)
        wavlm = checkpoints.load_wavlm(wavlm_path, device=device)
        kind, vocoder = checkpoints.load_vocoder(args.vocoder, args.vocoder_config, device=device,
                                                 progress=not args.quiet)
        checkpoints.check_compatible(wavlm, vocoder, args.wavlm, args.vocoder)
    except CheckpointError as err:
        log.error("%s", err)
        return 1
    config = args.match_config
    converter = KnnSvc(WavLMEncoder(wavlm), vocoder, kind, config=config)
    log.info("vocoder: %s (%s), device %s, precision %s", args.vocoder, kind.value, device, args.precision)

    try:
        pool, left_out = _cli_reference_pool(converter, args.reference, references, args.pool_cache, args.quiet)
        _check_pool(pool, args.reference, converter)
    except ValueError as err:
        log.error("%s", err)
        return 1

    failed = plan.failed + left_out
    bar = tqdm(plan.todo, desc="converting", unit="file", disable=args.quiet or None, dynamic_ncols=True)
    for job in bar:
        try:
            _convert_one(converter, pool, job, args.loudness, lambda stage: bar.set_postfix_str(
                f"{job.source.name}: {stage}", refresh=True))
        except (ValueError, RuntimeError, OSError) as err:
            failed += 1
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, AudioError) or message.startswith(str(job.source)):
                log.error("%s", message)
            else:
                log.error("%s: %s", job.source, message)
            log.debug("conversion of %s failed", job.source, exc_info=True)
        else:
            log.info("wrote %s", job.output)
    bar.close()
    total = len(plan.todo) + plan.failed
    converted = total - (failed - left_out)
    if failed and total + left_out > 1:
        log.error("%d problem(s); %d of %d source file(s) converted", failed, converted, total)
    return 1 if failed else 0


def _convert_one(converter: KnnSvc, pool: ReferencePool, job: Job, loudness: float | None, stage) -> None:
    stage("load")
    wav_16k = load_audio(job.source)
    if is_silent(wav_16k):
        raise AudioError(job.source, "the recording is silent")
    if converter.encoder.num_frames(wav_16k.numel()) == 0:
        raise AudioError(job.source, f"too short ({wav_16k.numel() / SAMPLE_RATE:.3f} s)")
    stage("encode + F0")
    source = converter.analyse(wav_16k)
    if _needs_voicing(converter) and not bool((source.f0_hz > 0).any()):
        raise AudioError(job.source, "no voiced frames, so the pitch shift to the reference is undefined "
                                     "(use --pitch-shift 0 or none)")
    stage("match")
    result = converter.match(source, pool)
    stage("vocode")
    out = converter.vocode(result)
    if loudness is not None:
        out = loudness_normalise(out, loudness)
    stage("write")
    save_audio(job.output, out)


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
        elif output.is_dir() or str(output).endswith(("/", os.sep)) or output.suffix.lower() not in AUDIO_SUFFIXES:
            target = output / default_name
        else:
            target = output
        return [Job(source, target)]
    files = find_audio(source)
    if not files:
        raise ValueError(f"{source}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
    folder = output if output is not None else Path.cwd() / f"{source.resolve().name}_to_{ref_stem}"
    if folder.is_file():
        raise ValueError(f"{folder}: is a file, but a folder is needed for a folder of sources")
    return [Job(f, folder / f.relative_to(source).with_suffix(".wav")) for f in files]


def _reference_files(reference: Path) -> list[Path]:
    if reference.is_file():
        return [reference]
    files = find_audio(reference)
    if not files:
        raise ValueError(f"{reference}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
    return files


def _drop_unwritable(jobs: list[Job], references: list[Path], overwrite: bool) -> Plan:
    """Skip (as failures) outputs that exist, would replace an input, or collide with each other."""
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
            log.error("%s: output %s already exists (use --overwrite to replace it)", job.source, job.output)
        else:
            seen[target] = job.source
            plan.todo.append(job)
            continue
        plan.failed += 1
    return plan


def pool_cache_file(converter: KnnSvc, files: Sequence[Path], cache: Path) -> Path:
    """Where the pool of these recordings is cached: keyed by audio bytes, encoder and settings."""
    return cache / f"pool-{cache_key(files, converter.encoder_id, converter.pool_settings())}.pt"


def reference_pool(
    converter: KnnSvc,
    files: Sequence[Path],
    cache_file: Path | None,
    on_bad_file: Callable[[AudioError], None],
    progress: bool = False,
) -> tuple[ReferencePool | None, int]:
    """Encode a singer's recordings into one pool, or read it from `cache_file` (see
    `pool_cache_file`; None = no caching).

    Each unusable file (unreadable, silent, too short) goes to `on_bad_file` (which may raise to
    stop) and is left out; a pool missing a file is not cached.

    Returns:
        (the pool, or None if no file was usable; the number of files left out).
    """
    if cache_file is not None and cache_file.is_file():
        try:
            pool = ReferencePool.load(cache_file)
        except (ValueError, RuntimeError, OSError, KeyError) as err:
            log.warning("ignoring unreadable pool cache %s (%s)", cache_file, err)
        else:
            log.info("reference pool from cache %s (%.1f s, %d file(s))", cache_file, pool.seconds,
                     len(pool.names))
            return pool, 0
    pools, left_out = [], 0
    for path in tqdm(files, desc="encoding reference", unit="file", disable=not progress or None, dynamic_ncols=True):
        try:
            wav_16k = load_audio(path)
            if is_silent(wav_16k):
                raise AudioError(path, "the recording is silent")
            if converter.encoder.num_frames(wav_16k.numel()) == 0:
                raise AudioError(path, f"too short ({wav_16k.numel() / SAMPLE_RATE:.3f} s)")
        except AudioError as err:
            on_bad_file(err)
            left_out += 1
            continue
        pools.append(converter.build_pool([wav_16k], names=[str(path)]))
    if not pools:
        return None, left_out
    pool = ReferencePool.concat(pools)
    if cache_file is not None and not left_out:
        pool.save(cache_file, settings=converter.pool_settings())
        log.info("cached the reference pool in %s", cache_file)
    return pool, left_out


def _cli_reference_pool(
    converter: KnnSvc, reference: Path, files: list[Path], cache: Path | None, quiet: bool
) -> tuple[ReferencePool, int]:
    """The CLI's pool: a bad single reference file stops the run; in a folder it is left out.

    Raises:
        ValueError: no usable reference recording (one line naming the file or folder).
    """

    def on_bad_file(err: AudioError) -> None:
        if len(files) == 1:
            raise err
        log.error("%s (left out of the reference)", err)

    cache_file = pool_cache_file(converter, files, cache) if cache is not None else None
    pool, left_out = reference_pool(converter, files, cache_file, on_bad_file, progress=not quiet)
    if pool is None:
        raise ValueError(f"{reference}: no usable reference recording in this folder")
    return pool, left_out


def _needs_voicing(converter: KnnSvc) -> bool:
    """Whether the median-pitch shift applies (it needs voiced frames in source and reference)."""
    return converter.config.pitch_shift == "auto" and converter.kind is not VocoderKind.KNNVC


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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available on this machine (use --device cpu)")
    return device


if __name__ == "__main__":
    sys.exit(main())
