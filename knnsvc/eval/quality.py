"""Non-intrusive quality prediction: DNSMOS P.835 (SIG, BAK, OVRL) and P.808, from speechmos.

speechmos ships the Microsoft DNSMOS ONNX models inside its wheel, so this runs offline. The
predictor scores 9 s windows hopped by 1 s and averages them; shorter audio is repeated up to 9 s.
DNSMOS was trained on speech: on singing it is a relative indicator only (compare systems on the
same material, never against speech numbers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from knnsvc.config import SAMPLE_RATE

log = logging.getLogger(__name__)


@dataclass
class DnsmosScores:
    """DNSMOS predictions on the 1-5 MOS scale."""

    ovrl: float
    sig: float
    bak: float
    p808: float


def dnsmos(wav_16k: torch.Tensor | np.ndarray, personalized: bool = False) -> DnsmosScores:
    """Predict DNSMOS for one recording (L,) at 16 kHz.

    Args:
        wav_16k: waveform; values outside [-1, 1] are clipped (the predictor rejects them).
        personalized: use the personalised-DNSMOS model (penalises interfering talkers).

    Raises:
        ImportError: speechmos (or onnxruntime/librosa) is not installed.
        ValueError: empty audio.
    """
    try:
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError as err:
        raise ImportError(
            "the quality metric needs speechmos: pip install --no-deps speechmos && "
            "pip install onnxruntime librosa requests"
        ) from err
    if isinstance(wav_16k, torch.Tensor):
        wav_16k = wav_16k.detach().cpu().numpy()
    samples = np.clip(np.asarray(wav_16k, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if samples.size == 0:
        raise ValueError("cannot predict DNSMOS for empty audio")
    model_type = "dnsmos_personalized" if personalized else "dnsmos"
    scores = speechmos_dnsmos.run(samples, SAMPLE_RATE, model_type=model_type)
    return DnsmosScores(
        ovrl=float(scores["ovrl_mos"]),
        sig=float(scores["sig_mos"]),
        bak=float(scores["bak_mos"]),
        p808=float(scores["p808_mos"]),
    )
