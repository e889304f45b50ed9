"""Our own WavLM implementation: builds from an official checkpoint's ``cfg`` and loads its keys.

    >>> checkpoint = torch.load("WavLM-Large.pt", map_location="cpu", weights_only=True)
    >>> model = load_wavlm(checkpoint)
    >>> x, _ = model.extract_features(wav_16k[None], output_layer=6)  # (1, T, 1024)
"""

from wavlm.config import WavLMConfig
from wavlm.model import WavLM, load_wavlm

__all__ = ["WavLM", "WavLMConfig", "load_wavlm"]
