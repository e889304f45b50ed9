"""kNN-SVC: zero-shot singing voice conversion.

Dataflow, one file per stage::

    audio.py -> encoder.py -> pitch.py -> harmonics.py -> matching.py -> pool.py
             -> blocks.py -> pipeline.py / streaming.py (+ hifigan/ vocoders)
             -> conversion.py -> apps/ (convert, stream, cover, demo, score)

Shape letters used in docstrings throughout the project:

    B  batch            T  source frames (50 Hz, hop 320 at 16 kHz)
    N  pool frames      D  feature dim (1024 for WavLM-Large)
    K  neighbours       H  harmonics (49)
    L  samples (16 kHz unless the name says otherwise)
"""

__version__ = "0.2.0"
