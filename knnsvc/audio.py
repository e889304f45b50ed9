"""The only audio I/O of the project: load anything as mono 16 kHz, save atomically, loudness."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from knnsvc.config import SAMPLE_RATE
from knnsvc.files import atomic_path

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
"""File types recognised when a folder is scanned for recordings (case-insensitive)."""

_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}

SILENCE_PEAK = 1e-4
"""A recording whose absolute peak stays below this (-80 dBFS) counts as silent."""


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read a wav/flac/mp3/ogg file as a mono waveform at `sample_rate`.

    Channels are averaged (as the reference does); other rates are resampled with soxr (VHQ).

    Returns:
        wav: (L,) float32 in [-1, 1].

    Raises:
        AudioError: the file is missing, not audio, or has no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(path, f"not a readable audio file ({_first_line(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "contains no samples")
    mono = data.mean(axis=1)  # (L, C) -> (L,)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="VHQ").astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(mono))


def is_silent(wav: torch.Tensor) -> bool:
    """True if the waveform never rises above -80 dBFS."""
    return wav.numel() == 0 or float(wav.abs().max()) < SILENCE_PEAK


def peak_limit(wav: torch.Tensor) -> torch.Tensor:
    """Divide by the peak if it exceeds 1 (the reference's only output level control)."""
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    return wav / peak if peak > 1.0 else wav


def loudness_normalise(wav: torch.Tensor, lufs: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Scale to an integrated loudness of `lufs` (ITU-R BS.1770, as kNN-VC's output stage).

    Audio too short or too quiet to measure is returned unchanged.
    """
    import pyloudnorm

    samples = wav.detach().cpu().double().numpy()
    meter = pyloudnorm.Meter(sample_rate)
    try:
        measured = meter.integrated_loudness(samples)
    except ValueError:  # shorter than one 400 ms gating block
        log.warning("audio too short to measure loudness; left unchanged")
        return wav
    if not np.isfinite(measured):
        return wav
    gain = 10.0 ** ((lufs - measured) / 20.0)
    return wav * gain


def save_audio(
    path: str | Path, wav: torch.Tensor, sample_rate: int = SAMPLE_RATE, subtype: str | None = None
) -> Path:
    """Write `wav` (L,) atomically: a temporary file in the same folder, then a rename.

    The waveform is peak-limited first. WAV files default to 32-bit PCM as the reference writes
    them; FLAC to 24-bit; other formats to soundfile's default for the extension.
    """
    path = Path(path)
    samples = peak_limit(wav.detach().float().cpu().reshape(-1)).numpy()
    if subtype is None:
        subtype = {".wav": "PCM_32", ".flac": "PCM_24"}.get(path.suffix.lower())
    with atomic_path(path) as tmp:
        sf.write(str(tmp), samples, sample_rate, subtype=subtype, format=_FORMATS.get(path.suffix.lower()))
    return path


def find_audio(folder: str | Path) -> list[Path]:
    """All audio files under `folder`, recursively, in sorted order."""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
