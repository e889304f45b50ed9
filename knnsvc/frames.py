"""FrameStore: the (T, D) feature frames of a long recording, kept in memory or spilled to disk.

The source's WavLM features are needed twice (the harmonic pass of the matching runs after the
whole source's pitch is known, and the RVC-style blends read them again at vocoding time). A
20-minute source has 60 000 frames, 246 MB of float32 features: beyond `SPILL_BYTES` the blocks
go to an anonymous temporary file and are read back block by block, so memory stays bounded by
the block size. The temporary file has no name in any folder and disappears when the store is
closed or the process ends, however it ends.
"""

from __future__ import annotations

import tempfile
from typing import BinaryIO

import numpy as np
import torch

SPILL_BYTES = 64 << 20
"""Frames beyond this many bytes are kept in a temporary file instead of memory."""


class FrameStore:
    """Append-only (T, D) float32 frames; ``store[a:b]`` reads frames a..b-1 as a tensor.

    Args:
        dim: D, the feature dimension.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.num_frames = 0
        self._blocks: list[torch.Tensor] = []
        self._file: BinaryIO | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_frames, self.dim)

    @property
    def spilled(self) -> bool:
        """Whether the frames live in a temporary file."""
        return self._file is not None

    def __len__(self) -> int:
        return self.num_frames

    def append(self, frames: torch.Tensor) -> None:
        """Add (B, D) frames at the end."""
        if frames.dim() != 2 or frames.shape[1] != self.dim:
            raise ValueError(f"expected frames of shape (B, {self.dim}), got {tuple(frames.shape)}")
        frames = frames.detach().to("cpu", torch.float32).contiguous()
        if self._file is None and (self.num_frames + frames.shape[0]) * self.dim * 4 > SPILL_BYTES:
            self._file = tempfile.TemporaryFile()
            for block in self._blocks:
                self._file.write(block.numpy().tobytes())
            self._blocks = []
        if self._file is not None:
            self._file.seek(0, 2)
            self._file.write(frames.numpy().tobytes())
        else:
            self._blocks.append(frames)
        self.num_frames += frames.shape[0]

    def __getitem__(self, frames: slice) -> torch.Tensor:
        """Frames ``start:stop`` (step 1) as a (B, D) float32 tensor."""
        start, stop, step = frames.indices(self.num_frames)
        if step != 1:
            raise ValueError("FrameStore reads contiguous frames only")
        stop = max(start, stop)
        if self._file is None:
            if len(self._blocks) != 1:
                self._blocks = [torch.cat(self._blocks) if self._blocks else torch.zeros(0, self.dim)]
            return self._blocks[0][start:stop]
        row_bytes = self.dim * 4
        self._file.seek(start * row_bytes)
        data = self._file.read((stop - start) * row_bytes)
        return torch.from_numpy(np.frombuffer(data, dtype=np.float32).copy().reshape(stop - start, self.dim))

    def close(self) -> None:
        """Free the frames (and delete the temporary file)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._blocks = []
        self.num_frames = 0
