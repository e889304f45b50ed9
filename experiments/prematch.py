"""Prematch a corpus for vocoder training (Hydra app; library: hifigan/prematch.py).

    python experiments/prematch.py corpus_dir=DIR out_dir=DIR wavlm=NAME_OR_CKPT [device=cpu|cuda]

Shards in parallel (local joblib workers, or SLURM jobs with hydra/launcher=submitit_slurm):

    python experiments/prematch.py -m hydra/launcher=joblib num_shards=4 shard_index=0,1,2,3 \
        corpus_dir=DIR out_dir=DIR wavlm=wavlm-large
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from hifigan.prematch import PrematchConfig, PrematchSummary, prematch


def to_config(cfg: DictConfig) -> PrematchConfig:
    """The Hydra config as the library's dataclass (unknown keys raise a TypeError)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    return PrematchConfig(**values)


@hydra.main(config_path="../conf", config_name="prematch", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    summary: PrematchSummary = prematch(to_config(cfg))
    logging.getLogger(__name__).info("manifest: %s", summary.manifest)
    return {"written": summary.written, "existing": summary.existing, "skipped": summary.skipped}


if __name__ == "__main__":
    main()
