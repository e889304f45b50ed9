"""Train a HiFi-GAN vocoder on prematched features (Hydra app; library: training/trainer.py).

    python experiments/train.py data.corpus_dir=DIR data.features_dir=DIR out_dir=DIR generator=harmonic max_steps=N
    torchrun --nproc_per_node=4 experiments/train.py ... device=cuda        # DistributedDataParallel
    python experiments/train.py -m generator=harmonic,sine ...             # a sweep, one folder per job
    python experiments/train.py ... rate=24k generator=harmonic           # 24 kHz HiFi-GAN (rate=44k: 44.1 kHz)
    python experiments/train.py ... rate=44k generator=vocos              # the fast iSTFT-head vocoder

The schema is `TrainConfig` (with its `DataConfig` under `data`), registered here as
`train_schema`; conf/train.yaml and its groups are deltas over it, so an unknown key fails when
the config is composed. Checkpoints, TensorBoard logs (``<out_dir>/logs``) and the composed config
(``.hydra/``) go to ``out_dir`` (in a sweep: ``out_dir/<overrides>``). Running the same command
again resumes.
"""

from __future__ import annotations

import dataclasses

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from knnsvc.training.trainer import TrainConfig, train


def train_schema() -> DictConfig:
    """`TrainConfig` as a structured config; its `mel` node (a frozen `MelConfig`) stays overridable."""
    schema = OmegaConf.structured(TrainConfig)
    OmegaConf.set_readonly(schema.mel, False)
    return schema


ConfigStore.instance().store(name="train_schema", node=train_schema())


def to_config(cfg: DictConfig, out_dir: str | None = None) -> TrainConfig:
    """The composed ``conf/train.yaml`` as the library's dataclass.

    Args:
        cfg: the composed config.
        out_dir: where this job writes (the sweep sub-folder in a multirun); default ``cfg.out_dir``.
    """
    config = OmegaConf.to_object(cfg)
    return config if out_dir is None else dataclasses.replace(config, out_dir=out_dir)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    result = train(to_config(cfg, out_dir=HydraConfig.get().runtime.output_dir))
    return result.best_valid_mel_l1


if __name__ == "__main__":
    main()
