"""HiFi-GAN configuration: the keys of the official ``config_v1_wavlm.json`` with their defaults."""

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _default_dist_config() -> dict[str, Any]:
    return {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1}


@dataclass
class HiFiGANConfig:
    """Generator, mel-loss and training settings of the kNN-SVC / kNN-VC HiFi-GAN (spec §9.1).

    Defaults are the official kNN-SVC ``config_v1_wavlm.json``. The architecture keys are
    ``hubert_dim`` (input feature dim D), ``hifi_dim`` (output of ``lin_pre``),
    ``upsample_initial_channel``, the upsample/resblock lists and ``n_harmonic`` (width of the
    excitation branch, not the number of harmonics). Keys the code does not use (``dspgan_*``,
    ``hubert_dim_*``, ``special_comment``, anything else) are kept verbatim in ``extra`` so that
    ``to_dict()`` reproduces the file they came from.
    """

    resblock: str = "1"
    num_gpus: int = 0
    batch_size: int = 16
    learning_rate: float = 0.0002
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    lr_decay: float = 0.999
    seed: int = 1234
    upsample_rates: list[int] = field(default_factory=lambda: [10, 8, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [20, 16, 4, 4])
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    n_harmonic: int = 32
    with_amp_ratio: bool = False
    with_harm: bool = True
    hubert_dim: int = 1024
    hifi_dim: int = 512
    segment_size: int = 7040
    num_mels: int = 80
    num_freq: int = 1025
    n_fft: int = 1024
    hop_size: int = 320
    win_size: int = 1024
    sampling_rate: int = 16000
    fmin: int = 0
    fmax: int = 8000
    fmax_for_loss: int | None = None
    num_workers: int = 12
    dist_config: dict[str, Any] = field(default_factory=_default_dist_config)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(
                f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                f"{self.upsample_kernel_sizes} must have the same length"
            )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError(
                f"resblock_kernel_sizes {self.resblock_kernel_sizes} and resblock_dilation_sizes "
                f"{self.resblock_dilation_sizes} must have the same length"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HiFiGANConfig":
        """Build from a config dict; unknown keys go to ``extra`` (nothing is rejected)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in values.items() if key in known}
        extra = {key: value for key, value in values.items() if key not in known}
        if extra:
            logger.debug("HiFiGANConfig: keeping unused keys %s", sorted(extra))
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, path: str | Path) -> "HiFiGANConfig":
        """Read an official-format JSON config (e.g. ``config_v1_wavlm.json``)."""
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    def to_dict(self) -> dict[str, Any]:
        """Flat dict in the official JSON layout (``extra`` keys merged back in)."""
        values = dataclasses.asdict(self)
        extra = values.pop("extra")
        values.update(extra)
        return values

    def to_json(self, path: str | Path) -> None:
        """Write the official JSON layout to ``path``."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2)
            file.write("\n")
