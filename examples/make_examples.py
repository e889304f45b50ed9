"""Make the example recordings used by the README's first command (synthetic singing, made here).

    python examples/make_examples.py        # writes examples/source.wav, examples/target_singer/*.wav

Two synthetic "singers" (different vocal-tract formants and registers) sing short melodies with
vibrato, glides between notes and a little breath noise: enough for Harvest to track and for the
converter to run end to end. They are no substitute for real recordings, only a runnable example.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from knnsvc.config import SAMPLE_RATE
from knnsvc.synthetic import melody

HERE = Path(__file__).resolve().parent


def main() -> None:
    tune = [(69, 0.5, "a"), (71, 0.5, "e"), (72, 0.75, "o"), (76, 0.5, "a"), (74, 0.5, "i"), (72, 1.0, "o")]
    (HERE / "target_singer").mkdir(exist_ok=True)
    sf.write(HERE / "source.wav", melody(tune, formant_scale=1.0, seed=1), SAMPLE_RATE, subtype="PCM_16")
    takes = {
        "take1.wav": [(57, 0.6, "o"), (59, 0.6, "a"), (60, 0.8, "e"), (62, 0.6, "i"), (64, 1.0, "a")],
        "take2.wav": [(64, 0.5, "e"), (62, 0.5, "o"), (60, 0.7, "a"), (59, 0.6, "i"), (57, 1.2, "o")],
    }
    for name, notes in takes.items():
        sf.write(HERE / "target_singer" / name, melody(notes, formant_scale=0.88, seed=len(name)), SAMPLE_RATE,
                 subtype="PCM_16")


if __name__ == "__main__":
    main()
