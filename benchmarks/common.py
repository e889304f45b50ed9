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

import numpy as np
import soundfile as sf
import torch

from hifigan.generator import VocoderKind, build_generator
from knnsvc.config import SAMPLE_RATE
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


def synthetic_singing(seconds: float, seed: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Notes of 0.25-0.8 s with vibrato and harmonic spectra, noisy breaths between phrases.

    Generated in one-minute pieces (memory stays small for an hour of audio).

    Returns:
        (L,) float32 at 16 kHz.
    """
    rng = np.random.default_rng(seed)
    pieces = []
    remaining = round(seconds * SAMPLE_RATE)
    phase_offset = 0.0
    while remaining > 0:
        n = min(remaining, 60 * SAMPLE_RATE)
        f0 = np.zeros(n)
        position = 0
        while position < n:
            length = int(rng.uniform(0.25, 0.8) * SAMPLE_RATE)
            if rng.random() < 0.15:
                position += int(0.2 * SAMPLE_RATE)  # a breath: unvoiced
                continue
            f0[position : position + length] = np.exp(rng.uniform(np.log(low_hz), np.log(high_hz)))
            position += length
        t = np.arange(n) / SAMPLE_RATE
        f0 *= 1 + 0.015 * np.sin(2 * np.pi * 5.5 * t)
        phase = phase_offset + 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        phase_offset = float(phase[-1])
        voiced = f0 > 0
        wav = np.zeros(n)
        for k in range(1, 30):
            audible = voiced & (k * f0 < SAMPLE_RATE / 2)
            wav += audible * (0.25 / k**1.2) * np.sin(k * phase)
        wav += 0.01 * rng.standard_normal(n) * (1 + 3 * ~voiced)
        pieces.append((0.25 * wav).astype(np.float32))
        remaining -= n
    return np.concatenate(pieces)


def singing_file(cache: Path, name: str, seconds: float, seed: int, low_hz: float, high_hz: float) -> Path:
    """A WAV of `synthetic_singing`, written once into the cache."""
    path = cache / f"{name}_{seconds:g}s.wav"
    if not path.is_file():
        sf.write(path, synthetic_singing(seconds, seed, low_hz, high_hz), SAMPLE_RATE, subtype="PCM_16")
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
