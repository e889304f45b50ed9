"""Gather a sweep's runs into one table and metric-vs-setting plots.

    python experiments/summarize.py SWEEP_DIR [MORE_DIRS ...] [--out DIR]

Reads every metrics.json written by experiments/evaluate.py under the given folders (e.g. the
out_dir of a `-m` multirun, or the out_dirs of one run per Table 1 condition) and writes
summary.md (Table 1 layout + a per-run settings table), summary.csv and one PNG per swept setting
into --out (default: the first folder).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from knnsvc.eval.sweep import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep / run folders holding metrics.json files")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        result = summarize(args.folders, args.out)
    except ValueError as err:
        logging.error("%s", err)
        return 1
    print(result["summary_md"].read_text(encoding="utf-8"))
    logging.info("wrote %s, %s and %d figure(s)", result["summary_md"], result["summary_csv"], len(result["figures"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
