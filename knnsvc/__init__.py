"""kNN-SVC: zero-shot singing voice conversion.

Dataflow, one file per stage::

    audio.py -> encoder.py -> pitch.py -> harmonics.py -> matching.py -> pool.py
             -> pipeline.py (+ hifigan/ vocoders) -> convert.py

Shape letters used in docstrings throughout the project:

    B  batch            T  source frames (50 Hz, hop 320 at 16 kHz)
    N  pool frames      D  feature dim (1024 for WavLM-Large)
    K  neighbours       H  harmonics (49)
    L  samples (16 kHz unless the name says otherwise)
"""

__version__ = "0.1.0"
