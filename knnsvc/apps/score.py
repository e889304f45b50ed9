"""Score audio converted by any system on the kNN-SVC protocol; prints one JSON object.

    python -m knnsvc.eval.score CONVERTED_DIR_OR_FILE --target TARGET_DIR_OR_FILE [--source SRC]

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
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from knnsvc.audio import find_audio
from knnsvc.eval import METRIC_KEYS
from knnsvc.eval.dataset import Problems, scan_speakers
from knnsvc.eval.intelligibility import WhisperSettings
from knnsvc.eval.report import to_plain, write_csv
from knnsvc.eval.suite import METRICS, EvalItem, SuiteSettings, run_suite
from knnsvc.pitch import pitch_shift_argument

log = logging.getLogger("knnsvc.eval.score")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m knnsvc.eval.score",
        description="Score converted audio (from any system) on the kNN-SVC evaluation protocol.",
    )
    parser.add_argument("converted", type=Path, help="converted audio file or folder")
    parser.add_argument("--target", type=Path, required=True,
                        help="real recordings of the target: a file, a speaker folder or a folder of speaker folders")
    parser.add_argument("--source", type=Path, default=None,
                        help="source recording(s): enables WER/CER (vs their transcript or ASR) and F0 metrics")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help=f"comma-separated metric families (default: all of {','.join(METRICS)})")
    parser.add_argument("--embedder", default="resemblyzer",
                        help="speaker embedder: resemblyzer or speechbrain:<local model folder>")
    parser.add_argument("--asr-model", default="tiny.en",
                        help="faster-whisper model name or local CTranslate2 folder (paper: small)")
    parser.add_argument("--language", default="en", help="ASR language code, or 'auto' to detect")
    parser.add_argument("--beam-size", type=int, default=5, help="ASR beam width (paper: 20)")
    parser.add_argument("--pitch-shift", type=pitch_shift_argument, default="auto",
                        help="expected F0 = source F0 moved onto the target's median (auto), by N semitones, or none")
    parser.add_argument("--device", default="cpu", help="device for the embedder and the ASR")
    parser.add_argument("--csv", type=Path, default=None, help="also write the per-utterance rows to this CSV")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 0 on success, 1 if nothing could be scored."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    problems = Problems()
    items, targets = plan_items(args.converted, args.target, args.source, problems)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.source is None:
        metrics = [m for m in metrics if m not in ("intelligibility", "pitch")]
    metrics = [m for m in metrics if m != "speed"]  # nothing is known about another system's run
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
        device=args.device,
    )
    result = run_suite(items, targets, settings, problems=problems) if items else None
    summary = dict.fromkeys(METRIC_KEYS)
    if result is not None:
        summary.update(result.summary)
        if args.csv is not None:
            write_csv(args.csv, result.rows)
    summary["n_items"] = len(items)
    summary["problems"] = len(problems)
    print(json.dumps(to_plain(summary), ensure_ascii=False))
    return 0 if items else 1


if __name__ == "__main__":
    sys.exit(main())
