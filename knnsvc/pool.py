"""ReferencePool: a target singer's frames (WavLM features, F0, harmonic amplitudes) and files.

A pool is built once per singer and reused across conversions; `save`/`load` use a pickle-free
`torch.load(weights_only=True)` format that checks itself (format name and version, dtypes,
shapes, and a checksum of the tensor bytes), so a truncated, foreign or bit-flipped file is
refused with one line instead of being used. A pool records the fingerprint of the encoder that
made its features (`encoder_id`), so a converter can refuse a pool of another encoder; files of
an earlier format version (which did not record it) are refused, to be rebuilt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from knnsvc.config import HOP_LENGTH, N_HARMONICS, SAMPLE_RATE
from knnsvc.files import atomic_path
from knnsvc.runtime import first_line

POOL_FORMAT = "knnsvc-reference-pool"
POOL_FORMAT_VERSION = 3
"""3: the encoder fingerprint is stored (2 did not store it)."""


class PoolFileError(ValueError):
    """A pool file that cannot be used (unreadable, foreign, corrupt); the message is one line."""


@dataclass
class ReferencePool:
    """Frame-aligned reference tables plus the file each frame came from.

    Attributes:
        feats: (N, D) float32 WavLM layer-6 features.
        f0_hz: (N,) float32 Harvest F0, 0 = unvoiced.
        amps: (N, H) float32 harmonic amplitudes read off each frame's own spectrum.
        starts: first row of each file, ascending, starts[0] == 0.
        names: one name per file (its path as given when the pool was built).
        match_feats: (N, D) float32 features of the matching layers, when the pool was built for
            `MatchConfig.match_layers` (None: matching uses `feats`).
        encoder_id: fingerprint of the encoder that made the features (`KnnSvc.encoder_id`);
            None: unknown (a pool assembled by hand), not checked.
    """

    feats: torch.Tensor
    f0_hz: torch.Tensor
    amps: torch.Tensor
    starts: list[int] = field(default_factory=lambda: [0])
    names: list[str] = field(default_factory=lambda: [""])
    match_feats: torch.Tensor | None = None
    encoder_id: str | None = None

    def __post_init__(self) -> None:
        n = self.feats.shape[0]
        if self.f0_hz.shape[0] != n or self.amps.shape[0] != n:
            raise ValueError(
                f"pool tables disagree in length: feats {n}, f0 {self.f0_hz.shape[0]}, "
                f"amps {self.amps.shape[0]}"
            )
        if len(self.starts) != len(self.names):
            raise ValueError("pool needs one start row per file name")
        if self.match_feats is not None and self.match_feats.shape[0] != n:
            raise ValueError(f"pool matching features have {self.match_feats.shape[0]} rows, expected {n}")

    @property
    def num_frames(self) -> int:
        return self.feats.shape[0]

    @property
    def seconds(self) -> float:
        return self.num_frames * HOP_LENGTH / SAMPLE_RATE

    @classmethod
    def concat(cls, pools: Sequence[ReferencePool]) -> ReferencePool:
        """Join pools in order (the reference concatenates its files' frames the same way).

        The result records the pools' encoder fingerprint when they all record the same one,
        None when some record none.

        Raises:
            ValueError: no pools, or pools built by different encoders.
        """
        return cls.join(list(pools))

    @classmethod
    def join(cls, pools: list[ReferencePool]) -> ReferencePool:
        """Like `concat`, but empties `pools`, releasing each pool as it is copied: joining then
        needs the memory of the result plus one input pool, not twice the result."""
        if not pools:
            raise ValueError("no reference recordings to build a pool from")
        encoder_ids = {p.encoder_id for p in pools}
        known = sorted(i for i in encoder_ids if i is not None)
        if len(known) > 1:
            raise ValueError(f"cannot join reference pools built by different encoders ({', '.join(known)})")
        encoder_id = known[0] if len(encoder_ids) == 1 and known else None
        if len(pools) == 1:
            return pools.pop()
        n_frames = sum(p.num_frames for p in pools)
        first = pools[0]
        feats = torch.empty(n_frames, first.feats.shape[1], dtype=first.feats.dtype)
        f0_hz = torch.empty(n_frames, dtype=first.f0_hz.dtype)
        amps = torch.empty(n_frames, first.amps.shape[1], dtype=first.amps.dtype)
        with_matching = all(p.match_feats is not None for p in pools)
        match_feats = torch.empty_like(feats) if with_matching else None
        starts: list[int] = []
        names: list[str] = []
        offset = 0
        while pools:
            pool = pools.pop(0)
            rows = slice(offset, offset + pool.num_frames)
            feats[rows], f0_hz[rows], amps[rows] = pool.feats, pool.f0_hz, pool.amps
            if match_feats is not None and pool.match_feats is not None:
                match_feats[rows] = pool.match_feats
            starts.extend(offset + s for s in pool.starts)
            names.extend(pool.names)
            offset += pool.num_frames
        return cls(feats=feats, f0_hz=f0_hz, amps=amps, starts=starts, names=names, match_feats=match_feats,
                   encoder_id=encoder_id)

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
            match_feats=None if self.match_feats is None else self.match_feats[:n],
            encoder_id=self.encoder_id,
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
        tensors = {
            "feats": self.feats.float().cpu().contiguous(),
            "f0_hz": self.f0_hz.float().cpu().contiguous(),
            "amps": self.amps.float().cpu().contiguous(),
            "starts": torch.tensor(self.starts, dtype=torch.long),
        }
        if self.match_feats is not None:
            tensors["match_feats"] = self.match_feats.float().cpu().contiguous()
        payload = {
            "format": POOL_FORMAT,
            "version": POOL_FORMAT_VERSION,
            **tensors,
            "names": list(self.names),
            "encoder_id": self.encoder_id,
            "settings": dict(settings or {}),
            "checksum": _checksum(tensors, self.names, self.encoder_id),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, dim: int | None = None) -> ReferencePool:
        """Read a pool written by `save` (no code can run: weights_only loading).

        Args:
            dim: the feature dimension the caller expects (None: any).

        Raises:
            PoolFileError: the file is unreadable, not a pool of this format version (an earlier
                version is refused, naming it: rebuild the pool), or its contents fail the shape,
                dtype or checksum checks.
        """
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many unrelated types for truncated/foreign files
            raise PoolFileError(f"{path}: not a readable pool file ({first_line(err)})") from None
        if not isinstance(payload, dict) or payload.get("format") != POOL_FORMAT:
            raise PoolFileError(f"{path}: not a reference pool file")
        if payload.get("version") != POOL_FORMAT_VERSION:
            raise PoolFileError(
                f"{path}: pool format version {payload.get('version')}, expected {POOL_FORMAT_VERSION} "
                "(rebuild the pool)"
            )
        tensors = {key: payload[key] for key in ("feats", "f0_hz", "amps", "starts", "match_feats") if key in payload}
        names = payload.get("names")
        problem = _check_tables(tensors, names, dim)
        if problem is not None:
            raise PoolFileError(f"{path}: {problem}")
        assert isinstance(names, list)  # _check_tables: one name per file
        encoder_id = payload.get("encoder_id")
        if encoder_id is not None and not isinstance(encoder_id, str):
            raise PoolFileError(f"{path}: the encoder fingerprint is not text")
        if payload.get("checksum") != _checksum(tensors, names, encoder_id):
            raise PoolFileError(f"{path}: checksum mismatch (the file is corrupt)")
        return cls(
            feats=tensors["feats"],
            f0_hz=tensors["f0_hz"],
            amps=tensors["amps"],
            starts=tensors["starts"].tolist(),
            names=list(names),
            match_feats=tensors.get("match_feats"),
            encoder_id=encoder_id,
        )


def _check_tables(tensors: dict, names: object, dim: int | None) -> str | None:
    """What is wrong with a loaded pool's tables, or None."""
    feats, f0_hz, amps, starts = (tensors.get(key) for key in ("feats", "f0_hz", "amps", "starts"))
    if not (isinstance(feats, torch.Tensor) and isinstance(f0_hz, torch.Tensor)
            and isinstance(amps, torch.Tensor) and isinstance(starts, torch.Tensor)):
        return "missing tables"
    if feats.dtype != torch.float32 or f0_hz.dtype != torch.float32 or amps.dtype != torch.float32:
        return "tables are not float32"
    if feats.dim() != 2 or f0_hz.shape != feats.shape[:1] or amps.dim() != 2 or amps.shape[0] != feats.shape[0]:
        return f"tables of inconsistent shapes {tuple(feats.shape)}, {tuple(f0_hz.shape)}, {tuple(amps.shape)}"
    if dim is not None and feats.shape[1] != dim:
        return f"features are {feats.shape[1]}-dimensional, this encoder makes {dim}"
    match_feats = tensors.get("match_feats")
    if match_feats is not None and (not isinstance(match_feats, torch.Tensor) or match_feats.dtype != torch.float32
                                    or match_feats.shape != feats.shape):
        return "matching features do not fit the features table"
    if amps.shape[1] != N_HARMONICS:
        return f"{amps.shape[1]} harmonic amplitudes per frame, expected {N_HARMONICS}"
    if not isinstance(names, list) or starts.dim() != 1 or len(names) != starts.numel() or starts.numel() == 0:
        return "file list does not match the file boundaries"
    if int(starts[0]) != 0 or bool((starts[1:] <= starts[:-1]).any()) or int(starts[-1]) >= max(feats.shape[0], 1):
        return "file boundaries out of order"
    return None


def _checksum(tensors: dict, names: Sequence[str], encoder_id: str | None) -> str:
    """blake2b of the tables' bytes, shapes and dtypes, the file names and the encoder fingerprint."""
    digest = hashlib.blake2b(digest_size=16)
    for key in ("feats", "f0_hz", "amps", "starts", "match_feats"):
        if key not in tensors:
            continue
        tensor = tensors[key]
        digest.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    digest.update("|".join(names).encode())
    digest.update(f"|encoder:{encoder_id}".encode())
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
