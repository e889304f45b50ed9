"""`knnsvc-cover SONG REF [-o OUT_DIR]`: a song sung by another singer, with its own accompaniment.

For each mixed song: separate the vocals (HTDemucs, `knnsvc.separation`), convert the vocal stem
to the REF singer with kNN-SVC (the same blocked path as ``knnsvc-convert``), and mix the
converted vocal back into the original accompaniment. Written into OUT_DIR:

- ``vocals.wav``, ``accompaniment.wav``: the stems at the song's rate and channel count, 32-bit
  float (the accompaniment is the song minus the vocals, so the two add up to the song);
- ``vocals_converted.wav``: the converted vocal, mono at the vocoder's rate (16 kHz for the
  released vocoders, 24 or 44.1 kHz for a vocoder trained at that rate), as loud as the vocal stem
  (integrated loudness of its mono mix) unless ``--loudness`` says otherwise;
- ``remix.<ext>`` (``--format``, default wav): accompaniment + converted vocal (resampled to the
  song's rate) in every channel, at the song's rate, channel count and length, peak-limited.

OUT_DIR defaults to ``./<song_stem>_cover_<ref_stem>/``; for a folder of songs, each song gets
``<OUT_DIR or ./<folder>_cover_<ref_stem>>/<sub/dirs>/<song_stem>/``. The pitch shift defaults to
``auto-octave`` (the source moves by whole octaves towards the singer's range, so the cover stays
in the song's key); ``--pitch-shift auto`` is the paper's continuous shift.

Every file is written atomically. Before the stems are written, the song's identity (its size, its
modification time and a SHA-256 of its first and last MiB) is recorded beside them in
``.song.json``. A folder that holds all four outputs is skipped (reported, exit 0) unless
--overwrite is given; one that holds some of them (an interrupted run) gets only the missing ones,
so a rerun continues where the last one stopped and nothing is replaced - but only when its record
shows the outputs belong to this song: outputs of another song (or of an unrecorded one) are one
error line, and are redone with --overwrite.

Exit status: 0 when every song was done or already there, 1 when anything failed (one line on
stderr per failure; the rest of a batch is still processed), 2 for bad usage, 130 when
interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knnsvc import audio
from knnsvc.apps.common import (
    Batch,
    Inputs,
    StageBars,
    add_conversion_arguments,
    add_version_argument,
    clean_stale_temporaries,
    conversion_inputs,
    folder_problem,
    input_problem,
    load_converter,
    missing_extra,
    name_problem,
    output_problem,
    path_type,
    reference_files,
    reference_pool,
    run_batch,
    run_each,
)
from knnsvc.audio import (
    OUTPUT_SUFFIXES,
    AudioError,
    check_disk_space,
    find_audio,
    output_bytes,
    too_long,
    too_short,
)
from knnsvc.checkpoints import CheckpointError
from knnsvc.config import SAMPLE_RATE
from knnsvc.conversion import Options, convert_file
from knnsvc.files import atomic_path
from knnsvc.pipeline import KnnSvc
from knnsvc.pool import ReferencePool
from knnsvc.runtime import first_line
from knnsvc.separation import (
    STEM_SUBTYPE,
    SeparationError,
    SongInfo,
    StemWriter,
    VocalSeparator,
    load_separation_model,
    scan_song,
    separate_song,
    separator_weights,
    song_info,
    stem_loudness,
    write_remix,
)

log = logging.getLogger("knnsvc.cover")

DEFAULT_PITCH_SHIFT = "auto-octave"
"""Covers keep the song's key: the source moves towards the singer's range by whole octaves."""

NO_VOCALS_LUFS = -60.0
"""A separated vocal stem quieter than this (integrated loudness of its mono mix) means no vocals."""

MIN_SONG_SECONDS = 0.5
"""Shorter songs are refused: loudness needs 0.4 s (one BS.1770 gating block)."""

FORMATS = tuple(suffix.lstrip(".") for suffix in OUTPUT_SUFFIXES)

STEMS = ("vocals", "accompaniment")
OUTPUTS = ("vocals", "accompaniment", "vocals_converted", "remix")
"""What each song's folder holds when it is complete, in the order it is made."""

SONG_RECORD = ".song.json"
"""The record, in each song's output folder, of the song its stems were separated from."""

IDENTITY_BYTES = 1 << 20
"""A song's identity hashes its first and its last MiB (and its size): cheap on any length."""


@dataclass
class CoverJob:
    """One song, its output folder and the outputs still to make there."""

    song: Path
    folder: Path
    remix_suffix: str = ".wav"
    todo: tuple[str, ...] = OUTPUTS

    def path(self, name: str) -> Path:
        """Where output `name` (one of `OUTPUTS`) goes."""
        return self.folder / (f"remix{self.remix_suffix}" if name == "remix" else f"{name}.wav")


@dataclass
class Tools:
    """The models a run needs, loaded once (None: no song needs them)."""

    separator: VocalSeparator | None = None
    converter: KnnSvc | None = None
    pool: ReferencePool | None = None
    loudness: float | None = None  # LUFS of the converted vocal; None: the vocal stem's
    f0_file: Path | None = None
    nonfinite: str = "error"
    max_seconds: float | None = None  # longest song accepted (None: `knnsvc.audio.MAX_SECONDS`, if any)


class CoverBars(StageBars):
    """`StageBars` with the cover's own stages: separation and remix, in seconds of song."""

    NAMES = {**StageBars.NAMES, "separate": "separating", "remix": "remixing"}
    UNITS = {**StageBars.UNITS, "separate": "s", "remix": "s"}


# ----------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    """The CLI: the conversion options of ``knnsvc-convert`` (pitch shift default auto-octave) and
    the cover's own."""
    parser = argparse.ArgumentParser(
        prog="knnsvc-cover",
        description="Cover a song in REF's voice: separate its vocals, convert them with kNN-SVC, remix them "
                    "with the original accompaniment.",
        epilog="Outputs in OUT_DIR (default ./<song>_cover_<ref>/): remix.<format>, vocals_converted.wav, "
               "vocals.wav, accompaniment.wav. --loudness sets the converted vocal's loudness (default: that of "
               "the separated vocal stem).",
    )
    parser.add_argument("song", metavar="SONG", type=path_type,
                        help="a mixed song (mono or stereo), or a folder of songs")
    parser.add_argument("reference", metavar="REF", type=path_type,
                        help="audio file or folder of the target singer's recordings (searched recursively)")
    parser.add_argument("-o", "--output", type=path_type, metavar="OUT_DIR",
                        help="output folder (a folder of songs: one subfolder per song below it)")
    parser.add_argument("--format", choices=FORMATS, default="wav", help="format of remix.<ext> (default: %(default)s)")
    parser.add_argument("--separator", type=path_type, metavar="PATH",
                        help="HTDemucs weights file in the Demucs package format (default: the released htdemucs, "
                             "downloaded once into the torch hub cache)")
    add_conversion_arguments(parser, pitch_shift=DEFAULT_PITCH_SHIFT)
    parser.add_argument("--overwrite", action="store_true", help="redo songs whose outputs exist")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only, no progress bars")
    add_version_argument(parser)
    return parser


# ----------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 something failed, 2 bad usage, 130 interrupted)."""
    parser = build_parser()
    return run_batch(parser.parse_args(argv), parser, run, "song(s) done")


def run(args: argparse.Namespace, batch: Batch) -> int:
    """The covers of one CLI invocation (see the module docstring)."""
    try:
        jobs = plan_covers(args.song, args.reference, args.output, "." + args.format)
        references = reference_files(args.reference)
    except ValueError as err:
        log.error("%s", err)
        return 1
    for path, kind in ((args.f0_file, "file"), (args.separator, "file")):
        problem = input_problem(path, kind) if path is not None else None
        if problem:
            log.error("%s", problem)
            return 1
    if args.f0_file is not None and not args.song.is_file():
        log.error("--f0-file needs one song file, but %s is a folder", args.song)
        return 1
    batch.total = len(jobs)
    todo = _screen_covers(jobs, conversion_inputs(args, [job.song for job in jobs], references), args.overwrite,
                          batch)
    if not todo:
        return 1 if batch.failed else 0
    missing = missing_extra("demucs_infer", "'knnsvc[cover]'")
    if missing and any(set(STEMS) & set(job.todo) for job in todo):
        log.error("%s", missing)
        return 1

    tools = Tools(loudness=args.loudness, f0_file=args.f0_file, nonfinite="repair" if args.repair_audio else "error",
                  max_seconds=args.max_duration if args.max_duration is not None else getattr(audio, "MAX_SECONDS",
                                                                                            None))
    bars = CoverBars(disabled=args.quiet)
    try:
        if any(set(STEMS) & set(job.todo) for job in todo):
            weights = separator_weights(args.separator, progress=not args.quiet)
            tools.separator = VocalSeparator(load_separation_model(weights, args.device), args.device)
        if any("vocals_converted" in job.todo for job in todo):
            tools.converter = load_converter(args)
            tools.pool, left_out = reference_pool(tools.converter, args.reference, references,
                                                  args.pool_cache, bars, args.max_duration)
            batch.failed += left_out
    except (SeparationError, CheckpointError, ValueError, ImportError) as err:
        log.error("%s", first_line(err))
        return 1
    finally:
        bars.close()

    def work(job: CoverJob, bars: StageBars) -> str:
        return cover_song(job, tools, bars)

    return run_each(todo, batch, args.quiet, "song", lambda job: job.song, work, lambda job: job.folder,
                    bars=CoverBars, done_word="done")


# ----------------------------------------------------------------------------------- one song
def cover_song(job: CoverJob, tools: Tools, progress: StageBars | None = None) -> str:
    """Make the outputs `job.todo` of one song (see the module docstring), each atomically.

    Returns:
        A short description for the log (what was written, duration, pitch shift).

    Raises:
        AudioError, ValueError: the song cannot be used (unreadable, silent, no vocals) or the
            outputs cannot be written (also: would not fit on the disk, checked before any work).
    """
    info = song_info(job.song, **({} if tools.max_seconds is None else {"max_seconds": tools.max_seconds}))
    if info.seconds < MIN_SONG_SECONDS:
        raise AudioError(job.song, too_short(info.seconds, needed=MIN_SONG_SECONDS))
    if tools.max_seconds is not None and info.seconds > tools.max_seconds:
        raise AudioError(job.song, too_long(info.seconds, tools.max_seconds))
    if "remix" in job.todo:
        StemWriter(job.path("remix"), info.sample_rate, info.channels)  # a format that cannot hold the song: now
    output_rate = tools.converter.sample_rate if tools.converter is not None else SAMPLE_RATE
    check_disk_space(job.path("remix"), _needed_bytes(job, info, output_rate))
    stems = [name for name in STEMS if name in job.todo]
    if stems:
        assert tools.separator is not None  # loaded whenever a song needs its stems
        levels = scan_song(info, tools.nonfinite)
        vocals, accompaniment = (job.path(name) if name in stems else None for name in STEMS)
        write_song_record(job.folder, job.song)  # before the stems: no stem without its record
        try:
            separate_song(tools.separator, info, levels, vocals, accompaniment, progress=progress)
        except BaseException:
            if not any(job.path(name).exists() for name in STEMS):
                (job.folder / SONG_RECORD).unlink(missing_ok=True)
            raise
    report = f"{info.seconds:.1f} s"
    if "vocals_converted" in job.todo:
        report = _convert_vocals(job, tools, progress)
    if "remix" in job.todo:
        gain = write_remix(job.path("accompaniment"), job.path("vocals_converted"), job.path("remix"), progress)
        if gain < 1.0:
            report += f", remix peak-limited by {20 * math.log10(gain):.1f} dB"
    return f"{', '.join(job.path(name).name for name in job.todo)}; {report}"


def _convert_vocals(job: CoverJob, tools: Tools, progress: StageBars | None) -> str:
    """Convert the vocal stem into vocals_converted.wav, as loud as the stem (or `tools.loudness`)."""
    stem = job.path("vocals")
    lufs = stem_loudness(stem)
    if lufs < NO_VOCALS_LUFS:
        level = "silent" if math.isinf(lufs) else f"at {lufs:.1f} LUFS"
        raise AudioError(job.song, f"no vocals found: the separated vocal stem is {level} "
                                   f"(below {NO_VOCALS_LUFS:g} LUFS)")
    options = Options(loudness=tools.loudness if tools.loudness is not None else lufs, f0_file=tools.f0_file,
                      max_seconds=tools.max_seconds)
    assert tools.converter is not None and tools.pool is not None  # loaded whenever a song needs converting
    try:
        converted = convert_file(tools.converter, tools.pool, stem, job.path("vocals_converted"), options, progress)
        return converted.describe(tools.converter.kind.uses_pitch)
    except AudioError as err:
        if err.path != stem:
            raise
        raise AudioError(job.song, f"no vocals found in the separated vocal stem ({err.problem})") from None


def _needed_bytes(job: CoverJob, info: SongInfo, output_rate: int = SAMPLE_RATE) -> int:
    """Upper estimate of the disk space the outputs still to make take (see `output_bytes`); the
    converted vocal is mono at `output_rate` (the vocoder's)."""
    samples = info.frames * info.channels
    sizes = {
        "vocals": output_bytes(samples, job.path("vocals"), info.sample_rate, STEM_SUBTYPE),
        "accompaniment": output_bytes(samples, job.path("accompaniment"), info.sample_rate, STEM_SUBTYPE),
        "vocals_converted": output_bytes(math.ceil(info.frames * output_rate / info.sample_rate),
                                         job.path("vocals_converted"), output_rate, loudness=True),
        "remix": output_bytes(samples, job.path("remix"), info.sample_rate),
    }
    return sum(sizes[name] for name in job.todo)


# ----------------------------------------------------------------------------------- planning
def plan_covers(song: Path, reference: Path, output: Path | None, remix_suffix: str = ".wav") -> list[CoverJob]:
    """Map each song to its output folder (see the module docstring).

    Raises:
        ValueError: SONG or REF missing or neither a file nor a folder (FIFO, device), a song folder
            without audio, or OUT_DIR is a file.
    """
    for path in (song, reference):
        problem = input_problem(path)
        if problem:
            raise ValueError(problem)
    problem = name_problem(output) if output is not None else None
    if problem:
        raise ValueError(problem)
    ref_stem = reference.stem if reference.is_file() else reference.resolve().name
    if song.is_file():
        folder = output if output is not None else Path.cwd() / f"{song.stem}_cover_{ref_stem}"
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder}: is a file, but the outputs need a folder")
        return [CoverJob(song, folder, remix_suffix)]
    root = output if output is not None else Path.cwd() / f"{song.resolve().name}_cover_{ref_stem}"
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: is a file, but the outputs need a folder")
    files = find_audio(song, exclude=[root])
    if not files:
        raise ValueError(f"{song}: no audio files ({', '.join(OUTPUT_SUFFIXES)}) in this folder")
    return [CoverJob(f, root / f.relative_to(song).with_suffix(""), remix_suffix) for f in files]


def _screen_covers(jobs: list[CoverJob], inputs: Inputs, overwrite: bool, batch: Batch) -> list[CoverJob]:
    """Decide what each song still needs: skip complete folders, continue partial ones of the same
    song, refuse outputs that can never be written (an input, a folder, a name too long), that two
    songs share, folders of another song's outputs, and folders that cannot be written (before any
    model loads)."""
    todo: list[CoverJob] = []
    seen: dict[Path, Path] = {}
    problems: dict[Path, str | None] = {}
    for job in jobs:
        folder = job.folder.resolve()
        output_problems = [problem for name in OUTPUTS if (problem := output_problem(job.path(name), inputs))]
        existing = [name for name in OUTPUTS if job.path(name).exists()]
        mismatch = song_mismatch(job.folder, job.song) if existing else None
        if output_problems:
            log.error("%s: %s", job.song, output_problems[0])
        elif folder in seen:
            log.error("%s: output folder %s is also that of %s; rename one of them", job.song, job.folder,
                      seen[folder])
        elif mismatch and not overwrite and (len(existing) < len(OUTPUTS) or "another" in mismatch):
            log.error("%s: %s holds outputs %s; use --overwrite to redo them, or choose another -o", job.song,
                      job.folder, mismatch)
        elif len(existing) == len(OUTPUTS) and not overwrite:
            log.warning("%s: skipped, %s already holds its cover (use --overwrite to redo it)", job.song, job.folder)
            batch.skipped += 1
            continue
        else:
            seen[folder] = job.song
            if folder not in problems:
                problems[folder] = folder_problem(job.folder)
            if problems[folder] is None:
                if existing and not overwrite:
                    log.info("%s: continuing in %s (%s already there)", job.song, job.folder,
                             ", ".join(job.path(name).name for name in existing))
                    job.todo = tuple(name for name in OUTPUTS if name not in existing)
                clean_stale_temporaries([*(job.path(name) for name in job.todo), job.folder / SONG_RECORD])
                todo.append(job)
                continue
            log.error("%s: cannot write into %s (%s)", job.song, job.folder, problems[folder])
        batch.failed += 1
    return todo


# ----------------------------------------------------------------------------------- song identity
def song_identity(song: Path) -> dict[str, object]:
    """What tells a song file from another: its size, modification time (for the reader; copies
    change it, so it is not compared) and a SHA-256 of its first and last `IDENTITY_BYTES`."""
    info = song.stat()
    digest = hashlib.sha256()
    with open(song, "rb") as handle:
        digest.update(handle.read(IDENTITY_BYTES))
        if info.st_size > IDENTITY_BYTES:
            handle.seek(max(IDENTITY_BYTES, info.st_size - IDENTITY_BYTES))
            digest.update(handle.read(IDENTITY_BYTES))
    return {"song": song.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns,
            "head_tail_sha256": digest.hexdigest()}


def write_song_record(folder: Path, song: Path) -> None:
    """Record in `folder` (atomically) that its stems were separated from `song`."""
    with atomic_path(folder / SONG_RECORD) as tmp:
        tmp.write_text(json.dumps(song_identity(song), indent=1) + "\n", encoding="utf-8")


def song_mismatch(folder: Path, song: Path) -> str | None:
    """None if `folder`'s record says its outputs belong to `song`; else why not (a short phrase:
    "of another song (...)" or "without a record of their song")."""
    try:
        record = json.loads((folder / SONG_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"without a record of their song ({SONG_RECORD})"
    except (OSError, UnicodeDecodeError, ValueError):
        return f"with an unreadable record of their song ({SONG_RECORD})"
    if not isinstance(record, dict):
        return f"with an unreadable record of their song ({SONG_RECORD})"
    identity = song_identity(song)
    if any(record.get(key) != identity[key] for key in ("size", "head_tail_sha256")):
        return f"of another song ({record.get('song', '?')}, {record.get('size', '?')} bytes)"
    return None


if __name__ == "__main__":
    sys.exit(main())
