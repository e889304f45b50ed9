"""Train a HiFi-GAN vocoder on prematched features (Hydra app; library: hifigan/train.py).

    python experiments/train.py corpus_dir=DIR features_dir=DIR out_dir=DIR generator=harmonic max_steps=N
    torchrun --nproc_per_node=4 experiments/train.py ... device=cuda        # DistributedDataParallel
    python experiments/train.py -m generator=harmonic,sine ...             # a sweep, one folder per job

Checkpoints, TensorBoard logs (``<out_dir>/logs``) and the composed config (``.hydra/``) go to
``out_dir`` (in a sweep: ``out_dir/<overrides>``). Running the same command again resumes.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hifigan.train import DataConfig, TrainConfig, train

_DATA_KEYS = ("corpus_dir", "features_dir")


def to_config(cfg: DictConfig, out_dir: str | None = None) -> TrainConfig:
    """The Hydra config as the library's dataclasses (unknown keys raise a TypeError).

    Args:
        cfg: the composed ``conf/train.yaml``.
        out_dir: where this job writes (the sweep sub-folder in a multirun); default ``cfg.out_dir``.
    """
    values = OmegaConf.to_container(cfg, resolve=True)
    data = DataConfig(**{key: values.pop(key) for key in _DATA_KEYS}, **values.pop("data"))
    if out_dir is not None:
        values["out_dir"] = out_dir
    return TrainConfig(data=data, **values)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    result = train(to_config(cfg, out_dir=HydraConfig.get().runtime.output_dir))
    return result.best_valid_mel_l1


if __name__ == "__main__":
    main()
