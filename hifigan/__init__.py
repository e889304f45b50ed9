"""HiFi-GAN vocoders of kNN-VC / kNN-SVC: architectures only (config, generators, layers,
discriminators, losses, mel). Training lives above the pipeline, in ``training/``."""

from hifigan.config import HiFiGANConfig
from hifigan.generator import (
    HarmonicGenerator,
    KnnVcGenerator,
    SineGenerator,
    VocoderKind,
    build_generator,
    detect_kind,
    load_generator,
)

__all__ = [
    "HiFiGANConfig",
    "VocoderKind",
    "KnnVcGenerator",
    "HarmonicGenerator",
    "SineGenerator",
    "build_generator",
    "detect_kind",
    "load_generator",
]
