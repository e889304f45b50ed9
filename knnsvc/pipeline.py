"""The converter: reference pool in, waveform out. No file I/O, no printing.

    source wav ─► WavLM layer 6 (T, D) ─┬─► cosine top-32 in the pool ─► pass A: first K,
                 Harvest F0 (T,)        │     reselect + optimise weights ─► feats (T, D)
                                        └─► key shift ─► pass B: pitch-priority K, reselect +
                                              optimise weights ─► harmonic amps (T, H)
    vocoder(feats, shifted F0, amps) ─► waveform (T * 320,)
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn

from hifigan.generator import VocoderKind
from knnsvc.config import HOP_LENGTH
from knnsvc.encoder import WavLMEncoder
from knnsvc.harmonics import harmonic_amplitudes, magnitude_spectrogram
from knnsvc.matching import (
    HARMONIC_SMOOTHNESS,
    WAVLM_SMOOTHNESS,
    Neighbours,
    OptimiserSettings,
    PitchCost,
    cosine_topk,
    optimise_weights,
    pitch_priority,
    reselect,
    weighted_sum,
)
from knnsvc.pitch import apply_pitch_shift, harvest_f0, parse_pitch_shift
from knnsvc.pool import ReferencePool, module_fingerprint

PRECISIONS = ("float64", "float32")
"""Arithmetic of the matching stage; float64 is the reference's."""
T = TypeVar("T")


@dataclass
class MatchConfig:
    """How source frames are matched to the pool. Defaults reproduce the reference (`post_opt_0.2`).

    Attributes:
        n_candidates: cosine-nearest pool frames kept per source frame.
        topk: frames averaged per output frame (the reference hard-codes 4).
        concat_weight: m, the concatenation-cost weight of the reselection; None = no
            reselection (the reference's `no_post_opt`).
        optimise_weights: optimise the summing weights for smoothness; False = plain mean.
        pitch_shift: "auto" moves the source's median log-F0 onto the reference's (the paper);
            "auto-semitone" / "auto-octave" round that interval to whole semitones / octaves (an
            octave keeps a song's key); a number transposes by that many semitones; None (or
            "none") keeps the source pitch. Strings and numbers are accepted (Hydra, CLI).
        precision: dtype of the matching arithmetic; "float64" is the reference's.
        sticky_concat_switch: reproduce the reference quirk that switches the harmonic pass's
            concatenation term off for good after the first fast-changing frame (spec §7.3).
        smooth_every_vocoder: also reselect/optimise for the f0-sine and kNN-VC vocoders (the
            reference uses the plain mean of the first K for them).
        respect_file_boundaries: natural successors and the smoothness loss's neighbour frames
            stay inside each reference file (the reference runs across file boundaries, as if
            the files were one recording).
        max_opt_iters: iteration cap of the weight optimisation (the reference's is 100 000).
    """

    n_candidates: int = 32
    topk: int = 4
    concat_weight: float | None = 0.2
    optimise_weights: bool = True
    pitch_shift: Any = "auto"
    precision: str = "float64"
    sticky_concat_switch: bool = True
    smooth_every_vocoder: bool = False
    respect_file_boundaries: bool = False
    max_opt_iters: int = 100_000

    def __post_init__(self) -> None:
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {self.n_candidates}")
        if self.topk < 1 or self.topk > self.n_candidates:
            raise ValueError(f"topk must be in 1..{self.n_candidates}, got {self.topk}")
        if self.concat_weight is not None and not (math.isfinite(self.concat_weight) and self.concat_weight >= 0):
            raise ValueError(f"concat_weight must be a finite number >= 0 (or None), got {self.concat_weight}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.max_opt_iters < 1:
            raise ValueError(f"max_opt_iters must be >= 1, got {self.max_opt_iters}")
        self.pitch_shift = parse_pitch_shift(self.pitch_shift)


@dataclass
class SourceFeatures:
    """What the converter needs of a source recording: feats (T, D), f0_hz (T,)."""

    feats: torch.Tensor
    f0_hz: torch.Tensor


@dataclass
class MatchResult:
    """Everything the vocoder gets, plus the provenance of every output frame.

    Attributes:
        feats: (T, D) float32 features fed to the vocoder.
        f0_hz: (T,) key-shifted source F0, the pitch the output sings at.
        source_f0_hz: (T,) the source's own F0.
        amps: (T, H) float32 harmonic amplitudes (None unless the vocoder is harmonic).
        candidates: (T, C) cosine-nearest pool rows.
        indices_wavlm, weights_wavlm: (T, K) pool rows and weights averaged into `feats`.
        indices_harm, weights_harm: (T, K) pool rows and weights averaged into `amps`.
        shift_ratio: the pitch ratio applied to the source (1.0 without shift).
    """

    feats: torch.Tensor
    f0_hz: torch.Tensor
    source_f0_hz: torch.Tensor
    amps: torch.Tensor | None
    candidates: torch.Tensor
    indices_wavlm: torch.Tensor
    weights_wavlm: torch.Tensor
    indices_harm: torch.Tensor | None = None
    weights_harm: torch.Tensor | None = None
    shift_ratio: float = 1.0


class KnnSvc:
    """kNN-SVC converter: a WavLM encoder, a vocoder and the matching settings.

    `vocoder` may be None for matching only (e.g. preparing vocoder training data); `kind` then
    still says which passes `match` runs.

    Stage times of the latest calls accumulate in `timings` (seconds per stage name); clear it
    to start a new measurement.
    """

    def __init__(
        self,
        encoder: WavLMEncoder,
        vocoder: nn.Module | None,
        kind: VocoderKind | str,
        config: MatchConfig | None = None,
    ) -> None:
        self.encoder = encoder.eval()
        self.vocoder = vocoder.eval() if vocoder is not None else None
        self.kind = VocoderKind(kind)
        self.config = config or MatchConfig()
        self.timings: dict[str, float] = {}
        self._encoder_id: str | None = None

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def encoder_id(self) -> str:
        """Fingerprint of the encoder weights and layer (part of a pool's cache key)."""
        if self._encoder_id is None:
            self._encoder_id = f"{module_fingerprint(self.encoder)}-layer{self.encoder.layer}"
        return self._encoder_id

    # ----------------------------------------------------------------------------- analysis
    @torch.inference_mode()
    def analyse(self, wav_16k: torch.Tensor) -> SourceFeatures:
        """WavLM features and Harvest F0 of one recording, frame-aligned.

        Args:
            wav_16k: (L,) waveform.

        Returns:
            feats (T, D) float32 on the CPU, f0_hz (T,) with T = frames of the encoder.
        """
        # Harvest releases the GIL: it runs on a second thread while WavLM encodes.
        with ThreadPoolExecutor(max_workers=1) as worker:
            f0_job = worker.submit(self._timed_call, "f0", harvest_f0, wav_16k.cpu())
            with self._timed("encode"):
                feats = self.encoder(wav_16k.to(self.device)).float().cpu()
            f0_hz = f0_job.result()[: feats.shape[0]]
        return SourceFeatures(feats=feats, f0_hz=f0_hz)

    @torch.inference_mode()
    def reference_pool(self, wav_16k: torch.Tensor, name: str = "") -> ReferencePool:
        """A one-file pool: features, F0 and per-frame harmonic amplitudes (spec §8.1–8.2)."""
        source = self.analyse(wav_16k)
        with self._timed("harmonics"):
            spec = magnitude_spectrogram(wav_16k.cpu())[: source.feats.shape[0]]
            amps = harmonic_amplitudes(spec, source.f0_hz)
        return ReferencePool(feats=source.feats, f0_hz=source.f0_hz, amps=amps, starts=[0], names=[name])

    def build_pool(
        self, wavs: Sequence[torch.Tensor], names: Sequence[str] | None = None
    ) -> ReferencePool:
        """Pool of several recordings of one singer, concatenated in order."""
        names = list(names) if names is not None else [str(i) for i in range(len(wavs))]
        return ReferencePool.concat([self.reference_pool(w, n) for w, n in zip(wavs, names)])

    def pool_settings(self) -> dict:
        """Settings that determine a pool's contents (the rest of its cache key)."""
        return {
            "encoder": self.encoder_id,
            "layer": self.encoder.layer,
            "chunk_samples": self.encoder.chunk_samples,
        }

    # ----------------------------------------------------------------------------- matching
    @torch.inference_mode()
    def match(self, source: torch.Tensor | SourceFeatures, pool: ReferencePool) -> MatchResult:
        """Select and weight pool frames for every source frame (spec §6–§7).

        Raises:
            ValueError: the pool has fewer frames than candidates, or pitch_shift="auto" and the
                source or the reference has no voiced frame.
        """
        if isinstance(source, torch.Tensor):
            source = self.analyse(source)
        cfg = self.config
        dtype = torch.float64 if cfg.precision == "float64" else torch.float32
        query, table = source.feats.to(dtype), pool.feats.to(dtype)
        if pool.num_frames < cfg.n_candidates:
            raise ValueError(
                f"the reference is too short: {pool.num_frames} frames "
                f"({pool.seconds:.2f} s), at least {cfg.n_candidates} needed"
            )

        with self._timed("knn"):
            candidates = cosine_topk(query.to(self.device), table.to(self.device), cfg.n_candidates).cpu()
        f0_target = self._shifted_f0(source.f0_hz, pool.f0_hz)
        smooth = self.kind is VocoderKind.HARMONIC or cfg.smooth_every_vocoder
        settings = OptimiserSettings(max_iters=cfg.max_opt_iters)
        neighbours = Neighbours.of(pool.num_frames, pool.starts if cfg.respect_file_boundaries else None)

        indices_wavlm = candidates[:, : cfg.topk]
        if smooth and cfg.concat_weight is not None:
            with self._timed("reselect"):
                indices_wavlm = reselect(indices_wavlm, query, table, cfg.concat_weight, neighbours=neighbours)
        with self._timed("optimise"):
            weights_wavlm = self._weights(indices_wavlm, table, WAVLM_SMOOTHNESS, smooth, settings, neighbours)
        feats = weighted_sum(indices_wavlm, weights_wavlm, table).float()
        result = MatchResult(
            feats=feats,
            f0_hz=f0_target,
            source_f0_hz=source.f0_hz,
            amps=None,
            candidates=candidates,
            indices_wavlm=indices_wavlm,
            weights_wavlm=weights_wavlm.float(),
            shift_ratio=_ratio(source.f0_hz, f0_target),
        )
        if self.kind is not VocoderKind.HARMONIC:
            return result

        harm_table = pool.amps.to(dtype)
        indices_harm = pitch_priority(candidates, f0_target, pool.f0_hz)[:, : cfg.topk]
        if cfg.concat_weight is not None:
            pitch = PitchCost(f0_target, pool.f0_hz, sticky_switch_off=cfg.sticky_concat_switch)
            with self._timed("reselect"):
                indices_harm = reselect(indices_harm, query, table, cfg.concat_weight, pitch, neighbours)
        with self._timed("optimise"):
            weights_harm = self._weights(indices_harm, harm_table, HARMONIC_SMOOTHNESS, True, settings, neighbours)
        result.indices_harm = indices_harm
        result.weights_harm = weights_harm.float()
        result.amps = weighted_sum(indices_harm, weights_harm, harm_table).float()
        return result

    def _shifted_f0(self, source_f0_hz: torch.Tensor, pool_f0_hz: torch.Tensor) -> torch.Tensor:
        shift = self.config.pitch_shift if self.kind.uses_pitch else None
        if isinstance(shift, str):
            if not bool((source_f0_hz > 0).any()):
                raise ValueError("the source has no voiced frame: its median pitch is undefined")
            if not bool((pool_f0_hz > 0).any()):
                raise ValueError("the reference has no voiced frame: its median pitch is undefined")
        return apply_pitch_shift(source_f0_hz, pool_f0_hz, shift)[0]

    def _weights(
        self,
        indices: torch.Tensor,
        table: torch.Tensor,
        alpha: float,
        smooth: bool,
        settings: OptimiserSettings,
        neighbours: Neighbours,
    ) -> torch.Tensor:
        if smooth and self.config.optimise_weights:
            return optimise_weights(indices, table, alpha, settings, neighbours)
        k = indices.shape[1]
        return torch.full(indices.shape, 1.0 / k, dtype=table.dtype)

    # ----------------------------------------------------------------------------- vocoding
    @torch.inference_mode()
    def vocode(self, result: MatchResult) -> torch.Tensor:
        """Waveform (T * 320,) float32 on the CPU from a match result."""
        if self.vocoder is None:
            raise RuntimeError("this converter was built without a vocoder: it can match, not vocode")
        with self._timed("vocode"):
            amps = None if result.amps is None else result.amps[None].to(self.device)
            wav = self.vocoder(result.feats[None].to(self.device), result.f0_hz[None].to(self.device), amps)
        return wav.reshape(-1).float().cpu()

    def convert(self, source: torch.Tensor | SourceFeatures, pool: ReferencePool) -> torch.Tensor:
        """Sing the source in the pool's voice.

        Args:
            source: (L,) 16 kHz waveform, or its precomputed `SourceFeatures`.
            pool: the target singer's `ReferencePool`.

        Returns:
            (T * 320,) float32 waveform at 16 kHz.
        """
        return self.vocode(self.match(source, pool))

    def _timed_call(self, stage: str, fn: Callable[..., T], *args: object) -> T:
        with self._timed(stage):
            return fn(*args)

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


def _ratio(source_f0_hz: torch.Tensor, shifted_f0_hz: torch.Tensor) -> float:
    voiced = source_f0_hz > 0
    if not bool(voiced.any()):
        return 1.0
    return float((shifted_f0_hz[voiced].double() / source_f0_hz[voiced].double()).median())


def output_samples(num_frames: int) -> int:
    """Length of the converted waveform for `num_frames` source frames."""
    return num_frames * HOP_LENGTH
