"""Streaming conversion: kNN-SVC block by block, as audio arrives, with a fixed latency.

    source block ─► WavLM over [left context | block | lookahead] ─► the block's frames
                 └► F0 over [F0 context | block | lookahead]        ─► running pitch shift
    frames ─► kNN in the cached pool ─► reselection (carried over from the last block) ─►
    weights optimised on the block, joined to the last frame already out ─► vocoder over
    [receptive field | crossfade | block | lookahead] ─► SOLA-aligned crossfade ─► output

`StreamingConverter.push` takes 16 kHz samples in chunks of any size and returns the converted
samples that are ready; `flush` returns the rest. Concatenated, the outputs are aligned with the
input (output sample i sings input sample i) and as long as an offline conversion
(320 * floor(L / 320) samples); each block comes out `algorithmic_latency_ms` after its last
input sample arrived (plus the compute time): block + lookahead + crossfade.

What differs from offline `KnnSvc.convert`, and what does not:

- WavLM sees `context_s` of past audio and `lookahead_ms` of future audio instead of its 30 s
  chunk; Harvest sees `f0_context_s` and the lookahead. With context and lookahead covering the
  whole input, features and F0 are the offline ones, and with ``concat_weight=None`` (no
  post-opt) the output equals the offline output (tested at >= 60 dB SI-SNR).
- The reselection is causal, so it carries over exactly. The weight optimisation runs per block
  (the block's frames, joined to the last frame already out, whose weights stay fixed, at most
  `BLOCK_OPT_ITERS` iterations) instead of over the whole source, so post-opt streaming differs
  from offline post-opt.
- "auto" pitch shifts use the reference pool's median and the running median of the source's
  voiced log-F0 so far (lookahead included): it settles as singing accumulates (within a few
  seconds of voiced audio; until the first voiced frame there is no shift). "auto-octave"
  rounds it to octaves, so it changes only when the running median crosses a half-octave.
- The vocoder runs on its receptive field of past frames (exact) plus the lookahead frames
  matched provisionally (plain mean of the first k, no reselection), so only the last
  frames of each block, which the next block's crossfade replaces, depend on the lookahead.

Shape letters: T frames (50 Hz), D feature dim, K neighbours, H harmonics, L samples (16 kHz).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from knnsvc.config import HOP_LENGTH, PROTECT_OFF, SAMPLE_RATE
from knnsvc.harmonics import running_cycles
from knnsvc.matching import (
    HARMONIC_SMOOTHNESS,
    WAVLM_SMOOTHNESS,
    Neighbours,
    OptimiserSettings,
    PitchCost,
    Reselector,
    cosine_topk,
    optimise_weights,
    pitch_priority,
    unit_rows,
    weighted_sum,
)
from knnsvc.pipeline import KnnSvc
from knnsvc.pitch import median_log_f0, shift_semitones
from knnsvc.pool import ReferencePool

FRAME_MS = 1000.0 * HOP_LENGTH / SAMPLE_RATE
"""20 ms: every duration of the stream is a whole number of frames."""

WAVLM_RECEPTIVE_SAMPLES = 400
"""Samples one WavLM frame reads (frame j covers samples 320 j .. 320 j + 399)."""

DEFAULT_BLOCK_MS = 160.0
DEFAULT_LOOKAHEAD_MS = 80.0
DEFAULT_CONTEXT_S = 1.0
DEFAULT_CROSSFADE_MS = 40.0
DEFAULT_SOLA_MS = 8.0
DEFAULT_F0_CONTEXT_S = 0.5
"""Defaults: 280 ms of algorithmic latency (Seed-VC's is about 300 ms)."""

BLOCK_OPT_ITERS = 200
"""Iteration cap of the per-block weight optimisation (a block has a few frames: the reference's
stopping rule alone lets it run ~350 iterations of mostly per-call overhead)."""


@dataclass
class _History:
    """The last frames already matched: what the vocoder's left context and the phase need."""

    first: int = 0  # global index of row 0
    feats: torch.Tensor | None = None  # (n, D) float32 vocoder features
    f0_hz: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (n,) target f0
    amps: torch.Tensor | None = None  # (n, H)

    @property
    def stop(self) -> int:
        return self.first + self.f0_hz.shape[0]

    def append(self, feats: torch.Tensor, f0_hz: torch.Tensor, amps: torch.Tensor | None) -> None:
        self.feats = feats if self.feats is None else torch.cat([self.feats, feats])
        self.f0_hz = torch.cat([self.f0_hz, f0_hz])
        if amps is not None:
            self.amps = amps if self.amps is None else torch.cat([self.amps, amps])

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        rows = slice(start - self.first, stop - self.first)
        assert self.feats is not None
        return self.feats[rows], self.f0_hz[rows], None if self.amps is None else self.amps[rows]

    def keep_from(self, start: int) -> None:
        """Forget the rows before frame `start`."""
        drop = max(0, start - self.first)
        if drop:
            assert self.feats is not None
            self.feats, self.f0_hz = self.feats[drop:], self.f0_hz[drop:]
            if self.amps is not None:
                self.amps = self.amps[drop:]
            self.first += drop


class StreamingConverter:
    """Block-by-block kNN-SVC conversion of a live or simulated 16 kHz stream.

    Args:
        converter: the `KnnSvc` (models and `MatchConfig`); its encoder runs on windows.
        pool: the target singer's `ReferencePool` (built once, e.g. from the pool cache).
        block_ms: new audio per step (a multiple of 20 ms).
        lookahead_ms: future audio WavLM and F0 see beyond the block (latency).
        context_s: past audio WavLM sees before the block (compute, not latency).
        crossfade_ms: overlap of consecutive blocks' outputs (latency); at most the block.
        sola_ms: the crossfade's alignment search range, +- this many ms.
        f0_context_s: past audio the F0 extractor sees (Harvest is slow on long windows).
        vocoder_context_frames: past frames the vocoder sees (default: its receptive field,
            which makes the left side exact).
        keep_features: keep every block's WavLM features in `source_features` (to measure how
            far the windowed features move from offline ones).

    Attributes:
        compute_seconds: compute time of every step, for real-time factors.
        source_features: the blocks' (B, D) WavLM features, with `keep_features`.
    """

    def __init__(
        self,
        converter: KnnSvc,
        pool: ReferencePool,
        block_ms: float = DEFAULT_BLOCK_MS,
        lookahead_ms: float = DEFAULT_LOOKAHEAD_MS,
        context_s: float = DEFAULT_CONTEXT_S,
        crossfade_ms: float = DEFAULT_CROSSFADE_MS,
        sola_ms: float = DEFAULT_SOLA_MS,
        f0_context_s: float = DEFAULT_F0_CONTEXT_S,
        vocoder_context_frames: int | None = None,
        keep_features: bool = False,
    ) -> None:
        if converter.vocoder is None:
            raise ValueError("streaming needs a converter with a vocoder")
        self.converter = converter
        self.pool = pool
        self.block = self._frames("block_ms", block_ms, minimum=1)
        self.lookahead = self._frames("lookahead_ms", lookahead_ms)
        self.context = self._frames("context_s", context_s * 1000.0, whole=False)
        self.crossfade = self._frames("crossfade_ms", crossfade_ms, minimum=1)
        self.f0_context = self._frames("f0_context_s", f0_context_s * 1000.0, whole=False)
        if self.crossfade > self.block:
            raise ValueError(f"crossfade_ms ({crossfade_ms:g}) must not exceed block_ms ({block_ms:g})")
        if not (math.isfinite(sola_ms) and 0 <= sola_ms <= FRAME_MS):
            raise ValueError(f"sola_ms must be in [0, {FRAME_MS:g}], got {sola_ms}")
        self.sola = round(sola_ms * SAMPLE_RATE / 1000.0)
        receptive = converter.vocoder.context_frames
        self.vocoder_context = receptive if vocoder_context_frames is None else int(vocoder_context_frames)
        self.vocoder_lookahead = min(self.lookahead, receptive)

        cfg = converter.config
        if pool.num_frames < cfg.n_candidates:
            raise ValueError(f"the reference is too short: {pool.num_frames} frames, at least {cfg.n_candidates}")
        self.dtype = torch.float64 if cfg.precision == "float64" else torch.float32
        self.match_layers = cfg.match_layers
        keys = pool.feats
        if self.match_layers:
            if pool.match_feats is None:
                raise ValueError(f"match_layers={self.match_layers}, but the reference pool was built without them")
            keys = pool.match_feats
        self.pool_unit = unit_rows(keys.to(device=converter.device, dtype=self.dtype))
        self.neighbours = Neighbours.of(pool.num_frames, pool.starts if cfg.respect_file_boundaries else None)
        kind = converter.kind
        self.smooth = kind.uses_harmonics or cfg.smooth_every_vocoder
        self.reselect_a = self.reselect_b = None
        if cfg.concat_weight is not None:
            if self.smooth:
                self.reselect_a = Reselector(self.pool_unit, cfg.concat_weight, neighbours=self.neighbours)
            if kind.uses_harmonics:
                pitch = PitchCost(None, pool.f0_hz, sticky_switch_off=cfg.sticky_concat_switch)
                self.reselect_b = Reselector(self.pool_unit, cfg.concat_weight, pitch, self.neighbours)
        self.optimiser = OptimiserSettings(max_iters=min(cfg.max_opt_iters, BLOCK_OPT_ITERS))
        self.reference_log_f0 = median_log_f0(pool.f0_hz) if bool((pool.f0_hz > 0).any()) else None

        self.received = torch.zeros(0)  # samples from `received_start` on
        self.received_start = 0
        self.n_samples = 0
        self.next_frame = 0  # first frame of the next block
        self.source_f0 = torch.zeros(0)  # the source's F0 of every frame matched so far
        self.history = _History()
        self.last_weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.phase_frame = 0
        self.phase_cycles = torch.zeros(1, dtype=torch.float64)
        self.tail: torch.Tensor | None = None  # held-back output of the last `crossfade` frames
        self.emitted = 0
        self.compute_seconds: list[float] = []
        self.keep_features = keep_features
        self.source_features: list[torch.Tensor] = []
        self.semitones: float = 0.0
        self._windows: dict[tuple[str, int, int], torch.Tensor] = {}

    @staticmethod
    def _frames(name: str, milliseconds: float, minimum: int = 0, whole: bool = True) -> int:
        """Frames in a duration; `whole` durations (latency) must be a multiple of 20 ms, the
        others (context) are rounded up."""
        if not math.isfinite(milliseconds) or milliseconds < 0:
            raise ValueError(f"{name} must be a finite duration >= 0, got {milliseconds}")
        frames = round(milliseconds / FRAME_MS) if whole else math.ceil(milliseconds / FRAME_MS - 1e-9)
        if whole and abs(frames * FRAME_MS - milliseconds) > 1e-6 * max(1.0, milliseconds):
            raise ValueError(f"{name} must be a multiple of {FRAME_MS:g} ms, got {milliseconds:g}")
        if frames < minimum:
            raise ValueError(f"{name} must be at least {minimum * FRAME_MS:g} ms, got {milliseconds:g}")
        return frames

    @property
    def algorithmic_latency_ms(self) -> float:
        """Block + lookahead + crossfade: how long after an input sample its output can come out."""
        return (self.block + self.lookahead + self.crossfade) * FRAME_MS

    # ----------------------------------------------------------------------------- stream
    def push(self, samples_16k: torch.Tensor) -> torch.Tensor:
        """Feed the next input samples (any number, finite); return the output that is ready.

        Returns:
            (L_out,) float32, possibly empty.
        """
        samples = torch.as_tensor(samples_16k, dtype=torch.float32).detach().cpu().reshape(-1)
        bad = int((~torch.isfinite(samples)).sum())
        if bad:
            raise ValueError(f"the input has {bad} non-finite samples (NaN or inf)")
        self.received = torch.cat([self.received, samples])
        self.n_samples += samples.numel()
        out = []
        while self.n_samples >= self._samples_needed(self.next_frame + self.block):
            out.append(self._step(self.next_frame + self.block, final=False))
        return torch.cat(out) if out else torch.zeros(0)

    def flush(self) -> torch.Tensor:
        """Convert what is left (the last, possibly partial block) and return the rest of the output."""
        total = self.n_samples // HOP_LENGTH
        out = []
        while self.next_frame < total:
            out.append(self._step(min(self.next_frame + self.block, total), final=True))
        if self.tail is not None:
            out.append(self.tail)
            self.emitted += self.tail.numel()
            self.tail = None
        return torch.cat(out) if out else torch.zeros(0)

    def _samples_needed(self, stop: int) -> int:
        """Input samples before a block ending at frame `stop` can be converted."""
        return HOP_LENGTH * (stop + self.lookahead - 1) + WAVLM_RECEPTIVE_SAMPLES

    # ----------------------------------------------------------------------------- one step
    def _step(self, stop: int, final: bool) -> torch.Tensor:
        tick = time.perf_counter()
        start = self.next_frame
        total = self.n_samples // HOP_LENGTH
        seen = min(stop + self.lookahead, total)  # frames with features this step
        window_end = min(self.n_samples, self._samples_needed(stop)) if not final else self.n_samples

        feats, keys = self._wavlm(max(0, start - self.context), window_end, start, seen)  # (seen - start, D) each
        f0_hz = self._f0(max(0, start - self.f0_context), window_end, start, seen)  # (seen - start,)
        n_new = stop - start
        ratio_f0 = self._shifted(torch.cat([self.source_f0, f0_hz]))[start:]  # target f0, frames start..seen
        self.source_f0 = torch.cat([self.source_f0, f0_hz[:n_new]])

        if self.keep_features:
            self.source_features.append(feats[:n_new].clone())
        block_feats, block_amps = self._match(feats[:n_new], keys[:n_new], ratio_f0[:n_new], f0_hz[:n_new])
        self.history.append(block_feats, ratio_f0[:n_new], block_amps)
        ahead = min(seen, stop + self.vocoder_lookahead) - stop
        ahead_feats, ahead_amps = self._provisional(keys[n_new : n_new + ahead], ratio_f0[n_new : n_new + ahead])

        wav = self._vocode(start, stop, ahead_feats, ratio_f0[n_new : n_new + ahead], ahead_amps)
        out = self._join(wav, start, stop, last=final and stop == total)
        self.next_frame = stop
        keep = stop - self.crossfade - self.vocoder_context
        self._advance_phase(max(0, keep))
        self.history.keep_from(max(0, keep))
        self._trim_input()
        self.compute_seconds.append(time.perf_counter() - tick)
        return out

    def _wavlm(self, first_sample_frame: int, end: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthesis and matching features (stop - start, D) of frames start..stop-1, from WavLM
        over the window (the same tensor twice unless `match_layers` are set)."""
        rows = slice(start - first_sample_frame, stop - first_sample_frame)
        feats = self._window_features("wavlm", first_sample_frame, end)[rows]
        keys = self._window_features("match", first_sample_frame, end)[rows] if self.match_layers else feats
        return feats, keys

    def _f0(self, first_sample_frame: int, end: int, start: int, stop: int) -> torch.Tensor:
        window = self._window_features("f0", first_sample_frame, end)
        return window[start - first_sample_frame : stop - first_sample_frame]

    def _window_features(self, what: str, first_frame: int, end: int) -> torch.Tensor:
        """WavLM features or F0 of samples [320 first_frame, end) (cached while the window repeats)."""
        key = (what, first_frame, end)
        if key not in self._windows:
            self._windows = {k: v for k, v in self._windows.items() if k[0] != what}
            samples = self.received[first_frame * HOP_LENGTH - self.received_start : end - self.received_start]
            if what == "f0":
                self._windows[key] = self.converter.f0(samples, None)
            elif self.match_layers:  # one pass gives both
                pairs = list(self.converter.encoder.chunks_with_matching(samples, self.match_layers))
                self._windows = {k: v for k, v in self._windows.items() if k[0] == "f0"}
                self._windows[("wavlm", first_frame, end)] = torch.cat([p[0] for p in pairs]).cpu()
                self._windows[("match", first_frame, end)] = torch.cat([p[1] for p in pairs]).cpu()
            else:
                self._windows[key] = self.converter.encoder(samples.to(self.converter.device)).float().cpu()
        return self._windows[key]

    def _shifted(self, f0_hz: torch.Tensor) -> torch.Tensor:
        """Target F0 of every frame seen, with the shift of this step (see the module docstring)."""
        shift = self.converter.config.pitch_shift if self.converter.kind.uses_pitch else None
        if shift is None:
            self.semitones = 0.0
            return f0_hz.clone()
        if isinstance(shift, float):
            self.semitones = shift
            return shift_semitones(f0_hz, shift)
        if self.reference_log_f0 is None or not bool((f0_hz > 0).any()):
            self.semitones = 0.0  # nothing voiced yet (or an unvoiced reference): no shift
            return f0_hz.clone()
        log_source = median_log_f0(f0_hz)
        interval = 12.0 * float(self.reference_log_f0 - log_source) / math.log(2.0)
        if shift == "auto":
            self.semitones = interval
            voiced = f0_hz > 0
            shifted = torch.zeros_like(f0_hz)
            shifted[voiced] = torch.exp(torch.log(f0_hz[voiced]) + self.reference_log_f0 - log_source)
            return shifted
        step = 12.0 if shift == "auto-octave" else 1.0
        self.semitones = step * round(interval / step)
        return shift_semitones(f0_hz, self.semitones)

    def _match(
        self, feats: torch.Tensor, keys: torch.Tensor, f0_target: torch.Tensor, f0_source: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block's vocoder features (B, D) and amplitudes (B, H), as `KnnSvc.match` makes them
        (`keys`: the features matched on; `feats`: the source's synthesis features, for blends)."""
        cfg = self.converter.config
        query = keys.to(device=self.converter.device, dtype=self.dtype)
        candidates = cosine_topk(query, self.pool_unit, cfg.n_candidates, pool_is_unit=True).cpu()
        query_unit = unit_rows(query)
        indices_a = candidates[:, : cfg.topk]
        if self.reselect_a is not None:
            indices_a = self.reselect_a(indices_a, query_unit)
        weights_a = self._weights("wavlm", indices_a, self.pool.feats, WAVLM_SMOOTHNESS, self.smooth)
        matched = weighted_sum(indices_a, weights_a, self.pool.feats, self.dtype)
        if cfg.blends_source:
            own = feats.to(self.dtype)
            matched = cfg.index_rate * matched + (1.0 - cfg.index_rate) * own
            if cfg.protect < PROTECT_OFF:
                keep = 1.0 - (1.0 - cfg.protect) * (f0_source <= 0).to(self.dtype)[:, None]
                matched = keep * matched + (1.0 - keep) * own
        amps = None
        if self.converter.kind.uses_harmonics:
            indices_b = pitch_priority(candidates, f0_target, self.pool.f0_hz)[:, : cfg.topk]
            if self.reselect_b is not None:
                indices_b = self.reselect_b(indices_b, query_unit, f0_target)
            weights_b = self._weights("harm", indices_b, self.pool.amps, HARMONIC_SMOOTHNESS, True)
            amps = weighted_sum(indices_b, weights_b, self.pool.amps, self.dtype).float()
        return matched.float(), amps

    def _weights(self, name: str, indices: torch.Tensor, table: torch.Tensor, alpha: float,
                 smooth: bool) -> torch.Tensor:
        """Optimised on the block joined to the last frame out (its weights fixed), or uniform."""
        k = indices.shape[1]
        if not (smooth and self.converter.config.optimise_weights):
            return torch.full(indices.shape, 1.0 / k, dtype=self.dtype)
        previous = self.last_weights.get(name)
        if previous is None:
            weights = optimise_weights(indices, table, alpha, self.optimiser, self.neighbours, self.dtype)
        else:
            joined = torch.cat([previous[0][None], indices])
            weights = optimise_weights(joined, table, alpha, self.optimiser, self.neighbours, self.dtype,
                                       fixed_first=previous[1])[1:]
        self.last_weights[name] = (indices[-1], weights[-1])
        return weights

    def _provisional(
        self, feats: torch.Tensor, f0_target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Lookahead frames (their matching features) matched without reselection or
        optimisation, for the vocoder's context only."""
        cfg = self.converter.config
        if feats.shape[0] == 0:
            return feats, None if not self.converter.kind.uses_harmonics else torch.zeros(0, self.pool.amps.shape[1])
        query = feats.to(device=self.converter.device, dtype=self.dtype)
        candidates = cosine_topk(query, self.pool_unit, cfg.n_candidates, pool_is_unit=True).cpu()
        uniform = torch.full((feats.shape[0], cfg.topk), 1.0 / cfg.topk, dtype=self.dtype)
        matched = weighted_sum(candidates[:, : cfg.topk], uniform, self.pool.feats, self.dtype).float()
        amps = None
        if self.converter.kind.uses_harmonics:
            indices = pitch_priority(candidates, f0_target, self.pool.f0_hz)[:, : cfg.topk]
            amps = weighted_sum(indices, uniform, self.pool.amps, self.dtype).float()
        return matched, amps

    def _vocode(self, start: int, stop: int, ahead_feats: torch.Tensor, ahead_f0: torch.Tensor,
                ahead_amps: torch.Tensor | None) -> torch.Tensor:
        """Waveform of frames [first, stop + ahead) with first = start - crossfade - context (>= 0)."""
        first = max(self.history.first, start - self.crossfade - self.vocoder_context, 0)
        feats, f0_hz, amps = self.history.rows(first, stop)
        feats, f0_hz = torch.cat([feats, ahead_feats]), torch.cat([f0_hz, ahead_f0])
        if amps is not None and ahead_amps is not None:
            amps = torch.cat([amps, ahead_amps])
        device = self.converter.device
        self._window_first = first
        vocoder = self.converter.vocoder
        assert vocoder is not None  # checked in __init__
        with torch.inference_mode():
            wav = vocoder(
                feats[None].to(device),
                f0_hz[None].to(device),
                None if amps is None else amps[None].to(device),
                self._cycles_before(first).to(device),
            )
        return wav.reshape(-1).float().cpu()

    def _cycles_before(self, frame: int) -> torch.Tensor:
        """(1,) excitation phase before `frame`, summed sample by sample as the offline signal's."""
        if frame > self.phase_frame:
            _, f0_hz, _ = self.history.rows(self.phase_frame, frame)
            return running_cycles(f0_hz[None], self.phase_cycles)[:, -1]
        return self.phase_cycles

    def _advance_phase(self, frame: int) -> None:
        if frame > self.phase_frame:
            self.phase_cycles = self._cycles_before(frame)
            self.phase_frame = frame

    def _join(self, wav: torch.Tensor, start: int, stop: int, last: bool) -> torch.Tensor:
        """Crossfade the last block's held-back tail into this block; hold back the new tail.

        `wav` covers frames from `self._window_first`; the emitted samples are frames
        [start - crossfade, stop - crossfade) (through `stop` for the last block), shifted by the
        SOLA offset that best aligns the overlap with the tail.
        """
        offset = (start - self._window_first) * HOP_LENGTH  # sample of frame `start` in wav
        fade = self.crossfade * HOP_LENGTH
        # the last block keeps its end where the input ends (no shift), so the length stays exact;
        # a later shift needs that many samples after `stop` for the next tail
        room_after = wav.numel() - (stop - self._window_first) * HOP_LENGTH
        shift = 0 if self.tail is None or last else self._sola(wav, offset - fade, room_after)
        end = (stop - self._window_first - (0 if last else self.crossfade)) * HOP_LENGTH + shift
        if self.tail is None:  # the first block: nothing to crossfade with
            out = wav[offset:end]
        else:
            begin = offset - fade + shift
            ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0.0, math.pi, fade))
            overlap = self.tail * (1.0 - ramp) + wav[begin : begin + fade] * ramp
            out = torch.cat([overlap, wav[begin + fade : end]])
        self.tail = None if last else wav[end : end + fade].clone()
        self.emitted += out.numel()
        return out

    def _sola(self, wav: torch.Tensor, at: int, room_after: int) -> int:
        """The shift in [-sola, sola] samples that best aligns wav[at + shift:] with the tail
        (at most `room_after` to the right, at least to the start of `wav` to the left)."""
        if self.sola == 0 or self.tail is None:
            return 0
        fade = self.tail.numel()
        low, high = max(-self.sola, -at), min(self.sola, room_after)
        if high < low:
            return 0
        tail = self.tail.double()
        best, best_score = 0, -math.inf
        for shift in range(low, high + 1):
            segment = wav[at + shift : at + shift + fade].double()
            denominator = float(segment.norm() * tail.norm())
            score = float(segment @ tail) / denominator if denominator > 0 else 0.0
            score -= 1e-9 * abs(shift)  # ties go to the smallest shift (0 when both agree)
            if score > best_score:
                best, best_score = shift, score
        return best

    def _trim_input(self) -> None:
        """Drop input samples no future window reads."""
        keep_frame = max(0, self.next_frame - max(self.context, self.f0_context))
        drop = keep_frame * HOP_LENGTH - self.received_start
        if drop > 0:
            self.received = self.received[drop:]
            self.received_start += drop
