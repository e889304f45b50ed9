"""Gather the runs of a sweep (every ``metrics.json`` under some folders) into one report.

Writes into the output folder:
- ``summary.md``: the Table 1 layout (systems × conditions) and a per-run table of the settings
  that differ between runs;
- ``summary.csv``: one row per run (its folder, system, condition, differing settings, metrics);
- ``<setting>.png``: metric-vs-setting curves for every setting that differs (one line per
  system when several systems were run).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from knnsvc.eval import METRIC_KEYS
from knnsvc.eval.report import settings_table_markdown, table1_markdown, write_csv
from knnsvc.plots import plot_metric_curves

log = logging.getLogger(__name__)

IGNORED_SETTINGS = ("device", "metrics")
"""Settings that never define a sweep axis (they do not change the numbers)."""

NONE_LABELS = {"reference_seconds": "full", "match.concat_weight": "off", "match.pitch_shift": "none"}
"""How a None setting is labelled on a plot axis."""


def load_runs(folders: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every readable ``metrics.json`` below `folders`, with ``run_dir`` added, sorted by path."""
    runs = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("metrics.json")):
            if "cache" in path.relative_to(folder).parts[:-1]:
                continue
            try:
                run = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                log.error("%s: unreadable (%s); left out", path, err)
                continue
            run["run_dir"] = str(path.parent)
            runs.append(run)
    return runs


def varying_settings(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Names of the settings whose values are not the same in every run."""
    keys: list[str] = []
    for run in runs:
        for key in run.get("settings", {}):
            if key not in keys and key not in IGNORED_SETTINGS:
                keys.append(key)
    return [
        key for key in keys
        if len({json.dumps(run.get("settings", {}).get(key), sort_keys=True) for run in runs}) > 1
    ]


def summarize(folders: Sequence[str | Path], out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write summary.md, summary.csv and the curves; returns paths and the varying settings.

    Raises:
        ValueError: no ``metrics.json`` was found.
    """
    runs = load_runs(folders)
    if not runs:
        raise ValueError(f"no metrics.json found under {', '.join(map(str, folders))}")
    out_dir = Path(out_dir) if out_dir is not None else Path(folders[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    varying = varying_settings(runs)
    metrics = [m for m in METRIC_KEYS if any(run.get(m) is not None for run in runs)]
    systems = {run.get("system") for run in runs}

    text = ["# Sweep summary", "", f"{len(runs)} run(s) from {', '.join(map(str, folders))}.", "",
            "## Table 1 layout", "", table1_markdown(runs)]
    if varying:
        text += ["## Runs by setting", "",
                 settings_table_markdown(runs, ["system", "condition"] + varying, metrics)]
    (out_dir / "summary.md").write_text("\n".join(text), encoding="utf-8")

    rows = []
    for run in runs:
        row = {"run_dir": run["run_dir"], "system": run.get("system"), "condition": run.get("condition")}
        row.update({key: run.get("settings", {}).get(key) for key in varying})
        row.update({m: run.get(m) for m in metrics})
        rows.append(row)
    write_csv(out_dir / "summary.csv", rows)

    figures = []
    flat = [{**run.get("settings", {}), **run} for run in runs]
    for key in varying:
        others = [k for k in varying if k != key] + (["system"] if len(systems) > 1 else [])
        points = []
        for row in flat:
            point = dict(row)
            if point.get(key) is None:
                point[key] = NONE_LABELS.get(key, "none")
            point["_line"] = ", ".join(f"{k}={row.get(k)}" for k in others)
            points.append(point)
        figures.append(plot_metric_curves(
            out_dir / f"{key.replace('.', '_')}.png", points, key, metrics,
            group_by="_line" if others else None, title=f"metrics vs {key}",
        ))
    if not varying and len(systems) > 1:
        figures.append(plot_metric_curves(out_dir / "system.png", flat, "system", metrics, title="metrics by system"))
    return {
        "summary_md": out_dir / "summary.md",
        "summary_csv": out_dir / "summary.csv",
        "figures": figures,
        "varying": varying,
        "runs": len(runs),
    }
