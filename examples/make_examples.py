"""Make the example recordings used by the README's first command (synthetic singing, made here).

    python examples/make_examples.py        # writes examples/source.wav, examples/target_singer/*.wav

Two synthetic "singers" (different vocal-tract formants and registers) sing short melodies with
vibrato, glides between notes and a little breath noise: enough for Harvest to track and for the
converter to run end to end. They are no substitute for real recordings, only a runnable example.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
HERE = Path(__file__).resolve().parent

VOWELS = {  # formant frequencies (Hz) of a few sung vowels
    "a": (800.0, 1150.0, 2900.0),
    "e": (400.0, 1700.0, 2600.0),
    "o": (450.0, 800.0, 2830.0),
    "i": (300.0, 2200.0, 3000.0),
}


def sing(notes: list[tuple[float, float, str]], formant_scale: float, seed: int) -> np.ndarray:
    """A melody of (midi note, seconds, vowel) with vibrato, 40 ms glides and breath noise.

    Returns:
        (L,) float32 at 16 kHz, peak 0.7.
    """
    rng = np.random.default_rng(seed)
    f0, formants = [], []
    for midi, seconds, vowel in notes:
        n = round(seconds * SAMPLE_RATE)
        f0.append(np.full(n, 440.0 * 2.0 ** ((midi - 69) / 12)))
        formants.append(np.tile(np.array(VOWELS[vowel]) * formant_scale, (n, 1)))
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


def main() -> None:
    melody = [(69, 0.5, "a"), (71, 0.5, "e"), (72, 0.75, "o"), (76, 0.5, "a"), (74, 0.5, "i"), (72, 1.0, "o")]
    (HERE / "target_singer").mkdir(exist_ok=True)
    sf.write(HERE / "source.wav", sing(melody, formant_scale=1.0, seed=1), SAMPLE_RATE, subtype="PCM_16")
    takes = {
        "take1.wav": [(57, 0.6, "o"), (59, 0.6, "a"), (60, 0.8, "e"), (62, 0.6, "i"), (64, 1.0, "a")],
        "take2.wav": [(64, 0.5, "e"), (62, 0.5, "o"), (60, 0.7, "a"), (59, 0.6, "i"), (57, 1.2, "o")],
    }
    for name, notes in takes.items():
        sf.write(HERE / "target_singer" / name, sing(notes, formant_scale=0.88, seed=len(name)), SAMPLE_RATE,
                 subtype="PCM_16")


if __name__ == "__main__":
    main()
