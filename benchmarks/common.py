"""What the benchmarks share: full-size checkpoint files with random weights, synthetic singing,
and memory sampling.

Speed and memory do not depend on the weights' values, so the benchmarks use WavLM-Large and the
harmonic HiFi-GAN with random weights, saved once in the official file formats (so loading goes
through the real code path: memory-mapped, strictly checked) under ``--cache`` (default
``~/.cache/knnsvc-bench``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import soundfile as sf
import torch

from hifigan.generator import VocoderKind, build_generator
from knnsvc.config import SAMPLE_RATE
from knnsvc.synthetic import phrases
from wavlm import WavLM, WavLMConfig
from wavlm.config import WAVLM_LARGE_CFG

DEFAULT_CACHE = Path(os.environ.get("KNNSVC_BENCH_CACHE", Path.home() / ".cache" / "knnsvc-bench"))


def full_size_checkpoints(cache: Path = DEFAULT_CACHE) -> tuple[Path, Path]:
    """(WavLM-Large.pt, harmonic vocoder g_*.pt) with random weights in the official formats."""
    cache.mkdir(parents=True, exist_ok=True)
    wavlm_file, vocoder_file = cache / "WavLM-Large-random.pt", cache / "g_harmonic-random.pt"
    if not wavlm_file.is_file():
        torch.manual_seed(0)
        model = WavLM(WavLMConfig.from_dict(WAVLM_LARGE_CFG))
        torch.save({"cfg": dict(WAVLM_LARGE_CFG), "model": model.state_dict()}, wavlm_file)
    if not vocoder_file.is_file():
        torch.manual_seed(0)
        torch.save({"generator": build_generator(VocoderKind.HARMONIC).state_dict()}, vocoder_file)
    return wavlm_file, vocoder_file




def singing_file(cache: Path, name: str, seconds: float, seed: int, low_hz: float, high_hz: float) -> Path:
    """A WAV of `knnsvc.synthetic.phrases`, written once into the cache."""
    path = cache / f"{name}_{seconds:g}s.wav"
    if not path.is_file():
        sf.write(path, phrases(seconds, seed, low_hz, high_hz), SAMPLE_RATE, subtype="PCM_16")
    return path


def rss_gb() -> float:
    """Current resident memory of this process (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


class MemorySampler:
    """Peak resident memory per stage, sampled every 20 ms on a thread (stage set by `stage`)."""

    def __init__(self) -> None:
        self.stage = "start"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_gb()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), value)
            time.sleep(0.02)

    @property
    def peak(self) -> float:
        return max(self.peaks.values(), default=rss_gb())


TINY_CHECKPOINTS = Path(__file__).resolve().parents[1] / "tests" / "golden"
"""The golden tiny checkpoints (tests/golden): WavLM of width 32 and the harmonic vocoder of that width."""


def tiny_checkpoints() -> tuple[Path, Path, Path]:
    """(wavlm_tiny.pt, vocoder_harmonic_tiny.pt, vocoder_tiny_config.json) from tests/golden.

    Random tiny models in the official formats: the per-frame arrays of a conversion (waveform,
    F0, energies, match tables) keep their full size while the models and their activations are
    small, so what grows with the length of the audio stands out.
    """
    return (TINY_CHECKPOINTS / "wavlm_tiny.pt", TINY_CHECKPOINTS / "vocoder_harmonic_tiny.pt",
            TINY_CHECKPOINTS / "vocoder_tiny_config.json")


def _status_gb(field: str) -> float:
    """A ``kB`` line of /proc/self/status (VmRSS, VmHWM, ...) in GB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1024**3
    raise KeyError(field)


def peak_rss_gb() -> float:
    """The kernel's exact peak resident memory of this process since start or `reset_peak_rss` (VmHWM)."""
    return _status_gb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak resident memory (VmHWM) to the current RSS (Linux >= 4.0).

    Returns:
        False where the kernel refuses (the peak then keeps counting from the last reset).
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


class StagePeaks:
    """Exact peak resident memory per stage: the kernel's high-water mark (VmHWM), reset at each stage.

    Sampling every 20 ms (`MemorySampler`) misses peaks shorter than that (a whole-recording
    float64 copy lives for a fraction of a second); the kernel's high-water mark does not. Call
    ``enter(stage)`` as stages begin; a stage entered again keeps its largest peak.

    Attributes:
        peaks: stage -> peak RSS in GB while it ran.
        at_end: stage -> RSS in GB when it ended (what it left behind).
        exact: whether the kernel let the peak be reset (else a stage's peak includes earlier ones).
    """

    def __init__(self) -> None:
        self.stage: str | None = None
        self.peaks: dict[str, float] = {}
        self.at_end: dict[str, float] = {}
        self.exact = reset_peak_rss()

    def enter(self, stage: str) -> None:
        if stage == self.stage:
            return
        self._close()
        self.stage = stage
        reset_peak_rss()

    def finish(self) -> None:
        self._close()
        self.stage = None

    def _close(self) -> None:
        if self.stage is not None:
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), peak_rss_gb())
            self.at_end[self.stage] = rss_gb()


def descendants_rss_gb() -> float:
    """Resident memory of this process's descendants (worker processes, e.g. F0 workers), in GB."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total_pages = 0
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total_pages += int(handle.read().split()[1])
        except OSError:
            continue
    return total_pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


class TreeMemorySampler(MemorySampler):
    """`MemorySampler` that also records the peak of this process plus its worker processes
    (`tree_peaks`, per stage): work moved into a child process leaves the parent's RSS."""

    def __init__(self) -> None:
        super().__init__()
        self.tree_peaks: dict[str, float] = {}

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_gb()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), value)
            tree = value + descendants_rss_gb()
            self.tree_peaks[self.stage] = max(self.tree_peaks.get(self.stage, 0.0), tree)
            time.sleep(0.02)
