"""The prematched feature-file format: one ``.pt`` file per utterance, written by prematching.

===================  ==============  ==========================================================
key                  shape / dtype   content
===================  ==============  ==========================================================
``feats``            (T, D) float16  mean of the 4 cosine-nearest pool frames (layer 6), the
                                     prematched features of kNN-VC / kNN-SVC training
                                     (``feature_mode="matched"``: the inference features, with
                                     reselection and optimised weights)
``f0_hz``            (T,) float32    the utterance's own Harvest F0 (the pitch the target sings)
``amps``             (T, H) float32  harmonic amplitudes exactly as inference computes them for
                                     this utterance: pitch-priority candidates, reselection and
                                     optimised weights per the matching settings (H = 49, or
                                     ``harmonics_for_rate`` of the prematching ``sample_rate``)
``candidate_amps``   (T, K, H) f16   amplitudes of the K pitch-priority candidates (no
                                     reselection), for the reference's random-candidate input
``amp_ratio``        (T, K) float32  ||S_utt[t]||_1 / (||S_pool[c]||_1 + 1e-5) of those candidates
``num_samples``      int             length of the 16 kHz audio the frames came from
===================  ==============  ==========================================================

This module only reads and writes the files (no WavLM, no matching), so the training data loader
imports it without the converter. Shape letters: T frames, D feature dim, H harmonics,
K candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from knnsvc.files import atomic_path
from knnsvc.runtime import first_line

FEATURE_FORMAT = "knnsvc-prematch"
FEATURE_FORMAT_VERSION = 1
FEATURE_SUFFIX = ".pt"


@dataclass
class PrematchedFeatures:
    """The contents of one feature file (see the module docstring for the keys)."""

    feats: torch.Tensor
    f0_hz: torch.Tensor
    amps: torch.Tensor
    candidate_amps: torch.Tensor
    amp_ratio: torch.Tensor
    num_samples: int

    @property
    def num_frames(self) -> int:
        return self.feats.shape[0]

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file in the same folder, then rename)."""
        payload = {
            "format": FEATURE_FORMAT,
            "version": FEATURE_FORMAT_VERSION,
            "feats": self.feats.cpu(),
            "f0_hz": self.f0_hz.float().cpu(),
            "amps": self.amps.float().cpu(),
            "candidate_amps": self.candidate_amps.cpu(),
            "amp_ratio": self.amp_ratio.float().cpu(),
            "num_samples": int(self.num_samples),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | Path) -> PrematchedFeatures:
        """Read a feature file written by :meth:`save` (``weights_only`` loading).

        Raises:
            ValueError: the file is unreadable or not a prematched feature file of this version.
        """
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several unrelated types for corrupt files
            raise ValueError(f"{path}: not a readable feature file ({first_line(err)})") from None
        if not isinstance(payload, dict) or payload.get("format") != FEATURE_FORMAT:
            raise ValueError(f"{path}: not a prematched feature file (run experiments/prematch.py)")
        if payload.get("version") != FEATURE_FORMAT_VERSION:
            raise ValueError(
                f"{path}: feature format version {payload.get('version')}, expected {FEATURE_FORMAT_VERSION}; "
                "prematch the corpus again"
            )
        return cls(
            feats=payload["feats"],
            f0_hz=payload["f0_hz"],
            amps=payload["amps"],
            candidate_amps=payload["candidate_amps"],
            amp_ratio=payload["amp_ratio"],
            num_samples=int(payload["num_samples"]),
        )


def feature_relpath(audio_relpath: str | Path) -> Path:
    """Feature file of an audio file, relative to the feature root: same path, suffix ``.pt``."""
    return Path(audio_relpath).with_suffix(FEATURE_SUFFIX)
