"""HiFi-GAN architecture configuration, read from and written to the official JSON layout.

An official ``config_v1_wavlm.json`` mixes the generator architecture with training, mel-loss and
launcher settings (``batch_size``, ``learning_rate``, ``num_mels``, ``dist_config``, ...). Only the
architecture is a field here; every other key is kept verbatim in ``extra``, so that ``to_dict()``
and ``to_json()`` reproduce the file. Training settings live in ``training/trainer.py``.
"""

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16_000
"""Output rate of a config without ``sampling_rate`` (the released vocoders')."""

OFFICIAL_KEY_ORDER = (
    "resblock num_gpus batch_size learning_rate adam_b1 adam_b2 lr_decay seed special_comment "
    "upsample_rates dspgan_upsample_rates upsample_kernel_sizes dspgan_upsample_kernel_sizes "
    "upsample_initial_channel resblock_kernel_sizes resblock_dilation_sizes n_harmonic with_amp_ratio "
    "with_harm hubert_dim hubert_dim_ hubert_dim__ hubert_dim_old hifi_dim segment_size num_mels "
    "num_freq n_fft hop_size win_size sampling_rate fmin fmax fmax_for_loss num_workers dist_config"
).split()
"""Key order of the official kNN-SVC ``config_v1_wavlm.json``; ``to_dict`` writes keys in this order."""


@dataclass
class HiFiGANConfig:
    """Generator architecture of the kNN-SVC / kNN-VC HiFi-GAN (spec §9.1).

    Defaults are the official kNN-SVC ``config_v1_wavlm.json``. ``hubert_dim`` is the input
    feature dim D, ``hifi_dim`` the output of ``lin_pre``, ``n_harmonic`` the width of the
    excitation branch (not the number of harmonics); ``with_harm`` / ``with_amp_ratio`` are the
    official architecture flags. ``extra`` holds every other key of the file it came from
    (training and mel settings, ``dspgan_*``, ``hubert_dim_*``, ``special_comment``, ...).
    """

    resblock: str = "1"
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
        shadowed = sorted(set(self.extra) & _architecture_keys())
        if shadowed:
            raise ValueError(f"extra must not hold architecture keys, got {shadowed}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HiFiGANConfig":
        """Build from a config dict; non-architecture keys go to ``extra`` (nothing is rejected).

        Raises:
            TypeError: `values` is not a dict (e.g. a JSON list or number).
        """
        if not isinstance(values, dict):
            raise TypeError(f"expected a JSON object of HiFi-GAN settings, got a JSON {_json_type(values)}")
        known = _architecture_keys()
        kwargs = {key: value for key, value in values.items() if key in known}
        extra = {key: value for key, value in values.items() if key not in known}
        if extra:
            logger.debug("HiFiGANConfig: keeping non-architecture keys %s", sorted(extra))
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "HiFiGANConfig":
        """Read an official-format JSON config (e.g. ``config_v1_wavlm.json``).

        Raises:
            OSError: the file cannot be read.
            ValueError: not JSON (`json.JSONDecodeError`, or not UTF-8).
            TypeError: valid JSON that is not an object, or settings of the wrong type.
        """
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    def architecture_dict(self) -> dict[str, Any]:
        """The architecture fields only (no ``extra``): what decides the generator's shapes."""
        values = dataclasses.asdict(self)
        values.pop("extra")
        return values

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz: the file's ``sampling_rate`` (16000, the released rate, when absent)."""
        return int(self.extra.get("sampling_rate", DEFAULT_SAMPLE_RATE))

    @property
    def hop_length(self) -> int:
        """Output samples per feature frame: the product of ``upsample_rates`` (320 for the release)."""
        return math.prod(self.upsample_rates)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict in the official JSON layout: architecture and ``extra``, in the official key order."""
        values = {**self.architecture_dict(), **self.extra}
        rank = {key: index for index, key in enumerate(OFFICIAL_KEY_ORDER)}
        ordered = sorted(values, key=lambda key: rank.get(key, len(rank)))  # stable: others keep their order
        return {key: values[key] for key in ordered}

    def to_json(self, path: str | Path) -> None:
        """Write the official JSON layout to ``path``."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2)
            file.write("\n")


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type (array, number, string, ...)."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null" if value is None else type(value).__name__


def _architecture_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(HiFiGANConfig)} - {"extra"}
