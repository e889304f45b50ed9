"""HiFi-GAN vocoders of kNN-VC / kNN-SVC: architectures only (config, generators, layers,
discriminators, losses, mel, excitation signals). Training lives above the pipeline, in
``knnsvc/training/``. This package imports nothing of ``knnsvc``.

Provenance: the generator and the MPD/MSD discriminators follow HiFi-GAN (Kong et al., NeurIPS 2020)
in the variant of kNN-VC (Baas et al., Interspeech 2023: WavLM features in, prematched training),
and the harmonic generator kNN-SVC (ICASSP 2025: additive harmonic synthesis fed to the upsampling
stack), with parameter names matching the released checkpoints; the fast generator of ``vocos.py``
follows Vocos (Siuzdak, 2023) with the harmonic excitation as input; the code is written here from the
papers and the checkpoints, not copied.
"""

from hifigan.config import HiFiGANConfig
from hifigan.generator import (
    HarmonicGenerator,
    KnnVcGenerator,
    SineGenerator,
    VocoderKind,
    build_generator,
    detect_kind,
    generator_file,
    load_generator,
)
from hifigan.vocos import VocosConfig, VocosGenerator

__all__ = [
    "HiFiGANConfig",
    "VocoderKind",
    "KnnVcGenerator",
    "HarmonicGenerator",
    "SineGenerator",
    "build_generator",
    "detect_kind",
    "load_generator",
    "generator_file",
    "VocosConfig",
    "VocosGenerator",
]
