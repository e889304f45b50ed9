"""Streaming conversion: kNN-SVC block by block, as audio arrives, with a fixed latency.

This is the streaming driver of the per-block method in `knnsvc.blocks` (the offline driver is
`knnsvc.pipeline.KnnSvc`): frame selection with the reselection carried, summing weights, the
index_rate/protect blends, harmonic amplitudes, the vocoder with its margins and the carried
excitation phase, and the loudness following are the same code. What is here is only what is
streaming: the sliding WavLM and F0 windows, the lookahead and its provisionally matched frames,
and the SOLA-aligned join of the blocks.

    source block ─► WavLM over [left context | block | lookahead] ─► the block's frames
                 └► F0 over [F0 context | block | lookahead]        ─► running pitch shift
    frames ─► kNN in the cached pool ─► reselection (carried over from the last block) ─►
    weights optimised on the block, joined to the last frame already out ─► vocoder over
    [receptive field | crossfade | block | lookahead] ─► SOLA-aligned crossfade ─► output

`StreamingConverter.push` takes 16 kHz samples in chunks of any size and returns the converted
samples that are ready; `flush` returns the rest. Concatenated, the outputs are aligned with the
input (output sample i sings input sample i) and as long as an offline conversion (T frames of
the vocoder's `samples_per_frame`: 320 * floor(L / 320) samples at 16 kHz; a vocoder of another
output rate streams at its rate); each block comes out `algorithmic_latency_ms` after its last
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
  matched provisionally (plain mean of the first k, no reselection, blended with the source's
  features as the settings say), so only the last frames of each block, which the next block's
  crossfade replaces, depend on the lookahead.
- `rms_mix` (loudness following): each output frame's gain compares the source's and the
  output's loudness over 0.5 s windows centred on it, as offline; the stream computes it over
  the frames it has: the vocoder's window (by default the receptive field plus the 0.5 s window
  of past frames, and up to as many lookahead frames). So with less than 260 ms of lookahead the
  window of the last frames of a block is cut at the end of the lookahead (fewer frames, as at
  the end of a recording), and its lookahead frames are the provisionally matched ones; with the
  whole input as lookahead the gains are the offline ones.
- Every other `MatchConfig` option has its offline meaning; `max_opt_iters` is capped at
  `BLOCK_OPT_ITERS` per block. An F0 curve given as `f0_hz` replaces the F0 windows.

What a step computes (``incremental=True``, the default): only what the last step did not, or
what its output does not read, so the output is the window-by-window one up to float rounding
(tested at >= 100 dB against ``incremental=False``, which computes every window whole):

- WavLM's convolutional front end runs on the new samples only: its frames are frame-local in
  WavLM-Large's layer_norm mode (frame j reads samples 320 j .. 320 j + 399 and nothing else), so
  the frames of the context whose samples had all arrived are kept from the last step. The
  transformer still runs on the whole window (attention and its positional convolution span it).
  A group-norm ("default" mode) front end normalises over the whole window: recomputed whole.
- F0 runs on a thread beside WavLM (Harvest and Dio release the GIL, or wait on their worker
  processes). It is still extracted over its whole window: Harvest and Dio are not frame-local
  (they remove the window's mean and smooth and track over it), so cutting it to the new samples
  would change the F0; `f0_context_s` is the setting that trades that.
- The vocoder reads its whole window (receptive field | crossfade | block | lookahead), but its
  upsampling stages, where its work is, run only on the frames the join reads (crossfade, block
  and one frame each side for SOLA) and their margins (`hifigan.generator.keep_margins`; with
  `rms_mix` the loudness window too). Activations of the last step cannot be reused: an
  activation that is final (no provisionally matched lookahead frame in its receptive field)
  lies at least ~12 frames before the block, where no emitted sample reads it.

Shape letters: T frames (50 Hz), D feature dim, K neighbours, H harmonics, L samples (16 kHz).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from knnsvc.audio import MEDIAN_UNDEFINED, no_voiced_frames
from knnsvc.blocks import BlockVocoder, FrameSelector, SummingWeights, check_pool, frame_energy, target_f0
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE
from knnsvc.pipeline import KnnSvc
from knnsvc.pool import ReferencePool

logger = logging.getLogger(__name__)

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

RTF_WINDOW_STEPS = 10
"""Steps of `push` the running real-time factor is the median of (the live warning waits for as many)."""

RTF_WARN_EVERY_S = 10.0
"""While a live stream stays slower than real time, the warning is repeated every this many seconds of input."""

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
    energy: torch.Tensor | None = None  # (n,) float64 source frame energies (rms_mix)

    @property
    def stop(self) -> int:
        return self.first + self.f0_hz.shape[0]

    def append(self, feats: torch.Tensor, f0_hz: torch.Tensor, amps: torch.Tensor | None,
               energy: torch.Tensor | None) -> None:
        self.feats = feats if self.feats is None else torch.cat([self.feats, feats])
        self.f0_hz = torch.cat([self.f0_hz, f0_hz])
        if amps is not None:
            self.amps = amps if self.amps is None else torch.cat([self.amps, amps])
        if energy is not None:
            self.energy = energy if self.energy is None else torch.cat([self.energy, energy])

    def rows(
        self, start: int, stop: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Features, target F0, amplitudes and energies of frames start..stop-1."""
        rows = slice(start - self.first, stop - self.first)
        assert self.feats is not None
        return (self.feats[rows], self.f0_hz[rows], None if self.amps is None else self.amps[rows],
                None if self.energy is None else self.energy[rows])

    def target_f0(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start,) target F0 of frames start..stop-1 (for the excitation phase)."""
        return self.f0_hz[start - self.first : stop - self.first]

    def keep_from(self, start: int) -> None:
        """Forget the rows before frame `start`."""
        drop = max(0, start - self.first)
        if drop:
            assert self.feats is not None
            self.feats, self.f0_hz = self.feats[drop:], self.f0_hz[drop:]
            if self.amps is not None:
                self.amps = self.amps[drop:]
            if self.energy is not None:
                self.energy = self.energy[drop:]
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
        vocoder_context_frames: past frames the vocoder sees (default: its receptive field, plus
            the loudness window with `rms_mix`, which makes the left side exact).
        keep_features: keep every block's WavLM features in `source_features` (to measure how
            far the windowed features move from offline ones).
        f0_hz: (T,) the source's F0 over the whole input (e.g. read from an F0 curve file), used
            instead of extracting it per window; it must cover every frame pushed.
        incremental: compute only what the last step did not (see "What a step computes" in the
            module docstring): the same output up to float rounding. False: every window is
            computed whole, as before (the reference the incremental path is tested against).
        live: the input arrives in real time (a microphone): log a WARNING when the running
            real-time factor exceeds 1 (the output would fall behind the input), once, and again
            every `RTF_WARN_EVERY_S` seconds of input while it stays above 1.

    Attributes:
        compute_seconds: compute time of every step, for real-time factors.
        real_time_factor: the running step real-time factor (`running_rtf`).
        source_features: the blocks' (B, D) WavLM features, with `keep_features`.
        semitones: the transposition applied in the last step.

    Raises:
        TypeError: `f0_hz` is not a tensor; `pool` not a `ReferencePool`.
        ValueError: one line naming the setting that cannot work: durations that are not whole
            frames or out of range, a converter without a vocoder, a pool the converter cannot
            use (too short, another encoder, another width, without the matching layers, or
            unvoiced under an automatic shift), matching layers deeper than the encoder, or an
            `f0_hz` that is not a finite, non-negative (T,) curve.
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
        f0_hz: torch.Tensor | None = None,
        incremental: bool = True,
        live: bool = False,
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
        cfg = converter.config
        check_pool(pool, cfg, converter.encoder_id, converter.encoder.dim)
        self.match_layers = cfg.match_layers
        if self.match_layers and max(self.match_layers) > converter.encoder.wavlm.num_layers:
            raise ValueError(f"match_layers={self.match_layers}: the encoder has "
                             f"{converter.encoder.wavlm.num_layers} layers loaded")
        if isinstance(cfg.pitch_shift, str) and converter.kind.uses_pitch and not bool((pool.f0_hz > 0).any()):
            raise ValueError(f"the reference has {no_voiced_frames(MEDIAN_UNDEFINED)}")
        self.f0_curve = None if f0_hz is None else _checked_f0_curve(f0_hz)

        vocoder = converter.vocoder
        self.vocode = BlockVocoder(vocoder, self._target_f0_of, converter.device, cfg.rms_mix, converter.timer,
                                   precision=converter.network_precision)
        exact = self.vocode.margin  # receptive field (+ the loudness window with rms_mix)
        if vocoder_context_frames is not None and (
                isinstance(vocoder_context_frames, bool) or int(vocoder_context_frames) != vocoder_context_frames
                or vocoder_context_frames < 0):
            raise ValueError(f"vocoder_context_frames must be a whole number >= 0, got {vocoder_context_frames!r}")
        self.vocoder_context = exact if vocoder_context_frames is None else int(vocoder_context_frames)
        self.vocoder_lookahead = min(self.lookahead, exact)
        self.out_hop = self.vocode.hop_length  # output samples per frame (320 at 16 kHz)
        self.sola = round(sola_ms * self.vocode.sample_rate / 1000.0)  # in output samples

        self.selector = FrameSelector(cfg, converter.kind, pool, converter.device, timer=converter.timer)
        self.weights = SummingWeights(cfg, converter.kind, pool, max_iters=min(cfg.max_opt_iters, BLOCK_OPT_ITERS),
                                      join_blocks=True)

        self.received = torch.zeros(0)  # samples from `received_start` on
        self.received_start = 0
        self.n_samples = 0
        self.next_frame = 0  # first frame of the next block
        self.source_f0 = torch.zeros(0)  # the source's F0 of every frame matched so far
        self.history = _History()
        self.tail: torch.Tensor | None = None  # held-back output of the last `crossfade` frames
        self.emitted = 0
        self.compute_seconds: list[float] = []
        self.keep_features = keep_features
        self.source_features: list[torch.Tensor] = []
        self.semitones: float = 0.0
        self._windows: dict[tuple[str, int, int], torch.Tensor] = {}
        self._window_first = 0
        self.incremental = bool(incremental)
        self.live = bool(live)
        self._pushed_steps: list[float] = []  # compute seconds of the steps of `push`
        self._warned_at: float | None = None  # seconds of input when the last slow-stream warning was logged
        self._f0_thread: ThreadPoolExecutor | None = None
        self._f0_job: tuple[tuple[str, int, int], Future] | None = None
        self._f0_stop = threading.Event()  # set by `close`: abandons an F0 window still on the thread
        self._front: tuple[int, torch.Tensor] | None = None  # (global frame of row 0, (n, C) final front-end frames)

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

        Args:
            samples_16k: (L,) mono samples at 16 kHz (a tensor or an array).

        Returns:
            (L_out,) float32, possibly empty.

        Raises:
            ValueError: `samples_16k` is not of shape (L,), or holds NaN/inf samples.
        """
        samples = torch.as_tensor(samples_16k).detach()
        if samples.dim() != 1:
            raise ValueError(f"samples_16k must be mono samples of shape (L,), got shape {tuple(samples.shape)}")
        samples = samples.to(device="cpu", dtype=torch.float32)
        bad = int((~torch.isfinite(samples)).sum())
        if bad:
            raise ValueError(f"the input has {bad} non-finite samples (NaN or inf)")
        self.received = torch.cat([self.received, samples])
        self.n_samples += samples.numel()
        out = []
        while self.n_samples >= self._samples_needed(self.next_frame + self.block):
            out.append(self._step(self.next_frame + self.block, final=False))
            self._pushed_steps = (self._pushed_steps + self.compute_seconds[-1:])[-RTF_WINDOW_STEPS:]
            if self.live:
                self._warn_if_slow()
        return torch.cat(out) if out else torch.zeros(0)

    @property
    def real_time_factor(self) -> float:
        """The running step real-time factor: the median compute time of the last `RTF_WINDOW_STEPS`
        steps of `push` over the block's duration (0 before the first step). Above 1 the stream
        is slower than real time: a live input would fall behind."""
        if not self._pushed_steps:
            return 0.0
        return statistics.median(self._pushed_steps) / (self.block * FRAME_MS / 1000.0)

    def _warn_if_slow(self) -> None:
        """Log a WARNING when the running RTF is above 1 over a full window of steps; again every
        `RTF_WARN_EVERY_S` seconds of input while it stays there, at once after it recovered."""
        if len(self._pushed_steps) < RTF_WINDOW_STEPS:
            return
        rtf = self.real_time_factor
        heard = self.next_frame * FRAME_MS / 1000.0
        if rtf <= 1.0:
            self._warned_at = None
        elif self._warned_at is None or heard - self._warned_at >= RTF_WARN_EVERY_S - 1e-9:
            self._warned_at = heard
            logger.warning("streaming is slower than real time: step RTF %.2f (median of the last %d steps of "
                           "%.0f ms) at %.1f s: the output falls behind the input; a longer block, less "
                           "context, or a faster F0 extractor lowers it", rtf, RTF_WINDOW_STEPS,
                           self.block * FRAME_MS, heard)

    def flush(self) -> torch.Tensor:
        """Convert what is left (the last, possibly partial block) and return the rest of the output."""
        total = self._total_frames()
        out = []
        while self.next_frame < total:
            out.append(self._step(min(self.next_frame + self.block, total), final=True))
        if self.tail is not None:
            out.append(self.tail)
            self.emitted += self.tail.numel()
            self.tail = None
        return torch.cat(out) if out else torch.zeros(0)

    def _total_frames(self) -> int:
        """Frames of the input so far, as the offline encoder counts them."""
        return self.converter.encoder.num_frames(self.n_samples)

    def _samples_needed(self, stop: int) -> int:
        """Input samples before a block ending at frame `stop` can be converted."""
        return HOP_LENGTH * (stop + self.lookahead - 1) + WAVLM_RECEPTIVE_SAMPLES

    # ----------------------------------------------------------------------------- one step
    def _step(self, stop: int, final: bool) -> torch.Tensor:
        tick = time.perf_counter()
        cfg = self.converter.config
        start = self.next_frame
        total = self._total_frames()
        seen = min(stop + self.lookahead, total)  # frames with features this step
        window_end = min(self.n_samples, self._samples_needed(stop)) if not final else self.n_samples
        # WavLM drops a window of at most one hop: a last window that short reads one more past frame
        first_wavlm = max(0, start - self.context)
        if window_end - first_wavlm * HOP_LENGTH <= HOP_LENGTH:
            first_wavlm = max(0, first_wavlm - 1)

        f0_first = max(0, start - self.f0_context)
        self._start_f0(f0_first, window_end)
        with self.converter.cores_shared_with_f0() if self._f0_job is not None else contextlib.nullcontext():
            feats, keys = self._wavlm(first_wavlm, window_end, start, seen)  # (seen - start, D) each
        f0_hz = self._f0(f0_first, window_end, start, seen)  # (seen - start,)
        n_new = stop - start
        shifted, self.semitones = target_f0(cfg, self.converter.kind, torch.cat([self.source_f0, f0_hz]),
                                            self.pool.f0_hz, running=True)
        f0_target = shifted[start:]  # frames start..seen
        self.source_f0 = torch.cat([self.source_f0, f0_hz[:n_new]])
        energy = None  # (seen - start,) source frame energies, for rms_mix
        if cfg.rms_mix > 0:
            first_sample = start * HOP_LENGTH - self.received_start
            energy = frame_energy(self.received[first_sample : first_sample + (seen - start) * HOP_LENGTH],
                                  seen - start)

        if self.keep_features:
            self.source_features.append(feats[:n_new].clone())
        block = slice(0, n_new)
        chosen = self.selector.select(keys[block], f0_target[block])
        weights = self.weights.for_features(chosen.indices_wavlm)
        block_feats = self.weights.features(chosen.indices_wavlm, weights, feats[block], f0_hz[block])
        block_amps = None
        if chosen.indices_harm is not None:
            block_amps = self.weights.amplitudes(chosen.indices_harm, self.weights.for_harmonics(chosen.indices_harm))
        self.history.append(block_feats, f0_target[block], block_amps, None if energy is None else energy[block])

        ahead = slice(n_new, min(seen, stop + self.vocoder_lookahead) - start)
        guess = self.selector.provisional(keys[ahead], f0_target[ahead])
        uniform = self.weights.uniform(guess.indices_wavlm)
        ahead_feats = self.weights.features(guess.indices_wavlm, uniform, feats[ahead], f0_hz[ahead])
        ahead_amps = None if guess.indices_harm is None else self.weights.amplitudes(guess.indices_harm, uniform)

        wav = self._vocode(start, stop, ahead_feats, f0_target[ahead], ahead_amps,
                           None if energy is None else energy[ahead])
        out = self._join(wav, start, stop, last=final and stop == total)
        self.next_frame = stop
        keep = max(0, stop - self.crossfade - self.vocoder_context)
        self.vocode.phase.cycles_before(keep)  # carry the phase past the rows forgotten next
        self.history.keep_from(keep)
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
        """The source's F0 of frames start..stop-1: from `f0_hz` when given, else over the window."""
        if self.f0_curve is not None:
            if self.f0_curve.shape[0] < stop:
                raise ValueError(f"f0_hz covers {self.f0_curve.shape[0]} frames, but the input has reached "
                                 f"{stop} frames ({stop * HOP_LENGTH / SAMPLE_RATE:.2f} s)")
            return self.f0_curve[start:stop]
        window = self._window_features("f0", first_sample_frame, end)
        return window[start - first_sample_frame : stop - first_sample_frame]

    def _window_features(self, what: str, first_frame: int, end: int) -> torch.Tensor:
        """WavLM features or F0 of samples [320 first_frame, end) (cached while the window repeats)."""
        key = (what, first_frame, end)
        if key not in self._windows:
            self._windows = {k: v for k, v in self._windows.items() if k[0] != what}
            samples = self.received[first_frame * HOP_LENGTH - self.received_start : end - self.received_start]
            if what == "f0":
                pending, self._f0_job = self._f0_job, None
                if pending is not None and pending[0] == key:
                    self._windows[key] = pending[1].result()
                else:
                    self._windows[key] = self.converter.f0(samples, None)
            elif self.incremental and HOP_LENGTH < samples.numel() <= self.converter.encoder.chunk_samples:
                self._windows = {k: v for k, v in self._windows.items() if k[0] == "f0"}
                feats, keys = self._encode_window(samples, first_frame, end)
                self._windows[("wavlm", first_frame, end)] = feats
                if keys is not None:
                    self._windows[("match", first_frame, end)] = keys
            elif self.match_layers:  # one pass gives both
                pairs = list(self.converter.encoder.chunks_with_matching(samples, self.match_layers))
                self._windows = {k: v for k, v in self._windows.items() if k[0] == "f0"}
                self._windows[("wavlm", first_frame, end)] = torch.cat([p[0] for p in pairs]).cpu()
                self._windows[("match", first_frame, end)] = torch.cat([p[1] for p in pairs]).cpu()
            else:
                self._windows[key] = self.converter.encoder(samples.to(self.converter.device)).float().cpu()
        return self._windows[key]

    def _start_f0(self, first_frame: int, end: int) -> None:
        """`incremental`: start the F0 of the window [320 first_frame, end) on a thread, to run
        while WavLM does (the extractors release the GIL or wait on their worker processes)."""
        key = ("f0", first_frame, end)
        if not self.incremental or self.f0_curve is not None or key in self._windows:
            return
        if self._f0_thread is None:
            self._f0_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knnsvc-stream-f0")
        samples = self.received[first_frame * HOP_LENGTH - self.received_start : end - self.received_start]
        extract = self.converter.f0
        stop = {"stop": self._f0_stop} if "stop" in _parameters(extract) else {}
        self._f0_job = (key, self._f0_thread.submit(extract, samples, None, **stop))

    def close(self) -> None:
        """End the F0 thread (an F0 window still running is abandoned). Call it when the stream
        ends early (an interrupt, an error); `with StreamingConverter(...) as stream:` does. After
        `flush` there is nothing left running, and closing again does nothing."""
        self._f0_stop.set()
        if self._f0_thread is not None:
            self._f0_thread.shutdown(wait=True, cancel_futures=True)
            self._f0_thread = None
        self._f0_job = None

    def __enter__(self) -> StreamingConverter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _encode_window(self, samples: torch.Tensor, first_frame: int,
                       end: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """WavLM features (and matching features) of the window of `samples` = [320 first_frame, end),
        its first front-end frames taken from the last window where they were computed from the
        same samples (a frame-local front end only; `_front` keeps the frames whose 400 samples
        were all received)."""
        encoder = self.converter.encoder
        prefix = None
        if encoder.frame_local and self._front is not None:
            cached_first, frames = self._front
            skip = first_frame - cached_first
            if 0 <= skip < frames.shape[0]:
                prefix = frames[skip : skip + samples.numel() // HOP_LENGTH]
        front, feats, keys = encoder.encode_window(samples, prefix, self.match_layers or ())
        if encoder.frame_local:  # frames whose samples [320 g, 320 g + 400) all lie before `end`
            final = max(0, min(front.shape[0], (end - WAVLM_RECEPTIVE_SAMPLES) // HOP_LENGTH - first_frame + 1))
            self._front = (first_frame, front[:final])
        return feats.cpu(), None if keys is None else keys.cpu()

    def _vocode(self, start: int, stop: int, ahead_feats: torch.Tensor, ahead_f0: torch.Tensor,
                ahead_amps: torch.Tensor | None, ahead_energy: torch.Tensor | None) -> torch.Tensor:
        """Waveform of frames [first, stop + ahead) with first = start - crossfade - context (>= 0);
        `incremental`: of frames [start - crossfade - 1, stop + 1) only (the SOLA shift is at most
        a frame), from the vocoder over the same window (`BlockVocoder` with ``keep``)."""
        first = max(self.history.first, start - self.crossfade - self.vocoder_context, 0)
        feats, f0_hz, amps, energy = self.history.rows(first, stop)
        feats, f0_hz = torch.cat([feats, ahead_feats]), torch.cat([f0_hz, ahead_f0])
        if amps is not None and ahead_amps is not None:
            amps = torch.cat([amps, ahead_amps])
        if energy is not None and ahead_energy is not None:
            energy = torch.cat([energy, ahead_energy])
        keep = None
        if self.incremental:  # only the frames `_join` reads: the block, the crossfade and the SOLA range
            keep = (max(first, start - self.crossfade - 1) - first, min(first + feats.shape[0], stop + 1) - first)
        self._window_first = first + (0 if keep is None else keep[0])
        return self.vocode(first, feats, f0_hz, amps, energy, keep=keep)

    def _target_f0_of(self, start: int, stop: int) -> torch.Tensor:
        return self.history.target_f0(start, stop)

    def _join(self, wav: torch.Tensor, start: int, stop: int, last: bool) -> torch.Tensor:
        """Crossfade the last block's held-back tail into this block; hold back the new tail.

        `wav` covers frames from `self._window_first`; the emitted samples are frames
        [start - crossfade, stop - crossfade) (through `stop` for the last block), shifted by the
        SOLA offset that best aligns the overlap with the tail.
        """
        offset = (start - self._window_first) * self.out_hop  # sample of frame `start` in wav
        fade = self.crossfade * self.out_hop
        # the last block keeps its end where the input ends (no shift), so the length stays exact;
        # a later shift needs that many samples after `stop` for the next tail
        room_after = wav.numel() - (stop - self._window_first) * self.out_hop
        shift = 0 if self.tail is None or last else self._sola(wav, offset - fade, room_after)
        end = (stop - self._window_first - (0 if last else self.crossfade)) * self.out_hop + shift
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
        keep_frame = max(0, self.next_frame - max(self.context, self.f0_context, 1))  # 1: see `_step`
        drop = keep_frame * HOP_LENGTH - self.received_start
        if drop > 0:
            self.received = self.received[drop:]
            self.received_start += drop


def _checked_f0_curve(f0_hz: object) -> torch.Tensor:
    """`f0_hz` as a (T,) float32 CPU tensor, or a one-line error naming it."""
    if not isinstance(f0_hz, torch.Tensor):
        raise TypeError(f"f0_hz must be a (T,) tensor of F0 in Hz, got {type(f0_hz).__name__}")
    if f0_hz.dim() != 1:
        raise ValueError(f"f0_hz must be a (T,) curve, got shape {tuple(f0_hz.shape)}")
    curve = f0_hz.detach().to(device="cpu", dtype=torch.float32)
    if not bool(torch.isfinite(curve).all()) or bool((curve < 0).any()):
        raise ValueError("f0_hz must hold finite frequencies >= 0 Hz (0 = unvoiced)")
    return curve


def _parameters(function: object) -> set[str]:
    """The keyword names `function` takes (none when it cannot be inspected)."""
    try:
        return set(inspect.signature(function).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return set()
