"""Run-time plumbing every layer shares: device choice, stage timing, one-line error messages."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
"""The device names every command and API accepts."""

_DEVICE_NAME = re.compile(r"(cpu|cuda)(?::(\d+))?\Z")

NETWORK_PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16,
                                                     "float16": torch.float16}
"""The precisions the networks (WavLM and the vocoder) can run in: float32 (the reference), or
under ``torch.autocast`` in bfloat16 / float16 (matrix products and convolutions in the reduced
precision; the DSP around them, the matching and the excitation phase stay in full precision)."""


def check_network_precision(precision: str) -> str:
    """`precision` if it is one of `NETWORK_PRECISIONS`.

    Raises:
        ValueError: one line naming the accepted values.
    """
    if precision not in NETWORK_PRECISIONS:
        raise ValueError(f"network precision must be one of {', '.join(NETWORK_PRECISIONS)}, got {precision!r}")
    return precision


def usable_cores() -> int:
    """The cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def analysis_split(cores: int) -> tuple[int, int]:
    """(network threads, F0 blocks at once) while WavLM on the CPU and a CPU-bound F0 (Harvest)
    analyse one recording side by side: half the cores each (the network the odd one), so the two
    never ask for more cores than there are. Harvest and WavLM-to-layer-6 cost about the same CPU
    time per second of audio; oversubscribing (2 torch threads + 2 Harvest workers on 2 cores)
    made the analysis of a 60 s recording 15-30 % slower here.
    """
    f0_blocks = max(1, cores // 2)
    return max(1, cores - f0_blocks), f0_blocks


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set to `threads` inside the block, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def network_autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The context a network call runs in: none for float32, ``torch.autocast`` otherwise."""
    dtype = NETWORK_PRECISIONS[check_network_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``/None -> CUDA if available, else the CPU; a bare ``cuda`` means cuda:`local_rank`.

    Only the CPU and CUDA devices are supported (``cpu``, ``cuda``, ``cuda:N``; "cpu:0" too).

    Raises:
        ValueError: one line: any other name (mps, meta, xpu, gpu, ...), a CUDA device asked for
            where CUDA is not available, or a CUDA index this machine does not have.
    """
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    text = str(name).strip()
    match = _DEVICE_NAME.match(text)
    if match is None:
        raise ValueError(f"unsupported device {text!r} (use {DEVICE_NAMES})")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {text} requested, but CUDA is not available on this machine (use cpu)")
    number = local_rank if index is None else int(index)
    if number >= torch.cuda.device_count():
        raise ValueError(f"device {text} requested, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", number)


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
