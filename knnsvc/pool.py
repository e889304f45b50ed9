"""ReferencePool: a target singer's frames (WavLM features, F0, harmonic amplitudes) and files.

A pool is built once per singer and reused across conversions; `save`/`load` use a pickle-free
`torch.load(weights_only=True)` format that checks itself (format name and version, dtypes,
shapes, and a checksum of the tensor bytes), so a truncated, foreign or bit-flipped file is
refused with one line instead of being used. A pool records the fingerprint of the encoder that
made its features (`encoder_id`), so a converter can refuse a pool of another encoder, and the
rate each file's harmonic amplitudes were measured at (`amp_rates`: 16 kHz, or up to the vocoder's
output rate for vocoders above 16 kHz); files of an earlier format version (which did not record
these) are refused, to be rebuilt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.files import atomic_path
from knnsvc.runtime import first_line

POOL_FORMAT = "knnsvc-reference-pool"
POOL_FORMAT_VERSION = 4
"""4: the amplitude measuring rate of each file is stored and H may differ from 49 (3 did not store
it); 3: the encoder fingerprint is stored (2 did not store it)."""


class PoolFileError(ValueError):
    """A pool file that cannot be used (unreadable, foreign, corrupt); the message is one line."""


@dataclass
class ReferencePool:
    """Frame-aligned reference tables plus the file each frame came from.

    Attributes:
        feats: (N, D) float32 WavLM layer-6 features.
        f0_hz: (N,) float32 Harvest F0, 0 = unvoiced.
        amps: (N, H) float32 harmonic amplitudes read off each frame's own spectrum (H = 49 for the
            released 16 kHz vocoders, `knnsvc.harmonics.harmonics_for_rate` of the output rate).
        starts: first row of each file, ascending, starts[0] == 0.
        names: one name per file (its path as given when the pool was built).
        match_feats: (N, D) float32 features of the matching layers, when the pool was built for
            `MatchConfig.match_layers` (None: matching uses `feats`).
        encoder_id: fingerprint of the encoder that made the features (`KnnSvc.encoder_id`);
            None: unknown (a pool assembled by hand), not checked.
        amp_rates: per file, the sample rate its amplitudes were measured at (default: 16 kHz for
            every file); harmonics at or above half of it are 0 in `amps`.
    """

    feats: torch.Tensor
    f0_hz: torch.Tensor
    amps: torch.Tensor
    starts: list[int] = field(default_factory=lambda: [0])
    names: list[str] = field(default_factory=lambda: [""])
    match_feats: torch.Tensor | None = None
    encoder_id: str | None = None
    amp_rates: list[int] = field(default_factory=list)

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
        if self.amps.dim() != 2 or self.amps.shape[1] < 1:
            raise ValueError(f"pool amplitudes must be (N, H) with H >= 1, got shape {tuple(self.amps.shape)}")
        if not self.amp_rates:
            self.amp_rates = [SAMPLE_RATE] * len(self.names)
        if len(self.amp_rates) != len(self.names) or not all(_positive_int(r) for r in self.amp_rates):
            raise ValueError(f"pool needs one positive amplitude rate per file, got {self.amp_rates}")

    @property
    def num_frames(self) -> int:
        return self.feats.shape[0]

    @property
    def seconds(self) -> float:
        return self.num_frames * HOP_LENGTH / SAMPLE_RATE

    @property
    def n_harmonics(self) -> int:
        """H, the amplitude columns (49 for the released vocoders)."""
        return self.amps.shape[1]

    @property
    def amp_rate(self) -> int:
        """The lowest rate any file's amplitudes were measured at: every frame's amplitudes are
        measured up to half of it (8 kHz when a file was measured at 16 kHz)."""
        return min(self.amp_rates)

    @classmethod
    def concat(cls, pools: Sequence[ReferencePool]) -> ReferencePool:
        """Join pools in order (the reference concatenates its files' frames the same way).

        The result records the pools' encoder fingerprint when they all record the same one,
        None when some record none, and each file's amplitude rate.

        Raises:
            ValueError: no pools, pools built by different encoders, or pools of different numbers
                of harmonic columns (built for vocoders of different output rates).
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
        widths = sorted({p.n_harmonics for p in pools})
        if len(widths) > 1:
            raise ValueError(
                f"cannot join reference pools of {' and '.join(map(str, widths))} harmonic columns (built for "
                "vocoders of different output rates); build every pool with the same converter"
            )
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
        amp_rates: list[int] = []
        offset = 0
        while pools:
            pool = pools.pop(0)
            rows = slice(offset, offset + pool.num_frames)
            feats[rows], f0_hz[rows], amps[rows] = pool.feats, pool.f0_hz, pool.amps
            if match_feats is not None and pool.match_feats is not None:
                match_feats[rows] = pool.match_feats
            starts.extend(offset + s for s in pool.starts)
            names.extend(pool.names)
            amp_rates.extend(pool.amp_rates)
            offset += pool.num_frames
        return cls(feats=feats, f0_hz=f0_hz, amps=amps, starts=starts, names=names, match_feats=match_feats,
                   encoder_id=encoder_id, amp_rates=amp_rates)

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
            amp_rates=[self.amp_rates[i] for i in keep],
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
            "amp_rates": [int(r) for r in self.amp_rates],
            "settings": dict(settings or {}),
            "checksum": _checksum(tensors, self.names, self.encoder_id, self.amp_rates),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, dim: int | None = None, n_harmonics: int | None = None) -> ReferencePool:
        """Read a pool written by `save` (no code can run: weights_only loading).

        Args:
            dim: the feature dimension the caller expects (None: any).
            n_harmonics: the harmonic columns the caller expects (`KnnSvc.n_harmonics`; None: any).

        Raises:
            PoolFileError: the file is unreadable, not a pool of this format version (an earlier
                version is refused, naming it: rebuild the pool), or its contents fail the shape,
                dtype, amplitude-rate or checksum checks.
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
        problem = _check_tables(tensors, names, dim, n_harmonics)
        if problem is not None:
            raise PoolFileError(f"{path}: {problem}")
        assert isinstance(names, list)  # _check_tables: one name per file
        encoder_id = payload.get("encoder_id")
        if encoder_id is not None and not isinstance(encoder_id, str):
            raise PoolFileError(f"{path}: the encoder fingerprint is not text")
        amp_rates = payload.get("amp_rates")
        if (not isinstance(amp_rates, list) or len(amp_rates) != len(names)
                or not all(_positive_int(r) for r in amp_rates)):
            raise PoolFileError(f"{path}: the amplitude rates do not give one positive rate per file")
        if payload.get("checksum") != _checksum(tensors, names, encoder_id, amp_rates):
            raise PoolFileError(f"{path}: checksum mismatch (the file is corrupt)")
        return cls(
            feats=tensors["feats"],
            f0_hz=tensors["f0_hz"],
            amps=tensors["amps"],
            starts=tensors["starts"].tolist(),
            names=list(names),
            match_feats=tensors.get("match_feats"),
            encoder_id=encoder_id,
            amp_rates=[int(r) for r in amp_rates],
        )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_tables(tensors: dict, names: object, dim: int | None, n_harmonics: int | None) -> str | None:
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
    if amps.shape[1] < 1 or (n_harmonics is not None and amps.shape[1] != n_harmonics):
        return f"{amps.shape[1]} harmonic amplitudes per frame, expected {n_harmonics or 'at least 1'}"
    if not isinstance(names, list) or starts.dim() != 1 or len(names) != starts.numel() or starts.numel() == 0:
        return "file list does not match the file boundaries"
    if int(starts[0]) != 0 or bool((starts[1:] <= starts[:-1]).any()) or int(starts[-1]) >= max(feats.shape[0], 1):
        return "file boundaries out of order"
    return None


def _checksum(tensors: dict, names: Sequence[str], encoder_id: str | None, amp_rates: Sequence[int]) -> str:
    """blake2b of the tables' bytes, shapes and dtypes, the file names, the encoder fingerprint and
    the amplitude rates."""
    digest = hashlib.blake2b(digest_size=16)
    for key in ("feats", "f0_hz", "amps", "starts", "match_feats"):
        if key not in tensors:
            continue
        tensor = tensors[key]
        digest.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    digest.update("|".join(names).encode())
    digest.update(f"|encoder:{encoder_id}".encode())
    digest.update(f"|amp_rates:{','.join(str(r) for r in amp_rates)}".encode())
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
