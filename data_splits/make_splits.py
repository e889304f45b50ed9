"""Write deterministic train/valid split lists for vocoder training.

    python data_splits/make_splits.py CORPUS_DIR --out-dir data_splits/my_corpus \
        [--valid-fraction 0.05] [--by utterance|speaker] [--seed 1234]

Writes ``train.csv`` and ``valid.csv`` with the header ``audio_path,feat_path``: audio paths
relative to CORPUS_DIR, feature paths relative to the prematching ``out_dir`` (same path, suffix
``.pt``). The same corpus, fraction, mode and seed always give the same lists. Use them with
``python experiments/train.py data=csv data.train_csv=.../train.csv data.valid_csv=.../valid.csv``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from knnsvc.training.corpus import make_splits, write_split_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus_dir", type=Path, help="corpus root: <corpus>/<speaker>/.../*.flac")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for train.csv and valid.csv")
    parser.add_argument("--valid-fraction", type=float, default=0.05, help="share held out (default 0.05)")
    parser.add_argument(
        "--by",
        choices=("utterance", "speaker"),
        default="utterance",
        help="hold out utterances (every speaker in both lists) or whole speakers (default utterance)",
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the hold-out choice (default 1234)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        train, valid = make_splits(args.corpus_dir, args.valid_fraction, args.seed, args.by)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    train_csv = write_split_csv(args.out_dir / "train.csv", train)
    valid_csv = write_split_csv(args.out_dir / "valid.csv", valid)
    print(f"{train_csv}: {len(train)} utterances\n{valid_csv}: {len(valid)} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
