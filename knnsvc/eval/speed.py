"""Speed and memory: real-time factor, peak RSS and CUDA memory.

Stage seconds come from the converter itself (`KnnSvc.timings`, a `knnsvc.runtime.StageTimer`
that synchronises CUDA, so GPU work is charged to the stage that launched it).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

BYTES_PER_GB = 1024**3


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
