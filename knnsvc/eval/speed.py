"""Speed and memory: per-stage wall-clock seconds, real-time factor, peak RSS and CUDA memory.

Usage::

    timer = StageTimer(device)
    with timer.stage("analyse"):
        source = model.analyse(wav_16k)
    ...
    rtf = real_time_factor(timer.total(("analyse", "match", "vocode")), len(wav_16k) / 16000)

On CUDA every stage boundary synchronises the device so that asynchronous kernels are charged to
the stage that launched them.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

BYTES_PER_GB = 1024**3


class StageTimer:
    """Accumulates wall-clock seconds per named stage (a stage may run several times)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.seconds: dict[str, float] = {}
        self._cuda = torch.device(device).type == "cuda"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def total(self, names: Iterable[str] | None = None) -> float:
        """Sum of the given stages' seconds (all stages when `names` is None)."""
        if names is None:
            return sum(self.seconds.values())
        return sum(self.seconds.get(name, 0.0) for name in names)

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()


def real_time_factor(processing_seconds: float, audio_seconds: float) -> float | None:
    """Processing time per second of audio (< 1 = faster than real time); None for empty audio."""
    if audio_seconds <= 0:
        return None
    return processing_seconds / audio_seconds


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_gb() -> float:
    """Peak resident memory of this process in GiB, since start or the last `reset_peak_rss`."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / BYTES_PER_GB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bytes_per_unit = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return peak * bytes_per_unit / BYTES_PER_GB


def reset_peak_rss() -> bool:
    """Restart the peak-RSS measurement (Linux); False where the platform cannot.

    Without a reset the peak covers the whole process, e.g. every job of a Hydra multirun.
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_cuda_gb(device: str | torch.device = "cuda") -> float | None:
    """Peak CUDA memory allocated by PyTorch on `device` in GiB; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device) / BYTES_PER_GB
