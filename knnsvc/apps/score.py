"""Score audio converted by any system on the kNN-SVC protocol; prints one JSON object.

    knnsvc-score CONVERTED_DIR_OR_FILE --target TARGET_DIR_OR_FILE [--source SRC] [--metrics NAMES]
    (also ``python -m knnsvc.eval.score``)

The JSON has the keys ``sim, eer, wer, cer, f0_rmse_cents, vuv_error, f0_corr, dnsmos, rtf,
peak_rss_gb`` (null where not computable: ``rtf`` and ``peak_rss_gb`` always for external audio;
WER/CER and the F0 metrics without ``--source``; EER without two real recordings of a target)
followed by secondary values (standard deviations, DNSMOS parts, counts).

How files are paired:
- target: a file, a folder of one speaker's recordings, or a folder of speaker folders. With
  several target speakers each converted file is assigned by (in order) its file name being a
  speaker name (``<utterance>/<speaker>.wav``, the evaluate layout), a folder on its path being a
  speaker name, or ``_to_<speaker>`` in its name.
- source: a file (every conversion came from it) or a folder; a converted file is matched to the
  source recording whose name is its parent folder (evaluate layout) or the longest source name it
  starts with (``<source>_to_<reference>...``, the reference CLI's naming).
Problems with single files are logged to stderr, one line each; the rest is still scored.
Exit status as the other commands: 0 scored, 1 nothing could be scored (one line says why; no JSON),
2 usage error (unknown metric, ``--csv`` a folder, a device this machine lacks, ...), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from knnsvc.apps.common import (
    FAILED_STATUS,
    INTERRUPTED_STATUS,
    OK_STATUS,
    SHARD_IGNORED_SETTINGS,
    add_shard_arguments,
    add_version_argument,
    check_shard_arguments,
    cli_logging,
    device_type,
    folder_problem,
    integer_type,
    path_type,
    stop_on_sigterm,
)
from knnsvc.audio import find_audio
from knnsvc.eval.dataset import Problems, scan_speakers
from knnsvc.eval.intelligibility import WhisperSettings
from knnsvc.eval.report import score_line, score_summary, write_csv
from knnsvc.eval.suite import METRICS, EvalItem, SuiteResult, SuiteSettings, run_suite
from knnsvc.pitch import pitch_shift_argument
from knnsvc.runtime import DEVICE_NAMES
from knnsvc.shards import Manifest, plain, shard_path, shard_positions

log = logging.getLogger("knnsvc.apps.score")


def _targets(target: Path, problems: Problems) -> dict[str, list[Path]]:
    if target.is_file():
        return {target.stem: [target]}
    return scan_speakers(target, problems, role="target")


def _sources(source: Path | None, problems: Problems) -> list[Path]:
    if source is None:
        return []
    if source.is_file():
        return [source]
    if not source.is_dir():
        problems.report(str(source), "source file or folder not found")
        return []
    files = find_audio(source)
    if not files:
        problems.report(str(source), "source folder has no audio files")
    return files


def assign_target(converted: Path, speakers: Sequence[str]) -> str | None:
    """Target speaker of a converted file by its name or path (see the module docstring)."""
    if len(speakers) == 1:
        return speakers[0]
    if converted.stem in speakers:
        return converted.stem
    for part in reversed(converted.parent.parts):
        if part in speakers:
            return part
    hits = [s for s in speakers if f"_to_{s}" in converted.stem]
    return max(hits, key=len) if hits else None


def assign_source(converted: Path, sources: Sequence[Path]) -> Path | None:
    """Source recording of a converted file by its parent folder or its name prefix."""
    if len(sources) == 1:
        return sources[0]
    by_stem: dict[str, list[Path]] = {}
    for path in sources:
        by_stem.setdefault(path.stem, []).append(path)
    parent = by_stem.get(converted.parent.name, [])
    if len(parent) == 1:
        return parent[0]
    prefixed = [stem for stem in by_stem if converted.stem.startswith(stem) and len(by_stem[stem]) == 1]
    if prefixed:
        return by_stem[max(prefixed, key=len)][0]
    return None


def plan_items(
    converted: Path, target: Path, source: Path | None, problems: Problems
) -> tuple[list[EvalItem], dict[str, list[Path]]]:
    """Pair every converted file with its target speaker (and source, if given)."""
    targets = _targets(target, problems)
    sources = _sources(source, problems)
    if converted.is_file():
        files, root = [converted], converted.parent
    elif converted.is_dir():
        files, root = find_audio(converted), converted
        if not files:
            problems.report(str(converted), "no converted audio files in this folder")
    else:
        problems.report(str(converted), "converted file or folder not found")
        files, root = [], converted
    target_paths = {p.resolve() for paths in targets.values() for p in paths}
    items = []
    for path in files:
        if path.resolve() in target_paths:
            continue
        speaker = assign_target(path.relative_to(root) if path != converted else Path(path.name), list(targets))
        if speaker is None:
            problems.report(str(path), "cannot tell which target speaker it was converted to; skipped")
            continue
        src = assign_source(path, sources) if sources else None
        if sources and src is None:
            problems.report(str(path), "no matching source recording; WER/CER and F0 metrics skipped for it")
        items.append(
            EvalItem(
                item_id=path.relative_to(root).with_suffix("").as_posix() if path != converted else path.stem,
                converted=path,
                target_speaker=speaker,
                source=src,
            )
        )
    return items, targets


NEEDS_SOURCE = ("intelligibility", "pitch")
"""Metric families that compare with the source recording (they need ``--source``)."""
NOT_FOR_EXTERNAL_AUDIO = ("speed",)
"""Metric families measured while converting, so unknown for audio converted elsewhere."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``knnsvc-score``."""
    parser = argparse.ArgumentParser(
        prog="knnsvc-score",
        description="Score converted audio (from any system) on the kNN-SVC evaluation protocol; prints one JSON "
                    "object. Exit status: 0 scored, 1 nothing could be scored, 2 usage error, 130 interrupted.",
    )
    scorable = [name for name in METRICS if name not in NOT_FOR_EXTERNAL_AUDIO]
    parser.add_argument("converted", type=path_type, help="converted audio file or folder")
    parser.add_argument("--target", type=path_type, required=True,
                        help="real recordings of the target: a file, a speaker folder or a folder of speaker folders")
    parser.add_argument("--source", type=path_type, default=None,
                        help="source recording(s): enables WER/CER (vs their transcript or ASR) and F0 metrics")
    parser.add_argument("--metrics", default=None, metavar="NAMES",
                        help=f"comma-separated metric families, of {','.join(scorable)} (default: all of them; "
                             f"{' and '.join(NEEDS_SOURCE)} only with --source)")
    parser.add_argument("--embedder", default="resemblyzer",
                        help="speaker embedder: resemblyzer or speechbrain:<local model folder>")
    parser.add_argument("--asr-model", default="tiny.en",
                        help="faster-whisper model name or local CTranslate2 folder (paper: small)")
    parser.add_argument("--language", default="en", help="ASR language code, or 'auto' to detect")
    parser.add_argument("--beam-size", type=integer_type(1, 100, "a beam width"), default=5,
                        help="ASR beam width (paper: 20)")
    parser.add_argument("--pitch-shift", type=pitch_shift_argument, default="auto",
                        help="expected F0 = source F0 moved onto the target's median (auto), by N semitones, or none")
    parser.add_argument("--device", type=device_type, default="cpu",
                        help=f"device for the embedder and the ASR: {DEVICE_NAMES} (default: %(default)s)")
    parser.add_argument("--csv", type=path_type, default=None, metavar="FILE",
                        help="also write the per-utterance rows to this CSV file")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    add_shard_arguments(parser)
    add_version_argument(parser)
    return parser


def chosen_metrics(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The metric families to compute; an unknown name, or a family that cannot run on these
    arguments when it was asked for by name, is a usage error (exit status 2)."""
    if args.metrics is None:  # the default: everything that applies
        return [m for m in METRICS if m not in NOT_FOR_EXTERNAL_AUDIO and (args.source or m not in NEEDS_SOURCE)]
    names = list(dict.fromkeys(m.strip() for m in args.metrics.split(",") if m.strip()))
    unknown = [m for m in names if m not in METRICS]
    known = ", ".join(m for m in METRICS if m not in NOT_FOR_EXTERNAL_AUDIO)
    if unknown or not names:
        parser.error(f"--metrics: unknown metric family {', '.join(map(repr, unknown)) or repr(args.metrics)} "
                     f"(known: {known})")
    external = [m for m in names if m in NOT_FOR_EXTERNAL_AUDIO]
    if external:
        parser.error(f"--metrics: {', '.join(external)} is measured while converting, not on audio converted "
                     f"elsewhere (known here: {known})")
    sourced = [m for m in names if m in NEEDS_SOURCE]
    if sourced and args.source is None:
        parser.error(f"--metrics: {', '.join(sourced)} compare with the source recordings: give --source")
    return names


def check_csv(path: Path | None, parser: argparse.ArgumentParser) -> None:
    """``--csv`` must name a file that can be created (a usage error otherwise)."""
    if path is None:
        return
    if path.is_dir():
        parser.error(f"--csv {path}: is a folder; name the CSV file to write")
    if path.exists() and not path.is_file():
        parser.error(f"--csv {path}: not a regular file")
    problem = folder_problem(path.parent)
    if problem:
        parser.error(f"--csv {path}: {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns 0 when something was scored, 1 when nothing could be, 2 for usage errors
    (argparse exits with it), 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    metrics = chosen_metrics(args, parser)
    check_csv(args.csv, parser)
    check_shard_arguments(args, parser)
    if args.num_shards is not None and args.manifest is None:
        parser.error("--num-shards: give --manifest PATH, where each shard keeps what it measured for knnsvc-merge")
    if args.num_shards is not None and args.csv is not None:
        parser.error("--csv: a shard keeps its rows in its --manifest; knnsvc-merge --csv writes the whole CSV")
    with cli_logging(args.quiet):
        try:
            with stop_on_sigterm():
                return _score(args, metrics)
        except KeyboardInterrupt:
            log.error("interrupted; nothing written")
            return INTERRUPTED_STATUS


def _score(args: argparse.Namespace, metrics: list[str]) -> int:
    problems = Problems()
    items, targets = plan_items(args.converted, args.target, args.source, problems)
    if not items:
        log.error("nothing scored: no converted file could be paired with a target speaker (%d problem%s above)",
                  len(problems), "" if len(problems) == 1 else "s")
        return FAILED_STATUS
    planning = list(problems.messages)
    positions = shard_positions(len(items), args.num_shards or 1, args.shard_index or 0)
    mine = [items[position] for position in positions]
    settings = SuiteSettings(
        metrics=tuple(metrics),
        embedder=args.embedder,
        whisper=WhisperSettings(
            model=args.asr_model,
            language=None if args.language == "auto" else args.language,
            beam_size=args.beam_size,
            best_of=args.beam_size,
        ),
        pitch_shift=args.pitch_shift,
        device=str(args.device),
    )
    if args.num_shards is not None and args.num_shards > 1:
        log.info("shard %d of %d: %d of the %d converted files", args.shard_index, args.num_shards, len(mine),
                 len(items))
    result = run_suite(mine, targets, settings, problems=problems)
    summary = score_summary(result.summary, len(items), len(problems))
    if summary is None and mine:
        log.error("nothing scored: no metric of %s could be computed for the %d file%s (see the problems above)",
                  ",".join(metrics), len(mine), "" if len(mine) == 1 else "s")
        return FAILED_STATUS
    if args.manifest is not None:
        path = write_manifest(args, result, list(positions), len(items), planning, problems.messages[len(planning):])
        log.info("measurements of %d file(s) in %s", len(mine), path)
    if args.num_shards is not None and args.num_shards > 1:
        return OK_STATUS  # knnsvc-merge prints the summary of all shards
    assert summary is not None
    if args.csv is not None:
        write_csv(args.csv, result.rows)
    print(score_line(summary))
    return OK_STATUS


def write_manifest(args: argparse.Namespace, result: SuiteResult, positions: list[int], total: int,
                   planning: list[str], problems: list[str]) -> Path:
    """Keep what this run (or shard) measured in its manifest (`knnsvc.shards`): per item its CSV row,
    and the measurements and problem lines the merged summary is computed from."""
    settings = {key: value for key, value in sorted(vars(args).items())
                if key not in SHARD_IGNORED_SETTINGS | {"csv"}}
    manifest = Manifest(shard_path(args.manifest, args.num_shards or 1, args.shard_index or 0), "score", settings,
                        args.num_shards or 1, args.shard_index or 0, total=total)
    for position, row in zip(positions, result.rows, strict=True):
        manifest.entries[position] = {"item": row["item"], "row": plain(row)}
    assert result.measured is not None
    manifest.extra = {"computed": list(result.computed), "planning_problems": planning, "problems": problems,
                      "measured": result.measured.to_plain()}
    return manifest.save()


if __name__ == "__main__":
    sys.exit(main())
