"""Constants of the signal path shared by every stage (the released checkpoints depend on them)."""

SAMPLE_RATE = 16_000
"""Every stage works on 16 kHz mono audio."""

HOP_LENGTH = 320
"""Samples per WavLM frame: 20 ms, 50 frames per second."""

N_HARMONICS = 49
"""Harmonic amplitudes read per reference frame (harmonics 1..49)."""

WAVLM_LAYER = 6
"""WavLM-Large layer used for matching and synthesis (output of transformer block 6)."""
