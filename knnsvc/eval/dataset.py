"""Evaluation sets: speaker folders, the reference's pair lists, and per-item problem reports.

A set is a folder of speaker folders (``ROOT/<speaker>/**/<utterance>.wav``); audio lying directly
in ROOT forms one speaker named after ROOT. A pair list is the reference's CSV
``src_speaker,tgt_speaker,x_path,y_path,label``: label-0 rows ask for the conversion
``x_path = <source utterance id>/<target speaker>`` and pair it with the real target recording
``y_path``; label-1 rows pair two real recordings of the target (the EER's genuine trials).

Nothing here raises on bad input: every unusable item is reported once (one line naming it and
the problem) through `Problems`, and the rest of the run goes on.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from knnsvc.audio import AUDIO_SUFFIXES, find_audio
from knnsvc.eval.speaker import Trial

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("src_speaker", "tgt_speaker", "x_path", "y_path", "label")


class Problems:
    """Collects one-line problem reports (and logs each as an error)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def report(self, what: str, problem: str) -> None:
        text = " ".join(f"{what}: {problem}".split())
        log.error("%s", text)
        self.messages.append(text)

    def __len__(self) -> int:
        return len(self.messages)


@dataclass(frozen=True)
class ConversionJob:
    """One (source utterance, target speaker) conversion.

    Attributes:
        item_id: ``<source speaker>/<utterance path in its folder, no suffix>/<target speaker>``.
    """

    item_id: str
    source: Path
    source_speaker: str
    target_speaker: str


def scan_speakers(root: str | Path, problems: Problems, role: str = "speaker") -> dict[str, list[Path]]:
    """Speaker name -> sorted audio files under ``root/<speaker>/``.

    Loose audio files directly in `root` form a speaker named after `root`. A speaker folder
    without audio is reported and left out.
    """
    root = Path(root)
    if not root.is_dir():
        problems.report(str(root), f"{role} folder not found")
        return {}
    speakers: dict[str, list[Path]] = {}
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if loose:
        speakers[root.name] = loose
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = find_audio(folder)
        if files:
            speakers[folder.name] = files
        else:
            problems.report(str(folder), f"{role} folder has no audio files ({', '.join(AUDIO_SUFFIXES)})")
    if not speakers:
        problems.report(str(root), f"no {role} audio found")
    return speakers


def utterance_id(speaker_root: Path, path: Path) -> str:
    """Path of a recording inside its speaker folder, without suffix (``chapter/utt`` or ``utt``)."""
    try:
        relative = path.relative_to(speaker_root)
    except ValueError:
        relative = Path(path.name)
    return relative.with_suffix("").as_posix()


def _speaker_root(root: Path, speaker: str, files: list[Path]) -> Path:
    return root if files and files[0].parent == root and speaker == root.name else root / speaker


def plan_all_pairs(
    sources_root: str | Path,
    sources: dict[str, list[Path]],
    targets: dict[str, list[Path]],
    skip_same_speaker: bool,
    max_sources_per_speaker: int | None = None,
) -> list[ConversionJob]:
    """Every source utterance to every target speaker (optionally not to its own speaker)."""
    sources_root = Path(sources_root)
    jobs = []
    for src_speaker, files in sources.items():
        root = _speaker_root(sources_root, src_speaker, files)
        for path in files[:max_sources_per_speaker]:
            for tgt_speaker in targets:
                if skip_same_speaker and tgt_speaker == src_speaker:
                    continue
                item = f"{src_speaker}/{utterance_id(root, path)}/{tgt_speaker}"
                jobs.append(ConversionJob(item, path, src_speaker, tgt_speaker))
    return jobs


def _stem_index(files: list[Path]) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for path in files:
        index.setdefault(path.stem, []).append(path)
    return index


def read_pair_list(
    pair_file: str | Path,
    sources_root: str | Path,
    sources: dict[str, list[Path]],
    targets: dict[str, list[Path]],
    problems: Problems,
) -> tuple[list[ConversionJob], list[Trial]]:
    """Conversions and EER trials named by a reference-format pair list.

    Recordings are found by utterance id (file name without suffix) within the named speaker,
    so nested (LibriSpeech ``spk/chapter/utt``) and flattened layouts both resolve. Conversion
    trials carry the job's `item_id` as `x`; real recordings are file paths.

    Rows naming unknown speakers or recordings are reported (``<file> line N: ...``) and skipped.
    """
    pair_file = Path(pair_file)
    sources_root = Path(sources_root)
    if not pair_file.is_file():
        problems.report(str(pair_file), "pair list not found")
        return [], []
    source_index = {spk: _stem_index(files) for spk, files in sources.items()}
    target_index = {spk: _stem_index(files) for spk, files in targets.items()}
    jobs: dict[str, ConversionJob] = {}
    trials: list[Trial] = []

    def find(index: dict[str, dict[str, list[Path]]], speaker: str, utt_path: str) -> Path | str:
        if speaker not in index:
            return f"speaker '{speaker}' not found"
        hits = index[speaker].get(Path(utt_path).name, [])
        if len(hits) == 1:
            return hits[0]
        if not hits:
            return f"recording '{utt_path}' of speaker '{speaker}' not found"
        return f"recording '{utt_path}' of speaker '{speaker}' is ambiguous ({len(hits)} files)"

    with pair_file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    for line_no, row in enumerate(rows, 1):
        where = f"{pair_file} line {line_no}"
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[: len(PAIR_COLUMNS)] == list(PAIR_COLUMNS):
            continue
        if len(cells) < len(PAIR_COLUMNS):
            problems.report(where, f"expected {len(PAIR_COLUMNS)} columns {','.join(PAIR_COLUMNS)}, got {len(cells)}")
            continue
        src_speaker, tgt_speaker, x_path, y_path, label = cells[:5]
        if label not in ("0", "1"):
            problems.report(where, f"label must be 0 or 1, got '{label}'")
            continue
        anchor = find(target_index, tgt_speaker, y_path)
        if isinstance(anchor, str):
            problems.report(where, f"y_path: {anchor}")
            continue
        if label == "1":
            other = find(target_index, tgt_speaker, x_path)
            if isinstance(other, str):
                problems.report(where, f"x_path: {other}")
                continue
            trials.append(Trial(tgt_speaker, str(other), str(anchor), 1))
            continue
        utt = x_path.rsplit("/", 1)[0] if "/" in x_path else x_path
        source = find(source_index, src_speaker, utt)
        if isinstance(source, str):
            problems.report(where, f"x_path source: {source}")
            continue
        files = sources[src_speaker]
        item = f"{src_speaker}/{utterance_id(_speaker_root(sources_root, src_speaker, files), source)}/{tgt_speaker}"
        jobs.setdefault(item, ConversionJob(item, source, src_speaker, tgt_speaker))
        trials.append(Trial(tgt_speaker, item, str(anchor), 0))
    return list(jobs.values()), trials
