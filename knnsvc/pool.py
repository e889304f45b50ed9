"""ReferencePool: a target singer's frames (WavLM features, F0, harmonic amplitudes) and files.

A pool is built once per singer and reused across conversions; `save`/`load` use a pickle-free
`torch.load(weights_only=True)` format, and `cache_key` addresses it by content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.files import atomic_path

POOL_FORMAT_VERSION = 1


@dataclass
class ReferencePool:
    """Frame-aligned reference tables plus the file each frame came from.

    Attributes:
        feats: (N, D) float32 WavLM layer-6 features.
        f0_hz: (N,) float32 Harvest F0, 0 = unvoiced.
        amps: (N, H) float32 harmonic amplitudes read off each frame's own spectrum.
        starts: first row of each file, ascending, starts[0] == 0.
        names: one name per file (its path as given when the pool was built).
    """

    feats: torch.Tensor
    f0_hz: torch.Tensor
    amps: torch.Tensor
    starts: list[int] = field(default_factory=lambda: [0])
    names: list[str] = field(default_factory=lambda: [""])

    def __post_init__(self) -> None:
        n = self.feats.shape[0]
        if self.f0_hz.shape[0] != n or self.amps.shape[0] != n:
            raise ValueError(
                f"pool tables disagree in length: feats {n}, f0 {self.f0_hz.shape[0]}, "
                f"amps {self.amps.shape[0]}"
            )
        if len(self.starts) != len(self.names):
            raise ValueError("pool needs one start row per file name")

    @property
    def num_frames(self) -> int:
        return self.feats.shape[0]

    @property
    def seconds(self) -> float:
        return self.num_frames * HOP_LENGTH / SAMPLE_RATE

    @classmethod
    def concat(cls, pools: Sequence[ReferencePool]) -> ReferencePool:
        """Join pools in order (the reference concatenates its files' frames the same way)."""
        if not pools:
            raise ValueError("no reference recordings to build a pool from")
        starts, names, offset = [], [], 0
        for pool in pools:
            starts.extend(offset + s for s in pool.starts)
            names.extend(pool.names)
            offset += pool.num_frames
        return cls(
            feats=torch.cat([p.feats for p in pools]),
            f0_hz=torch.cat([p.f0_hz for p in pools]),
            amps=torch.cat([p.amps for p in pools]),
            starts=starts,
            names=names,
        )

    def head(self, seconds: float) -> ReferencePool:
        """The first `seconds` of the pool (frame-exact), for reference-duration studies."""
        n = min(self.num_frames, max(1, round(seconds * SAMPLE_RATE / HOP_LENGTH)))
        keep = [i for i, s in enumerate(self.starts) if s < n]
        return ReferencePool(
            feats=self.feats[:n],
            f0_hz=self.f0_hz[:n],
            amps=self.amps[:n],
            starts=[self.starts[i] for i in keep],
            names=[self.names[i] for i in keep],
        )

    def locate(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For pool rows, the file they belong to and their time in that file.

        Returns:
            file_index: int64 like `rows`; seconds: float32 like `rows`.
        """
        starts = torch.tensor(self.starts, dtype=torch.long)
        file_index = torch.searchsorted(starts, rows.long(), right=True) - 1
        seconds = (rows.long() - starts[file_index]).float() * HOP_LENGTH / SAMPLE_RATE
        return file_index, seconds

    def save(self, path: str | Path, settings: dict | None = None) -> Path:
        """Write the pool atomically; `settings` (plain values) are stored alongside."""
        path = Path(path)
        payload = {
            "version": POOL_FORMAT_VERSION,
            "feats": self.feats.float().cpu(),
            "f0_hz": self.f0_hz.float().cpu(),
            "amps": self.amps.float().cpu(),
            "starts": torch.tensor(self.starts, dtype=torch.long),
            "names": list(self.names),
            "settings": dict(settings or {}),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferencePool:
        """Read a pool written by `save` (no code can run: weights_only loading)."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("version") != POOL_FORMAT_VERSION:
            raise ValueError(f"{path}: not a reference pool of format version {POOL_FORMAT_VERSION}")
        return cls(
            feats=payload["feats"],
            f0_hz=payload["f0_hz"],
            amps=payload["amps"],
            starts=payload["starts"].tolist(),
            names=list(payload["names"]),
        )


def cache_key(audio_files: Iterable[str | Path], encoder_id: str, settings: dict) -> str:
    """Content address of a pool: the audio bytes, the encoder weights and the settings.

    File names and locations do not enter the key, so a moved or renamed recording still hits.
    """
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"pool-v{POOL_FORMAT_VERSION}|{encoder_id}|{sorted(settings.items())}".encode())
    for path in audio_files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"|")
    return digest.hexdigest()


def module_fingerprint(module: torch.nn.Module, sample: int = 4096) -> str:
    """A cheap identity of a model's weights: names, shapes and a strided sample of each tensor."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()
