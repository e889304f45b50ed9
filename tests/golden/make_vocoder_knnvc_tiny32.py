"""Make ``vocoder_knnvc_tiny32.pt`` and its config: a tiny kNN-VC generator that pairs with ``wavlm_tiny.pt``.

``vocoder_knnvc_tiny.pt`` (from the reference run) takes 64-dim features, while the tiny WavLM gives
32-dim ones, so it cannot be used with it. This file is the same architecture and config with
``hubert_dim`` 32, random weights (seed 0), in the official ``{'generator': state_dict}`` format with
legacy weight-norm keys. It is made here, not by the reference code; the other golden files are
unchanged. Run ``python tests/golden/make_vocoder_knnvc_tiny32.py`` to remake it (same weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hifigan.config import HiFiGANConfig
from hifigan.generator import VocoderKind, build_generator

GOLDEN = Path(__file__).parent
BASE_CONFIG = GOLDEN / "vocoder_knnvc_tiny_config.json"
CONFIG = GOLDEN / "vocoder_knnvc_tiny32_config.json"
CHECKPOINT = GOLDEN / "vocoder_knnvc_tiny32.pt"
FEATURE_DIM = 32
"""The tiny WavLM's embedding width (``wavlm_tiny.pt``'s ``cfg['encoder_embed_dim']``)."""
SEED = 0


def tiny32_config() -> dict:
    """The kNN-VC tiny config with ``hubert_dim`` = `FEATURE_DIM`."""
    values = json.loads(BASE_CONFIG.read_text(encoding="utf-8"))
    values["hubert_dim"] = FEATURE_DIM
    return values


def tiny32_state() -> dict[str, torch.Tensor]:
    """The generator's state dict (weight-norm parametrised: ``weight_g`` / ``weight_v`` keys)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        generator = build_generator(VocoderKind.KNNVC, HiFiGANConfig.from_dict(tiny32_config()))
    return {key: value.detach().clone() for key, value in generator.state_dict().items()}


def main() -> None:
    CONFIG.write_text(json.dumps(tiny32_config(), indent=1) + "\n", encoding="utf-8")
    torch.save({"generator": tiny32_state()}, CHECKPOINT)


if __name__ == "__main__":
    main()
