"""Writing results: metrics.json, the per-utterance CSV, and Markdown tables.

`table1_markdown` lays runs out like the paper's Table 1: one column per system (kNN-VC,
kNN-SVC w/o {AS, OPT}, kNN-SVC w/o {OPT}, kNN-SVC, then any other system that was scored) and,
for each condition (e.g. ``ls → ls``, ``os → os``), one row per metric.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from knnsvc.eval import METRIC_KEYS
from knnsvc.files import atomic_path

SYSTEM_COLUMNS = ("kNN-VC", "kNN-SVC w/o {AS, OPT}", "kNN-SVC w/o {OPT}", "kNN-SVC")
"""Table 1's columns, in the paper's order."""

TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("eer", "EER (%) ↑"),
    ("wer", "WER (%) ↓"),
    ("cer", "CER (%) ↓"),
    ("sim", "SIM ↑"),
    ("dnsmos", "DNSMOS ↑"),
    ("f0_rmse_cents", "F0 RMSE (cents) ↓"),
    ("vuv_error", "V/UV error (%) ↓"),
    ("f0_corr", "F0 corr ↑"),
    ("rtf", "RTF ↓"),
)
"""(summary key, row label) of the metrics a table shows, in order."""

UTTERANCE_COLUMNS = (
    "item",
    "source_speaker",
    "source",
    "target_speaker",
    "converted",
    "sim",
    "wer",
    "cer",
    "f0_rmse_cents",
    "vuv_error",
    "f0_corr",
    "dnsmos",
    "rtf",
    "audio_seconds",
    "error",
)
"""Leading columns of the per-utterance CSV; other keys follow alphabetically."""


def to_plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, paths strings, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return to_plain(value.item())
    return value


def score_summary(suite_summary: Mapping[str, Any], n_items: int, n_problems: int) -> dict[str, Any] | None:
    """The summary ``knnsvc-score`` prints (the `METRIC_KEYS` first, then the suite's other entries,
    ``n_items`` and ``problems``), or None when no metric could be computed (nothing scored)."""
    summary: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    summary.update(suite_summary)
    if all(summary[key] is None for key in METRIC_KEYS):
        return None
    summary["n_items"] = n_items
    summary["problems"] = n_problems
    return summary


def score_line(summary: Mapping[str, Any]) -> str:
    """The one JSON line ``knnsvc-score`` (and ``knnsvc-merge`` of its shards) prints for a summary."""
    return json.dumps(to_plain(summary), ensure_ascii=False)


def _atomic_write(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write `data` as indented JSON (NaN/inf as null), atomically."""
    return _atomic_write(Path(path), json.dumps(to_plain(data), indent=2, ensure_ascii=False) + "\n")


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write one row per utterance; known columns first, the rest alphabetically."""
    keys: set[str] = set()
    for row in rows:
        keys.update(row)
    columns = [c for c in UTTERANCE_COLUMNS if c in keys] + sorted(keys - set(UTTERANCE_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell_csv(v) for k, v in to_plain(dict(row)).items()})
    return _atomic_write(Path(path), buffer.getvalue())


def _cell_csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def format_value(value: Any, std: Any = None, digits: int = 2) -> str:
    """A table cell: ``12.34`` or ``12.34 ± 1.20``; ``–`` when missing."""
    if _missing(value):
        return "–"
    if not isinstance(value, (int, float)):
        return str(value)
    text = f"{value:.{digits}f}"
    if isinstance(std, (int, float)) and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def _digits(metric: str) -> int:
    return 3 if metric in ("sim", "f0_corr", "rtf") else (1 if metric == "f0_rmse_cents" else 2)


def table1_markdown(
    runs: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str]] = TABLE_METRICS,
    systems: Sequence[str] = SYSTEM_COLUMNS,
) -> str:
    """Markdown table shaped like the paper's Table 1.

    Args:
        runs: summaries with keys ``system``, ``condition`` and the metric keys (optionally
            ``<metric>_std``). When several runs share a (condition, system) cell the last wins.
        metrics: (key, label) rows shown for every condition; rows empty in every column are
            dropped.
        systems: column order; systems found in `runs` but not listed are appended.
    """
    cells: dict[tuple[str, str], Mapping[str, Any]] = {}
    conditions: list[str] = []
    columns = list(systems)
    for run in runs:
        system = str(run.get("system") or "kNN-SVC")
        condition = str(run.get("condition") or "")
        cells[(condition, system)] = run
        if condition not in conditions:
            conditions.append(condition)
        if system not in columns:
            columns.append(system)
    lines = [
        "| condition | metric | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for condition in conditions:
        for key, label in metrics:
            values = [cells.get((condition, s), {}) for s in columns]
            if all(_missing(v.get(key)) for v in values):
                continue
            row = [format_value(v.get(key), v.get(f"{key}_std"), _digits(key)) for v in values]
            lines.append(f"| {condition} | {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def settings_table_markdown(
    runs: Sequence[Mapping[str, Any]], settings: Sequence[str], metrics: Sequence[str]
) -> str:
    """One row per run: the swept settings, then the metrics (for ablation sweeps)."""
    header = list(settings) + list(metrics)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        cells = [str(run.get("settings", {}).get(s, run.get(s))) for s in settings]
        cells += [format_value(run.get(m), run.get(f"{m}_std"), _digits(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
