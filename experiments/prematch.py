"""Prematch a corpus for vocoder training (Hydra app; library: training/prematch.py).

    python experiments/prematch.py corpus_dir=DIR out_dir=DIR wavlm=NAME_OR_CKPT [device=cpu|cuda]

Shards in parallel (local joblib workers, or SLURM jobs with hydra/launcher=submitit_slurm):

    python experiments/prematch.py -m hydra/launcher=joblib num_shards=4 shard_index=0,1,2,3 \
        corpus_dir=DIR out_dir=DIR wavlm=wavlm-large

The schema is `PrematchConfig` (matching settings under `match`), registered here as
`prematch_schema`; conf/prematch.yaml is a delta over it, so an unknown key fails when the config
is composed.
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from knnsvc.training.prematch import PrematchConfig, PrematchSummary, prematch

ConfigStore.instance().store(name="prematch_schema", node=PrematchConfig)


def to_config(cfg: DictConfig) -> PrematchConfig:
    """The composed ``conf/prematch.yaml`` as the library's dataclass."""
    return OmegaConf.to_object(cfg)


@hydra.main(config_path="../conf", config_name="prematch", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    summary: PrematchSummary = prematch(to_config(cfg))
    logging.getLogger(__name__).info("manifest: %s", summary.manifest)
    return {"written": summary.written, "existing": summary.existing, "skipped": summary.skipped}


if __name__ == "__main__":
    main()
