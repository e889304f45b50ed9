"""Run-time plumbing every layer shares: device choice, stage timing, one-line error messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``/None -> CUDA if available, else the CPU; a bare ``cuda`` means cuda:`local_rank`.

    Raises:
        ValueError: a CUDA device was asked for but CUDA is not available.
    """
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name} requested, but CUDA is not available on this machine (use cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def first_line(err: object) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class StageTimer:
    """Seconds per named stage, accumulated over calls.

    On a CUDA device the timer synchronises before reading the clock, so the work a stage queued
    on the GPU is charged to that stage and not to the next one that waits for it.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str, sync: bool = True) -> Iterator[None]:
        """Time the body as `stage`; ``sync=False`` for CPU-only work on another thread."""
        if sync:
            self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                self._sync()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def clear(self) -> None:
        self.seconds.clear()
