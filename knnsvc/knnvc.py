"""kNN-VC compatible converter: the `get_features` / `get_matching_set` / `match` / `vocode` API of
bshall/knn-vc's ``KNeighborsVC``, so that code written for ``torch.hub.load("bshall/knn-vc", ...)``
runs unchanged on this package.

Behaviour follows kNN-VC (spec §4, §12.1), not kNN-SVC: features are extracted from the whole
file in one WavLM call with no padding (``floor((L - 400) / 320) + 1`` frames); the output frame is
the plain mean of the top-k cosine neighbours; the output is loudness-normalised to -16 LUFS.

One deliberate difference: kNN-VC trims the matching set with ``torchaudio.transforms.Vad``
(torchaudio is not a dependency here). `trim_silence` is a simple energy detector in the same
spirit: the same ``vad_trigger_level`` argument (0 = off) trims low-energy audio at both ends.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hifigan.config import HiFiGANConfig
from knnsvc.audio import check_finite, load_audio, loudness_normalise, too_short
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE, WAVLM_LAYER
from knnsvc.matching import cosine_topk
from knnsvc.runtime import resolve_device
from wavlm import WavLM

log = logging.getLogger(__name__)

VAD_FRAME_SECONDS = 0.02
VAD_HOP_SECONDS = 0.01
VAD_MARGIN_SECONDS = 0.05
"""Audio kept on each side of the detected activity."""
VAD_MIN_BURST_FRAMES = 3
"""Active runs shorter than this (30 ms) are ignored as clicks."""
WINDOW_SAMPLES = 400
"""Samples of WavLM's first frame (its receptive field): a shorter waveform has no features."""
VAD_CEILING_BELOW_PEAK_DB = 30.0
"""A frame within this many dB of the loudest frame always counts as active."""


def trim_silence(wav_16k: torch.Tensor, trigger_level: float = 7.0, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Trim low-energy audio at both ends (energy-based stand-in for kNN-VC's sox-style VAD).

    Frame levels (20 ms frames, 10 ms hop) are measured in dB. The noise floor is the 10th
    percentile of the frame levels; a frame is active when it is `trigger_level` dB above the floor
    or within 30 dB of the loudest frame. Runs of fewer than 3 active frames are ignored. The
    result spans the first to the last active frame plus 50 ms on each side. A recording with no
    activity (or `trigger_level` <= 0.001, kNN-VC's "off") is returned unchanged.

    Args:
        wav_16k: (L,) waveform.

    Returns:
        (L',) a contiguous slice of the input, L' <= L.
    """
    if trigger_level <= 1e-3:
        return wav_16k
    frame = round(VAD_FRAME_SECONDS * sample_rate)
    hop = round(VAD_HOP_SECONDS * sample_rate)
    if wav_16k.numel() < frame:
        return wav_16k
    frames = wav_16k.double().unfold(0, frame, hop)  # (F, frame)
    level_db = 10.0 * torch.log10(frames.pow(2).mean(dim=1) + 1e-12)
    floor_db = torch.quantile(level_db, 0.1)
    threshold_db = torch.minimum(floor_db + trigger_level, level_db.max() - VAD_CEILING_BELOW_PEAK_DB)
    active = level_db > threshold_db
    starts = _burst_starts(active)
    if not starts:
        return wav_16k
    first = starts[0]
    last = len(active) - 1 - _burst_starts(active.flip(0))[0]
    margin = round(VAD_MARGIN_SECONDS * sample_rate)
    begin = max(0, first * hop - margin)
    end = min(wav_16k.numel(), last * hop + frame + margin)
    return wav_16k[begin:end]


def _burst_starts(active: torch.Tensor) -> list[int]:
    """Frame indices where a run of at least `VAD_MIN_BURST_FRAMES` active frames begins."""
    if active.numel() < VAD_MIN_BURST_FRAMES:
        return []
    runs = active.unfold(0, VAD_MIN_BURST_FRAMES, 1).all(dim=1)
    return torch.nonzero(runs).flatten().tolist()


class KnnVc(nn.Module):
    """kNN-VC: WavLM layer-6 features, mean of the top-k cosine neighbours, HiFi-GAN.

    Drop-in for bshall/knn-vc's ``KNeighborsVC`` (same method names, arguments and defaults).

    Args:
        wavlm: the WavLM encoder (eval mode).
        hifigan: a kNN-VC generator, (B, T, D) features -> (B, 1, T * 320) waveform.
        hifigan_cfg: its config (kept as ``h``, like the original).
        device: where features are extracted and matched; None = CUDA if available, else CPU.
    """

    def __init__(
        self,
        wavlm: WavLM,
        hifigan: nn.Module,
        hifigan_cfg: HiFiGANConfig,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        self.device = resolve_device(device)
        self.wavlm = wavlm.eval().to(self.device)
        self.hifigan = hifigan.eval().to(self.device)
        self.h = hifigan_cfg
        self.sr = SAMPLE_RATE
        self.hop_length = HOP_LENGTH
        weighting = torch.zeros(wavlm.num_layers + 1)
        weighting[WAVLM_LAYER] = 1.0
        self.weighting = weighting.to(self.device)
        """Per-layer weights of the default feature: one-hot at layer 6, length layers + 1."""

    @torch.inference_mode()
    def get_features(
        self,
        path: str | os.PathLike | torch.Tensor,
        weights: torch.Tensor | None = None,
        vad_trigger_level: float = 0,
    ) -> torch.Tensor:
        """WavLM features of one utterance (whole file, one call, no padding).

        Args:
            path: an audio file (any rate/channels; resampled to 16 kHz mono) or a 16 kHz
                waveform tensor (L,) or (C, L) (channels are averaged).
            weights: per-layer weights (layers + 1,); None = layer 6 only (fast path).
            vad_trigger_level: trim silence at both ends when > 0 (see `trim_silence`).

        Returns:
            (T, D) features on ``self.device``, T = floor((L - 400) / 320) + 1.
        """
        if isinstance(path, torch.Tensor):
            wav = _mono_waveform(path, "path")
        elif isinstance(path, (str, os.PathLike)):
            wav = load_audio(path)
        else:
            raise TypeError(f"path must be an audio file path or a waveform tensor, got {type(path).__name__}")
        if wav.numel() < WINDOW_SAMPLES:
            short = too_short(wav.numel() / self.sr, needed=WINDOW_SAMPLES / self.sr)
            raise ValueError(f"path: the recording is {short}")
        if vad_trigger_level > 1e-3:
            wav = trim_silence(wav, vad_trigger_level)
        wav = wav.to(self.device)[None]  # (1, L)
        if weights is None or _is_one_hot(weights, WAVLM_LAYER):
            feats, _ = self.wavlm.extract_features(wav, output_layer=WAVLM_LAYER)
            return feats.squeeze(0)
        weights = weights.to(self.device, torch.float32).reshape(-1)
        if weights.numel() != self.wavlm.num_layers + 1:
            raise ValueError(
                f"weights must have {self.wavlm.num_layers + 1} entries (one per layer), got {weights.numel()}"
            )
        _, hidden = self.wavlm.extract_features(wav, output_layer=self.wavlm.num_layers, ret_layer_results=True)
        stacked = torch.stack([h.squeeze(0) for h in hidden])  # (layers + 1, T, D)
        return (stacked * weights[:, None, None]).sum(dim=0)

    def get_matching_set(
        self,
        wavs: Sequence[str | os.PathLike | torch.Tensor],
        weights: torch.Tensor | None = None,
        vad_trigger_level: float = 7,
    ) -> torch.Tensor:
        """Features of the target speaker's recordings, concatenated: (N, D) on the CPU."""
        if isinstance(wavs, (str, os.PathLike, torch.Tensor)):
            raise TypeError("wavs must be a list of audio file paths or waveform tensors, not a single one")
        feats = [self.get_features(wav, weights=weights, vad_trigger_level=vad_trigger_level) for wav in wavs]
        if not feats:
            raise ValueError("the matching set needs at least one recording")
        return torch.cat(feats, dim=0).cpu()

    @torch.inference_mode()
    def vocode(self, c: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features -> (B, T * 320) waveforms."""
        return self.hifigan(c.to(self.device, torch.float32)).squeeze(1)

    @torch.inference_mode()
    def match(
        self,
        query_seq: torch.Tensor,
        matching_set: torch.Tensor,
        synth_set: torch.Tensor | None = None,
        topk: int = 4,
        tgt_loudness_db: float | None = -16,
        target_duration: float | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Convert: each query frame -> mean of the synth-set frames of its top-k matches, vocoded.

        Args:
            query_seq: (T, D) source features.
            matching_set: (N, D) target features searched by cosine distance.
            synth_set: (N, D) frames averaged into the output (default: the matching set).
            topk: neighbours per frame.
            tgt_loudness_db: output loudness in LUFS (None: leave as vocoded).
            target_duration: seconds; linearly stretch the query to this length first.
            device: where to match and vocode (default ``self.device``).

        Returns:
            (L,) waveform on the CPU, L = 320 * T (T after stretching).
        """
        _check_features(query_seq, "query_seq")
        _check_features(matching_set, "matching_set")
        if matching_set.shape[1] != query_seq.shape[1]:
            raise ValueError(f"matching_set has {matching_set.shape[1]}-dim features but query_seq has "
                             f"{query_seq.shape[1]}-dim ones")
        if synth_set is not None:
            _check_features(synth_set, "synth_set")
            if synth_set.shape[0] != matching_set.shape[0]:
                raise ValueError(f"synth_set must have one frame per matching_set frame "
                                 f"({matching_set.shape[0]}), got {synth_set.shape[0]}")
        if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= matching_set.shape[0]:
            raise ValueError(f"topk must be a whole number in 1..{matching_set.shape[0]} (the matching set's "
                             f"frames), got {topk!r}")
        if target_duration is not None and not (math.isfinite(target_duration) and target_duration > 0):
            raise ValueError(f"target_duration must be a positive number of seconds, got {target_duration!r}")
        device = torch.device(device) if device is not None else self.device
        matching_set = matching_set.to(device)
        synth_set = matching_set if synth_set is None else synth_set.to(device)
        query_seq = query_seq.to(device)
        if target_duration is not None:
            target_frames = target_duration * self.sr / self.hop_length
            scale = target_frames / query_seq.shape[0]
            query_seq = F.interpolate(query_seq.T[None], scale_factor=scale, mode="linear")[0].T
        indices = cosine_topk(query_seq, matching_set, k=topk)  # (T, K)
        out_feats = synth_set[indices].mean(dim=1)  # (T, D)
        wav = self.vocode(out_feats[None].to(self.device)).cpu().squeeze(0)
        if tgt_loudness_db is not None and not math.isnan(tgt_loudness_db):
            wav = loudness_normalise(wav, tgt_loudness_db, self.sr)
        return wav


def _mono_waveform(wav: torch.Tensor, name: str) -> torch.Tensor:
    """(L,) float32 from a real (L,) or (C, L) tensor (channels averaged, as kNN-VC's loader does).

    Raises:
        TypeError: a complex or boolean tensor.
        ValueError: another shape, no samples, or non-finite samples (named by `name`).
    """
    if wav.is_complex() or wav.dtype == torch.bool:
        raise TypeError(f"{name} must be a real-valued waveform tensor, got dtype {wav.dtype}")
    if wav.dim() not in (1, 2) or wav.numel() == 0:
        raise ValueError(f"{name} must be a non-empty waveform (L,) or (C, L), got shape {tuple(wav.shape)}")
    wav = wav.float()
    if wav.dim() == 2:
        wav = wav.mean(dim=0)
    check_finite(wav, name)  # in slices: no whole-length mask
    return wav


def _check_features(feats: torch.Tensor, name: str) -> None:
    """Refuse anything but a non-empty, finite (T, D) float tensor, naming the argument."""
    if not isinstance(feats, torch.Tensor):
        raise TypeError(f"{name} must be a (T, D) tensor, got {type(feats).__name__}")
    if feats.dim() != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (T, D) feature tensor, got shape {tuple(feats.shape)}")
    if not feats.is_floating_point():
        raise TypeError(f"{name} must hold floating-point features, got dtype {feats.dtype}")


def _is_one_hot(weights: torch.Tensor, index: int) -> bool:
    flat = weights.detach().reshape(-1).cpu()
    if index >= flat.numel():
        return False
    expected = torch.zeros_like(flat)
    expected[index] = 1
    return bool(torch.allclose(flat, expected))
