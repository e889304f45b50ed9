"""A training corpus on disk: the scan into pool groups, and the train/valid split lists.

The corpus layout is ``<corpus>/<speaker>/.../<utterance>.{wav,flac,mp3,ogg}``. Split lists are
CSV files with the header ``audio_path,feat_path`` (the reference's format): ``audio_path``
relative to the corpus root, ``feat_path`` relative to the feature root written by prematching.
"""

from __future__ import annotations

import csv
import enum
import io
import logging
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

from knnsvc.audio import find_audio
from knnsvc.files import atomic_path
from knnsvc.training.features import feature_relpath

log = logging.getLogger(__name__)

CSV_HEADER = ("audio_path", "feat_path")


class PoolUnit(str, enum.Enum):
    """Which utterances form an utterance's reference pool."""

    SPEAKER = "speaker"
    """All other utterances of the speaker (first folder level below the corpus root)."""
    CHAPTER = "chapter"
    """All other utterances in the same folder (the reference's ``per_spk_extract`` behaviour)."""


@dataclass
class CorpusFile:
    """One utterance of the corpus: its path relative to the corpus root and its pool group."""

    relpath: Path
    group: str


class SplitEntry(NamedTuple):
    """One row of a split list: paths relative to the corpus and to the feature root."""

    audio_path: str
    feat_path: str


# ----------------------------------------------------------------------------------- corpus scan
def scan_corpus(corpus_dir: str | Path, pool_unit: PoolUnit | str = PoolUnit.SPEAKER) -> list[CorpusFile]:
    """All audio files of a corpus with their pool group, sorted by path.

    Files directly in the corpus root belong to no speaker; they are skipped with a warning.

    Raises:
        ValueError: the folder does not exist, holds no audio, or two audio files would share one
            feature file (``a.wav`` and ``a.flac`` in one folder).
    """
    corpus_dir = Path(corpus_dir)
    pool_unit = PoolUnit(pool_unit)
    if not corpus_dir.is_dir():
        raise ValueError(f"corpus_dir {corpus_dir}: not a folder")
    paths = find_audio(corpus_dir)
    if not paths:
        raise ValueError(
            f"corpus_dir {corpus_dir}: no audio files (.wav, .flac, .mp3, .ogg) found; "
            "expected <corpus>/<speaker>/.../<utterance>.flac"
        )
    files, loose, targets = [], [], defaultdict(list)
    for path in paths:
        rel = path.relative_to(corpus_dir)
        if len(rel.parts) < 2:
            loose.append(str(rel))
            continue
        group = rel.parts[0] if pool_unit is PoolUnit.SPEAKER else rel.parent.as_posix()
        files.append(CorpusFile(rel, group))
        targets[feature_relpath(rel)].append(str(rel))
    if loose:
        log.warning(
            "%d audio file(s) directly in %s belong to no speaker folder and are skipped: %s",
            len(loose),
            corpus_dir,
            ", ".join(loose[:5]) + (" ..." if len(loose) > 5 else ""),
        )
    clashes = [names for names in targets.values() if len(names) > 1]
    if clashes:
        raise ValueError(
            f"audio files would share a feature file (same name, different suffix): {clashes[0]}; "
            "rename or remove one of them"
        )
    if not files:
        raise ValueError(f"corpus_dir {corpus_dir}: no audio file inside a speaker folder")
    return files


# ----------------------------------------------------------------------------------- split lists
def read_split_csv(path: str | Path) -> list[SplitEntry]:
    """Rows of a split list.

    Raises:
        ValueError: missing file, wrong header, a row without two fields, or an absolute path.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"split list {path}: file not found")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(cell.strip() for cell in rows[0]) != CSV_HEADER:
        raise ValueError(f"split list {path}: the first line must be '{','.join(CSV_HEADER)}'")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ValueError(f"split list {path}, line {number}: expected 2 fields, got {len(row)}")
        audio, feat = (cell.strip() for cell in row)
        if Path(audio).is_absolute() or Path(feat).is_absolute():
            raise ValueError(
                f"split list {path}, line {number}: paths must be relative, got {audio!r}, {feat!r}"
            )
        entries.append(SplitEntry(audio, feat))
    return entries


def write_split_csv(path: str | Path, entries: Sequence[SplitEntry]) -> Path:
    """Write a split list (header ``audio_path,feat_path``, POSIX relative paths), atomically."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(entries)
    text = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def make_splits(
    corpus_dir: str | Path,
    valid_fraction: float = 0.05,
    seed: int = 1234,
    by: str = "utterance",
    min_valid: int = 1,
) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """Deterministic train/valid lists of every audio file under ``corpus_dir``.

    Args:
        corpus_dir: corpus root, ``<corpus>/<speaker>/.../*.flac``.
        valid_fraction: share of utterances (``by="utterance"``) or speakers (``by="speaker"``)
            held out for validation; at least ``min_valid`` of them.
        seed: seed of the shuffle that picks the validation items (same seed, same corpus ->
            same lists, on any machine).
        by: "utterance" (every speaker appears in both lists) or "speaker" (speaker-disjoint, like
            LibriSpeech train-clean-100 / dev-clean).

    Returns:
        (train, valid), each sorted by audio path.
    """
    corpus_dir = Path(corpus_dir)
    if by not in ("utterance", "speaker"):
        raise ValueError(f"by must be 'utterance' or 'speaker', got {by!r}")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if not corpus_dir.is_dir():
        raise ValueError(f"{corpus_dir}: not a folder")
    relpaths = [p.relative_to(corpus_dir) for p in find_audio(corpus_dir)]
    relpaths = [p for p in relpaths if len(p.parts) >= 2]
    if not relpaths:
        raise ValueError(f"{corpus_dir}: no audio files inside speaker folders")
    entries = sorted(SplitEntry(p.as_posix(), feature_relpath(p).as_posix()) for p in relpaths)
    rng = random.Random(seed)
    if by == "utterance":
        units = [e.audio_path for e in entries]
    else:
        units = sorted({Path(e.audio_path).parts[0] for e in entries})
    n_valid = (
        min(len(units) - 1, max(min_valid, math.ceil(valid_fraction * len(units))))
        if valid_fraction > 0
        else 0
    )
    if n_valid <= 0 and valid_fraction > 0:
        raise ValueError(f"{corpus_dir}: too few {by}s ({len(units)}) to hold any out for validation")
    shuffled = units[:]
    rng.shuffle(shuffled)
    held_out = set(shuffled[:n_valid])
    key = (lambda e: e.audio_path) if by == "utterance" else (lambda e: Path(e.audio_path).parts[0])
    train = [e for e in entries if key(e) not in held_out]
    valid = [e for e in entries if key(e) in held_out]
    return train, valid
