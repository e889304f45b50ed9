"""Our own WavLM implementation: builds from an official checkpoint's ``cfg`` and loads its keys.

Provenance: the architecture follows WavLM (Chen et al., "WavLM: Large-Scale Self-Supervised
Pre-Training for Full Stack Speech Processing", IEEE JSTSP 2022), as released by Microsoft with the
checkpoints this package loads; the code is written here from the paper and the checkpoints' key
layout, not copied.

    >>> checkpoint = torch.load("WavLM-Large.pt", map_location="cpu", weights_only=True)
    >>> model = load_wavlm(checkpoint)
    >>> x, _ = model.extract_features(wav_16k[None], output_layer=6)  # (1, T, 1024)
"""

from wavlm.config import WavLMConfig
from wavlm.model import WavLM, load_wavlm

__all__ = ["WavLM", "WavLMConfig", "load_wavlm"]
