"""Speaker similarity and speaker-verification EER (spec §13.1), with a pluggable embedder.

The default embedder is resemblyzer's GE2E encoder (its weights ship inside the wheel). The
paper's SpeechBrain x-vector (or an ECAPA model) is used when its files are on disk; nothing is
ever downloaded here.

Similarity of a converted utterance = cosine between its embedding and the target speaker's
centroid (the normalised mean of the embeddings of the real target recordings).

EER follows the reference protocol: trials are (converted, real target) pairs with label 0 and
(real target, other real target) pairs with label 1, scored by cosine similarity; per target
speaker the EER is the point of the ROC where the false-positive rate equals the miss rate, and
the summary is the mean and standard deviation over target speakers. 50 % means a verifier cannot
tell conversions from genuine recordings of the target; 0 % means it always can.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from knnsvc.audio import SILENCE_PEAK, silent
from knnsvc.config import SAMPLE_RATE

log = logging.getLogger(__name__)

MIN_TRIMMED_SECONDS = 0.5
"""Below this much speech after resemblyzer's silence trimming, the untrimmed audio is embedded."""


class SpeakerEmbedder(Protocol):
    """Anything that maps a 16 kHz waveform to a fixed-size speaker embedding."""

    name: str

    def embed(self, wav_16k: torch.Tensor | np.ndarray) -> np.ndarray:
        """Embedding (E,) of one recording, L2-normalised."""
        ...


def _as_numpy(wav_16k: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(wav_16k, torch.Tensor):
        wav_16k = wav_16k.detach().cpu().numpy()
    return np.asarray(wav_16k, dtype=np.float32).reshape(-1)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("speaker embedding has zero or non-finite norm")
    return (vector / norm).astype(np.float32)


class ResemblyzerEmbedder:
    """GE2E speaker encoder from resemblyzer (256-d, trained on VoxCeleb + LibriSpeech)."""

    name = "resemblyzer"

    def __init__(self, device: str = "cpu") -> None:
        try:
            with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology
                warnings.simplefilter("ignore", DeprecationWarning)
                from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as err:
            raise ImportError(
                "the speaker metrics need resemblyzer: pip install --no-deps resemblyzer && "
                "pip install webrtcvad-wheels librosa"
            ) from err
        self._preprocess = preprocess_wav
        self._encoder = VoiceEncoder(device=device, verbose=False)

    def embed(self, wav_16k: torch.Tensor | np.ndarray) -> np.ndarray:
        """Volume-normalise, trim long pauses (webrtcvad), embed; (256,) unit norm."""
        samples = _as_numpy(wav_16k)
        if samples.size == 0 or float(np.abs(samples).max()) < SILENCE_PEAK:
            raise ValueError(f"{silent()}, so it has no speaker embedding")
        trimmed = self._preprocess(samples)
        if len(trimmed) < MIN_TRIMMED_SECONDS * SAMPLE_RATE:
            trimmed = samples
        return _unit(self._encoder.embed_utterance(trimmed))


class SpeechBrainEmbedder:
    """A SpeechBrain speaker model (x-vector as in the paper, or ECAPA) from a local folder.

    `source` is the folder holding ``hyperparams.yaml`` and the checkpoint files (for example a
    copy of ``speechbrain/spkrec-xvect-voxceleb``); it is never fetched from a hub.
    """

    def __init__(self, source: str | Path, device: str = "cpu") -> None:
        source = Path(source).expanduser()
        if not (source / "hyperparams.yaml").is_file():
            raise FileNotFoundError(f"{source}: no hyperparams.yaml, not a local SpeechBrain model folder")
        try:
            from speechbrain.inference.speaker import EncoderClassifier
        except ImportError:
            try:
                from speechbrain.pretrained import EncoderClassifier
            except ImportError as err:
                raise ImportError("the SpeechBrain embedder needs: pip install speechbrain") from err
        self.name = f"speechbrain:{source.name}"
        self._model = EncoderClassifier.from_hparams(
            source=str(source), savedir=str(source), run_opts={"device": device}
        )
        self._device = device

    def embed(self, wav_16k: torch.Tensor | np.ndarray) -> np.ndarray:
        """(E,) unit-norm embedding of one recording."""
        batch = torch.from_numpy(_as_numpy(wav_16k))[None].to(self._device)
        with torch.inference_mode():
            emb = self._model.encode_batch(batch)
        return _unit(emb.reshape(-1).float().cpu().numpy())


def make_embedder(spec: str = "resemblyzer", device: str = "cpu") -> SpeakerEmbedder:
    """Build an embedder from a setting: ``resemblyzer`` or ``speechbrain:<local folder>``."""
    if spec == "resemblyzer":
        return ResemblyzerEmbedder(device)
    if spec.startswith("speechbrain:"):
        return SpeechBrainEmbedder(spec.split(":", 1)[1], device)
    raise ValueError(f"unknown speaker embedder '{spec}' (use 'resemblyzer' or 'speechbrain:<model folder>')")


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two embeddings (E,)."""
    return float(np.dot(_unit(np.asarray(a, np.float32)), _unit(np.asarray(b, np.float32))))


def equal_error_rate(scores: Sequence[float], labels: Sequence[int]) -> float:
    """EER of a verifier: the rate at which false acceptances equal false rejections.

    Args:
        scores: (M,) similarity per trial, higher = more likely the same speaker.
        labels: (M,) 1 for a genuine (same-speaker) trial, 0 for an impostor trial.

    Returns:
        EER in [0, 1], linearly interpolated on the ROC as the reference's brentq on an
        interpolated ROC does: 0 for perfectly separable scores, about 0.5 for identical
        distributions.

    Raises:
        ValueError: the trials do not contain both labels.
    """
    scores_arr = np.asarray(scores, dtype=np.float64)
    labels_arr = np.asarray(labels, dtype=np.int64)
    n_pos = int((labels_arr == 1).sum())
    n_neg = int((labels_arr == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"EER needs genuine and impostor trials (got {n_pos} genuine, {n_neg} impostor)")
    order = np.argsort(-scores_arr, kind="stable")
    sorted_scores = scores_arr[order]
    sorted_labels = labels_arr[order]
    # ROC points at every distinct threshold, from "accept nothing" to "accept everything".
    last_of_group = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tpr = np.r_[0.0, np.cumsum(sorted_labels == 1)[last_of_group] / n_pos]
    fpr = np.r_[0.0, np.cumsum(sorted_labels == 0)[last_of_group] / n_neg]
    gap = 1.0 - tpr - fpr  # miss rate minus false-acceptance rate: decreasing from 1 to -1
    cross = int(np.flatnonzero(gap <= 0.0)[0])
    if gap[cross] == 0.0 or cross == 0:
        return float(fpr[cross])
    # gap is linear in x along the segment between ROC points cross-1 and cross.
    frac = gap[cross - 1] / (gap[cross - 1] - gap[cross])
    return float(fpr[cross - 1] + frac * (fpr[cross] - fpr[cross - 1]))


@dataclass(frozen=True)
class Trial:
    """One verification trial of the EER protocol.

    Attributes:
        target_speaker: speaker the trial belongs to (EER is computed per target speaker).
        x: converted utterance (label 0) or a real target recording (label 1), as an id.
        y: a real target recording, as an id.
        label: 1 genuine (both real), 0 conversion vs real.
    """

    target_speaker: str
    x: str
    y: str
    label: int


def make_trials(converted: Mapping[str, Sequence[str]], real: Mapping[str, Sequence[str]]) -> list[Trial]:
    """Build balanced trials per target speaker when no pair list is given.

    Each conversion to a speaker is paired with one of its real recordings (cycling through them)
    as a label-0 trial; as many label-1 trials pair different real recordings of the speaker
    (cycling through the distinct pairs). A speaker with fewer than two real recordings gets no
    label-1 trials (its EER is undefined).

    Args:
        converted: target speaker -> ids of the conversions to that speaker.
        real: target speaker -> ids of its real recordings.
    """
    trials: list[Trial] = []
    for speaker, conv_ids in converted.items():
        real_ids = list(real.get(speaker, ()))
        if not conv_ids or not real_ids:
            continue
        pairs = [(a, b) for i, a in enumerate(real_ids) for b in real_ids[i + 1 :]]
        for n, conv in enumerate(conv_ids):
            trials.append(Trial(speaker, conv, real_ids[n % len(real_ids)], 0))
            if pairs:
                a, b = pairs[n % len(pairs)]
                trials.append(Trial(speaker, a, b, 1))
    return trials


@dataclass
class EerResult:
    """Per-target-speaker EER and their summary (fractions in [0, 1]; None if undefined)."""

    mean: float | None
    std: float | None
    per_speaker: dict[str, float]
    skipped: dict[str, str]


def per_speaker_eer(trials: Iterable[Trial], scores: Sequence[float]) -> EerResult:
    """EER for each target speaker, then mean and (population) std over speakers.

    Args:
        trials: (M,) trials.
        scores: (M,) cosine similarity of each trial's x and y embeddings.
    """
    by_speaker: dict[str, tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for trial, score in zip(trials, scores, strict=True):
        by_speaker[trial.target_speaker][0].append(float(score))
        by_speaker[trial.target_speaker][1].append(trial.label)
    per_speaker: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for speaker, (spk_scores, spk_labels) in sorted(by_speaker.items()):
        try:
            per_speaker[speaker] = equal_error_rate(spk_scores, spk_labels)
        except ValueError as err:
            skipped[speaker] = str(err)
            log.warning("EER for target speaker '%s' not computed: %s", speaker, err)
    if not per_speaker:
        return EerResult(None, None, per_speaker, skipped)
    values = np.array(list(per_speaker.values()))
    return EerResult(float(values.mean()), float(values.std()), per_speaker, skipped)


class EmbeddingCache:
    """Embeds each recording once: id -> (E,) embedding, loading audio through `load`."""

    def __init__(self, embedder: SpeakerEmbedder, load) -> None:
        self.embedder = embedder
        self._load = load
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, item_id: str) -> np.ndarray:
        if item_id not in self._cache:
            self._cache[item_id] = self.embedder.embed(self._load(item_id))
        return self._cache[item_id]
