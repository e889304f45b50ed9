"""Synthetic singing for the tests, the benchmarks and the examples (one module, imported as
``knnsvc.synthetic``).

Harmonic-rich tones with vibrato, shaped by vowel formants, with note envelopes and a little breath
noise: enough for the pitch extractors to track and for WavLM frames to vary. Every generator takes an
explicit seed and returns float32 samples at 16 kHz (`sung_vowel` also at another `sample_rate`).

- `sung_vowel`: one sustained vowel at a known F0 (pitch-accuracy checks).
- `sung_notes`: random notes of random vowels around a MIDI note (a small corpus of "singers").
- `melody`: a given melody of (MIDI note, seconds, vowel) with glides (the README's examples).
- `phrases`: an hour-scale signal of notes and breaths made in one-minute pieces (benchmarks).
- `write_corpus`: a folder of several synthetic singers' `sung_notes` recordings (training data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from knnsvc.config import SAMPLE_RATE

SPEECH_VOWELS_HZ = {  # F1, F2, F3 of a few vowels (adult male, scaled per singer)
    "a": (730, 1090, 2440),
    "i": (270, 2290, 3010),
    "u": (300, 870, 2240),
    "e": (530, 1840, 2480),
    "o": (570, 840, 2410),
}
"""F1, F2, F3 of a few spoken vowels (adult male), scaled per singer by `sung_notes`."""

SUNG_VOWELS_HZ = {  # formant frequencies (Hz) of a few sung vowels
    "a": (800.0, 1150.0, 2900.0),
    "e": (400.0, 1700.0, 2600.0),
    "o": (450.0, 800.0, 2830.0),
    "i": (300.0, 2200.0, 3000.0),
}
"""Formant frequencies of a few sung vowels, used by `melody`."""


def sung_vowel(
    seconds: float,
    f0_hz: float,
    sample_rate: int = 16_000,
    vibrato_hz: float = 5.0,
    vibrato_cents: float = 30.0,
    formants_hz: tuple[float, ...] = (700.0, 1200.0, 2600.0),
    seed: int = 0,
) -> torch.Tensor:
    """A harmonic-rich sung vowel with vibrato (Harvest needs harmonics; pure sines fail).

    Returns:
        (L,) float32 waveform with peak 0.5.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = f0_hz * 2.0 ** (vibrato_cents / 1200.0 * np.sin(2 * np.pi * vibrato_hz * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wav = np.zeros_like(t)
    for k in range(1, int(7600 // (f0_hz * 1.1))):
        gain = sum(np.exp(-(((k * f0_hz) - f) / 150.0) ** 2) for f in formants_hz) + 0.05 / k
        wav += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    wav += 0.002 * rng.standard_normal(len(t))
    return torch.from_numpy((0.5 * wav / np.abs(wav).max()).astype(np.float32))


def sung_notes(seconds: float, base_midi: float, formant_scale: float, seed: int) -> np.ndarray:
    """(L,) float32 waveform at 16 kHz: notes of random vowels around ``base_midi``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    f0 = np.zeros(n)
    envelope = np.zeros(n)
    formants = np.zeros((n, 3))
    pos = int(0.05 * SAMPLE_RATE)
    while pos < n:
        note_len = int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)
        stop = min(n, pos + note_len)
        t = np.arange(stop - pos) / SAMPLE_RATE
        midi = base_midi + rng.integers(-5, 6)
        vibrato = 0.3 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t) * np.minimum(t / 0.15, 1.0)
        f0[pos:stop] = 440.0 * 2 ** ((midi + vibrato - 69) / 12)
        attack = np.minimum(t / 0.03, 1.0)
        release = np.minimum((t[::-1]) / 0.04, 1.0)
        envelope[pos:stop] = attack * release * rng.uniform(0.5, 0.9)
        formants[pos:stop] = np.array(SPEECH_VOWELS_HZ[rng.choice(list(SPEECH_VOWELS_HZ))]) * formant_scale
        pos = stop + int(rng.uniform(0.03, 0.12) * SAMPLE_RATE)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    wav = np.zeros(n)
    for k in range(1, 40):
        freq = k * f0
        gain = np.zeros(n)
        for j, bandwidth in enumerate((90.0, 110.0, 160.0)):
            gain += np.exp(-0.5 * ((freq - formants[:, j]) / bandwidth) ** 2) / (j + 1)
        gain = (0.15 + gain) / k**0.7 * (freq < 7500)
        wav += gain * np.sin(k * phase)
    wav *= envelope
    wav /= max(1e-9, np.abs(wav).max()) / 0.5
    wav += 0.003 * rng.standard_normal(n)
    return wav.astype(np.float32)


def melody(notes: list[tuple[float, float, str]], formant_scale: float, seed: int) -> np.ndarray:
    """A melody of (midi note, seconds, vowel) with vibrato, 40 ms glides and breath noise.

    Returns:
        (L,) float32 at 16 kHz, peak 0.7.
    """
    rng = np.random.default_rng(seed)
    f0, formants = [], []
    for midi, seconds, vowel in notes:
        n = round(seconds * SAMPLE_RATE)
        f0.append(np.full(n, 440.0 * 2.0 ** ((midi - 69) / 12)))
        formants.append(np.tile(np.array(SUNG_VOWELS_HZ[vowel]) * formant_scale, (n, 1)))
    f0_hz, formant_hz = np.concatenate(f0), np.concatenate(formants)
    glide = round(0.04 * SAMPLE_RATE)
    kernel = np.ones(glide) / glide
    f0_hz = np.convolve(np.pad(f0_hz, glide // 2, mode="edge"), kernel, mode="same")[glide // 2 : -(glide // 2)]
    t = np.arange(f0_hz.size) / SAMPLE_RATE
    f0_hz = f0_hz * 2.0 ** (25.0 / 1200.0 * np.sin(2 * np.pi * 5.5 * t))  # 25-cent vibrato
    phase = 2 * np.pi * np.cumsum(f0_hz) / SAMPLE_RATE
    wav = np.zeros_like(t)
    for k in range(1, 40):
        partial = k * f0_hz
        gain = sum(np.exp(-(((partial - formant_hz[:, i]) / 130.0) ** 2)) for i in range(3)) + 0.03 / k
        wav += np.where(partial < 7600, gain, 0.0) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    wav = wav * envelope + 0.004 * rng.standard_normal(t.size)
    return (0.7 * wav / np.abs(wav).max()).astype(np.float32)


def phrases(seconds: float, seed: int, low_hz: float, high_hz: float) -> np.ndarray:
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

def write_corpus(
    root: str | Path,
    n_speakers: int = 3,
    n_utterances: int = 4,
    seconds: float = 1.6,
    seed: int = 0,
    nested: bool = True,
) -> list[Path]:
    """Write ``<root>/singer<i>/[take<j>/]utt<k>.wav`` files and return their paths (sorted)."""
    root = Path(root)
    paths = []
    for speaker in range(n_speakers):
        base_midi = 52 + 7 * speaker
        scale = 1.0 + 0.12 * speaker
        for utt in range(n_utterances):
            folder = root / f"singer{speaker}"
            if nested:
                folder = folder / f"take{utt % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"utt{utt}.wav"
            wav = sung_notes(seconds, base_midi, scale, seed=seed + 100 * speaker + utt)
            sf.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
            paths.append(path)
    return sorted(paths)
