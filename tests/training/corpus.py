"""A tiny synthetic singing corpus for the training tests: sung vowels, several speakers.

Each "singer" has a pitch range and a formant scale; each utterance is a few notes of a harmonic-
rich tone (1/k^0.7 spectrum shaped by three vowel formants) with vibrato, note envelopes, short
pauses and a little breath noise, so that WORLD Harvest finds voiced frames and WavLM frames vary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
VOWELS_HZ = {  # F1, F2, F3 of a few vowels (adult male, scaled per singer)
    "a": (730, 1090, 2440),
    "i": (270, 2290, 3010),
    "u": (300, 870, 2240),
    "e": (530, 1840, 2480),
    "o": (570, 840, 2410),
}


def sung_vowels(seconds: float, base_midi: float, formant_scale: float, seed: int) -> np.ndarray:
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
        formants[pos:stop] = np.array(VOWELS_HZ[rng.choice(list(VOWELS_HZ))]) * formant_scale
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


def make_corpus(
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
            wav = sung_vowels(seconds, base_midi, scale, seed=seed + 100 * speaker + utt)
            sf.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
            paths.append(path)
    return sorted(paths)


WAVLM_TINY = Path(__file__).parents[1] / "golden" / "wavlm_tiny.pt"
VOCODER_TINY_CONFIG = Path(__file__).parents[1] / "golden" / "vocoder_tiny_config.json"
_PREMATCHED: dict[str, Path] = {}


def tiny_encoder():
    """The tiny WavLM of the goldens as a layer-6 encoder on the CPU."""
    from knnsvc.checkpoints import load_wavlm
    from knnsvc.encoder import WavLMEncoder

    return WavLMEncoder(load_wavlm(str(WAVLM_TINY), device="cpu"))


def prematched_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus_dir, features_dir) of a 3-singer x 3-utterance corpus, prematched once per session.

    Shared between test modules: treat both folders as read-only.
    """
    if "root" not in _PREMATCHED:
        from knnsvc.training.prematch import PrematchConfig, Prematcher

        root = tmp_path_factory.mktemp("prematched")
        make_corpus(root / "corpus", n_speakers=3, n_utterances=3, seconds=1.2)
        config = PrematchConfig(
            corpus_dir=str(root / "corpus"),
            out_dir=str(root / "features"),
            wavlm=str(WAVLM_TINY),
            device="cpu",
            progress=False,
        )
        Prematcher(config, tiny_encoder()).run()
        _PREMATCHED["root"] = root
    root = _PREMATCHED["root"]
    return root / "corpus", root / "features"
