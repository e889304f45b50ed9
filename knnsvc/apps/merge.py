"""Join the manifests of a sharded run into one report: ``knnsvc-merge SHARD.json ... -o MERGED``.

    knnsvc-merge out/manifest.shard-*-of-4.json -o out/manifest.json           # knnsvc-convert shards
    knnsvc-merge scores.shard-*-of-4.json [-o summary.json] [--csv rows.csv]   # knnsvc-score shards

Conversion shards (``--num-shards``/``--shard-index``/``--manifest`` of knnsvc-convert, or the Hydra
app experiments/convert.py) merge into the manifest one unsharded run writes: every input in batch
order with its output, status (converted / skipped / failed and the message) and seconds. Score
shards merge into exactly what one unsharded ``knnsvc-score`` prints (the same JSON line, byte for
byte) and writes with ``--csv``: the summary is recomputed from every shard's measurements, not
averaged from the shards' summaries.

A merge needs all N shards of one run, each once and complete, made with the same settings; anything
else (a missing, duplicated, unfinished or foreign shard, a manifest that is already merged, an
output that exists: a second merge, unless --overwrite) is one line and nothing is written. Every
file is written atomically.

Exit status: 0 merged, 1 the shards cannot be merged (one line), or the merged batch holds failed
items (the report is written; each failure is listed as a line), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from knnsvc.apps.common import (
    FAILED_STATUS,
    INTERRUPTED_STATUS,
    OK_STATUS,
    add_version_argument,
    cli_logging,
    path_type,
    stop_on_sigterm,
)
from knnsvc.eval.report import score_line, score_summary, write_csv
from knnsvc.eval.suite import Measurements, join_measurements, summarise
from knnsvc.files import atomic_path
from knnsvc.shards import ShardError, merge_entries, merged_manifest, output_problem, read_shards, write_json

log = logging.getLogger("knnsvc.apps.merge")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``knnsvc-merge``."""
    parser = argparse.ArgumentParser(
        prog="knnsvc-merge",
        description="Merge the manifests of all shards of one knnsvc-convert or knnsvc-score run into the report "
                    "an unsharded run makes. Exit status: 0 merged, 1 cannot merge (one line) or failed items, "
                    "2 usage error, 130 interrupted.",
    )
    parser.add_argument("manifests", metavar="SHARD", nargs="+", type=path_type,
                        help="the shards' manifests (<stem>.shard-I-of-N.json), all N of them")
    parser.add_argument("-o", "--output", type=path_type, default=None, metavar="FILE",
                        help="the merged manifest (conversion shards: required) or the summary JSON (score shards)")
    parser.add_argument("--csv", type=path_type, default=None, metavar="FILE",
                        help="score shards: also write the per-utterance rows, as knnsvc-score --csv does")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing merged report")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    add_version_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with cli_logging(args.quiet):
        try:
            with stop_on_sigterm():
                return merge(args, parser)
        except ShardError as err:
            log.error("%s", err)
            return FAILED_STATUS
        except KeyboardInterrupt:
            log.error("interrupted; nothing written")
            return INTERRUPTED_STATUS


def merge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the shards, then write the merged report(s) (raises `ShardError`: one line)."""
    shards = read_shards(args.manifests)
    kind = shards[0]["kind"]
    outputs = [path for path in (args.output, args.csv) if path is not None]
    if kind == "convert" and args.output is None:
        parser.error("-o: name the merged manifest to write")
    if kind == "convert" and args.csv is not None:
        parser.error("--csv: conversion manifests have no score rows")
    for path in outputs:
        problem = output_problem(path, args.manifests, args.overwrite)
        if problem:
            raise ShardError(problem)
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        parser.error("-o and --csv name the same file")
    if kind == "convert":
        return _merge_conversions(shards, args.output)
    if kind == "score":
        return _merge_scores(shards, args.output, args.csv)
    raise ShardError(f"{args.manifests[0]}: manifests of kind {kind!r} cannot be merged by this version")


def _merge_conversions(shards: list[dict[str, Any]], output: Path) -> int:
    merged = merged_manifest(shards)
    counts = Counter(entry["status"] for entry in merged["entries"])
    write_json(output, merged)
    for entry in merged["entries"]:
        if entry["status"] == "failed":
            log.error("%s", entry["message"])
    log.info("merged %d shards into %s: %d converted, %d already there, %d failed", len(shards), output,
             counts["converted"], counts["skipped"], counts["failed"])
    return FAILED_STATUS if counts["failed"] else OK_STATUS


def _merge_scores(shards: list[dict[str, Any]], output: Path | None, csv: Path | None) -> int:
    entries = merge_entries(shards)
    parts = [Measurements.from_plain(shard["extra"]["measured"]) for shard in shards]
    measured = join_measurements(parts, [entry["item"] for entry in entries])
    computed = [name for name in shards[0]["extra"]["computed"]
                if all(name in shard["extra"]["computed"] for shard in shards)]
    summary = score_summary(summarise(measured, computed), shards[0]["total"], _problem_count(shards))
    if summary is None:
        log.error("nothing scored: no metric could be computed for the %d file(s) of the %d shards",
                  shards[0]["total"], len(shards))
        return FAILED_STATUS
    line = score_line(summary)
    if csv is not None:
        write_csv(csv, [entry["row"] for entry in entries])
    if output is not None:
        with atomic_path(output) as tmp:
            tmp.write_text(line + "\n", encoding="utf-8")
    print(line)
    return OK_STATUS


def _problem_count(shards: list[dict[str, Any]]) -> int:
    """The problems an unsharded run reports: the planning's (every shard plans the whole batch) once,
    each item's once (it is in one shard), and those about the run itself (a target recording, a metric
    family) once, though every shard reports them."""
    per_line: Counter[str] = Counter()
    for shard in shards:
        for line, count in Counter(shard["extra"]["problems"]).items():
            per_line[line] = max(per_line[line], count)
    return len(shards[0]["extra"]["planning_problems"]) + sum(per_line.values())


if __name__ == "__main__":
    sys.exit(main())
