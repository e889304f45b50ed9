"""One block of kNN-SVC: the frames of a block of source frames chosen and weighted, and the block
vocoded. The offline driver (`knnsvc.pipeline.KnnSvc`) and the streaming driver
(`knnsvc.streaming.StreamingConverter`) both run the method through these pieces, so every
matching control has one meaning in both:

    queries (B, D) ─► FrameSelector: cosine top-C in the pool, first K (pass A) and pitch
                      priority (pass B), autoregressive reselection (state carried across blocks)
                   ─► SummingWeights: weight optimisation (the whole source at once, or each block
                      joined to the last frame of the previous one), vocoder features blended with
                      the source's (index_rate, protect), harmonic amplitudes
                   ─► BlockVocoder: the vocoder over the block and its margins (receptive field,
                      loudness window), the excitation's phase carried by a PhaseCursor, the
                      loudness following the source (rms_mix)

Everything works in blocks: a driver feeds consecutive blocks of source frames in order, and the
carried state (reselection, fixed last weights, excitation phase) makes the blocks add up to the
whole-recording result.

Shape letters: T frames (50 Hz), B frames of a block, N pool frames, D feature dim, C candidates,
K neighbours averaged, H harmonics, L samples (16 kHz).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hifigan.excitation import running_cycles
from hifigan.generator import Vocoder, VocoderKind
from knnsvc.audio import MEDIAN_UNDEFINED, no_voiced_frames, too_short
from knnsvc.config import HOP_LENGTH, PROTECT_OFF, RMS_WINDOW_FRAMES, SAMPLE_RATE, MatchConfig
from knnsvc.matching import (
    HARMONIC_SMOOTHNESS,
    MATCH_BLOCK,
    WAVLM_SMOOTHNESS,
    Neighbours,
    OptimiserSettings,
    PitchCost,
    Reselector,
    cosine_topk,
    frame_blocks,
    optimise_weights,
    pitch_priority,
    unit_rows,
    weighted_sum,
)
from knnsvc.pitch import apply_pitch_shift
from knnsvc.pool import ReferencePool
from knnsvc.runtime import StageTimer, check_network_precision, network_autocast

ENERGY_BLOCK_FRAMES = 4096
"""Frames per block of `frame_energy` (10 MB of float64 samples at 320 samples a frame)."""


def matching_dtype(config: MatchConfig) -> torch.dtype:
    """The dtype of the matching arithmetic (`MatchConfig.precision`)."""
    return torch.float64 if config.precision == "float64" else torch.float32


def check_pool(pool: ReferencePool, config: MatchConfig, encoder_id: str | None, dim: int) -> None:
    """Refuse a pool this converter cannot match against, in one line.

    Args:
        encoder_id: the converter's encoder fingerprint (`KnnSvc.encoder_id`); a pool that
            records another one was built by another encoder. None: not checked.
        dim: D, the width of the source features the pool is matched with.

    Raises:
        TypeError: `pool` is not a `ReferencePool`.
        ValueError: too few frames, another encoder, features of another width, or matching
            layers asked for that the pool lacks.
    """
    if not isinstance(pool, ReferencePool):
        raise TypeError(f"pool must be a ReferencePool, got {type(pool).__name__}")
    if pool.num_frames < config.n_candidates:
        needed = config.n_candidates * HOP_LENGTH / SAMPLE_RATE
        raise ValueError(f"the reference is {too_short(pool.seconds, needed, frames=pool.num_frames)}")
    if encoder_id is not None and pool.encoder_id is not None and pool.encoder_id != encoder_id:
        raise ValueError(
            f"the reference pool was built by another encoder (pool: {pool.encoder_id}, converter: {encoder_id}); "
            "rebuild it with this converter"
        )
    if pool.feats.shape[1] != dim:
        raise ValueError(
            f"the reference pool holds {pool.feats.shape[1]}-dimensional features, the source's are {dim}-dimensional "
            "(was it built by another encoder?)"
        )
    if config.match_layers and pool.match_feats is None:
        raise ValueError(f"match_layers={config.match_layers}, but the reference pool was analysed without them")


def target_f0(
    config: MatchConfig, kind: VocoderKind, source_f0_hz: torch.Tensor, pool_f0_hz: torch.Tensor, running: bool = False
) -> tuple[torch.Tensor, float]:
    """The pitch the output sings at: the source F0 shifted as `config.pitch_shift` says.

    Args:
        source_f0_hz: (T,) the source's F0 (offline: all of it; streaming: every frame heard so far).
        pool_f0_hz: (N,) the reference's F0.
        running: streaming: an automatic shift with no voiced source frame yet keeps the source
            pitch (0 semitones) instead of raising.

    Returns:
        (T,) target F0 in the dtype of `source_f0_hz`, and the transposition in semitones.

    Raises:
        ValueError: an automatic shift, and the source (unless `running`) or the reference has no
            voiced frame.
    """
    shift = config.pitch_shift if kind.uses_pitch else None
    if isinstance(shift, str):
        if not bool((source_f0_hz > 0).any()):
            if running:
                return source_f0_hz.clone(), 0.0
            raise ValueError(f"the source has {no_voiced_frames(MEDIAN_UNDEFINED)}")
        if not bool((pool_f0_hz > 0).any()):
            raise ValueError(f"the reference has {no_voiced_frames(MEDIAN_UNDEFINED)}")
    return apply_pitch_shift(source_f0_hz, pool_f0_hz, shift)


@dataclass
class Selection:
    """The pool frames chosen for a block of B source frames.

    Attributes:
        candidates: (B, C) cosine-nearest pool rows, nearest first.
        indices_wavlm: (B, K) rows averaged into the vocoder features (pass A).
        indices_harm: (B, K) rows averaged into the harmonic amplitudes (pass B; None unless the
            vocoder is harmonic).
    """

    candidates: torch.Tensor
    indices_wavlm: torch.Tensor
    indices_harm: torch.Tensor | None


class FrameSelector:
    """Chooses the pool frames of consecutive blocks of source frames (spec §6–§7.3).

    Per block: cosine top-C in the pool (in `MatchConfig.match_layers`' space when set), the first
    K for the features (pass A) and the K of closest pitch for the harmonic amplitudes (pass B),
    each reselected for concatenation smoothness when `concat_weight` is set. The reselection is
    causal and carries its state from block to block, so blocks fed in order give the
    whole-source choice.

    Args:
        config: matching settings.
        kind: the vocoder's architecture (which passes run, whether pass A is smoothed).
        pool: the reference pool (checked with `check_pool` by the driver).
        device: where the distances are computed.
        f0_target_hz: (T,) the whole source's target F0 when known in advance (offline); None:
            each block's target F0 is given to `select` (streaming).
        timer: charges the work to the stages "knn" and "reselect".
    """

    def __init__(
        self,
        config: MatchConfig,
        kind: VocoderKind,
        pool: ReferencePool,
        device: torch.device | str = "cpu",
        f0_target_hz: torch.Tensor | None = None,
        timer: StageTimer | None = None,
    ) -> None:
        self.config = config
        self.kind = kind
        self.pool_f0_hz = pool.f0_hz
        self.device = torch.device(device)
        self.dtype = matching_dtype(config)
        self.timer = timer
        keys = pool.feats
        if config.match_layers:
            if pool.match_feats is None:
                raise ValueError(f"match_layers={config.match_layers}, "
                                 "but the reference pool was analysed without them")
            keys = pool.match_feats
        self.pool_unit = unit_rows(keys.to(device=self.device, dtype=self.dtype))  # (N, D) in the matching space
        self.reselect_a: Reselector | None = None
        self.reselect_b: Reselector | None = None
        self._per_block_pitch = f0_target_hz is None
        if config.concat_weight is not None:
            neighbours = Neighbours.of(pool.num_frames, pool.starts if config.respect_file_boundaries else None)
            if kind.uses_harmonics or config.smooth_every_vocoder:
                self.reselect_a = Reselector(self.pool_unit, config.concat_weight, neighbours=neighbours)
            if kind.uses_harmonics:
                pitch = PitchCost(f0_target_hz, pool.f0_hz, sticky_switch_off=config.sticky_concat_switch)
                self.reselect_b = Reselector(self.pool_unit, config.concat_weight, pitch, neighbours)

    def _stage(self, name: str) -> AbstractContextManager:
        return self.timer(name) if self.timer is not None else nullcontext()

    def _candidates(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = queries.to(device=self.device, dtype=self.dtype)
        with self._stage("knn"):
            candidates = cosine_topk(query, self.pool_unit, self.config.n_candidates, pool_is_unit=True).cpu()
        return candidates, query

    def select(self, queries: torch.Tensor, f0_target_hz: torch.Tensor) -> Selection:
        """Choose the frames of the next block (reselection state carried from the last call).

        Args:
            queries: (B, D) the block's source features in the matching space.
            f0_target_hz: (B,) the block's target F0 (pitch priority and the pass-B reselection).

        Returns:
            The block's `Selection`.
        """
        k = self.config.topk
        candidates, query = self._candidates(queries)
        query_unit = unit_rows(query)
        with self._stage("reselect"):
            chosen = candidates[:, :k]
            indices_wavlm = self.reselect_a(chosen, query_unit) if self.reselect_a is not None else chosen
            indices_harm = None
            if self.kind.uses_harmonics:
                chosen = pitch_priority(candidates, f0_target_hz, self.pool_f0_hz)[:, :k]
                if self.reselect_b is None:
                    indices_harm = chosen
                elif self._per_block_pitch:
                    indices_harm = self.reselect_b(chosen, query_unit, f0_target_hz)
                else:
                    indices_harm = self.reselect_b(chosen, query_unit)
        return Selection(candidates, indices_wavlm, indices_harm)

    def provisional(self, queries: torch.Tensor, f0_target_hz: torch.Tensor) -> Selection:
        """Frames for source frames that will be selected again later (streaming's lookahead):
        the first K and the K of closest pitch, without reselection; no state changes."""
        k = self.config.topk
        candidates, _ = self._candidates(queries)
        indices_harm = None
        if self.kind.uses_harmonics:
            indices_harm = pitch_priority(candidates, f0_target_hz, self.pool_f0_hz)[:, :k]
        return Selection(candidates, candidates[:, :k], indices_harm)


def blend_source(
    matched: torch.Tensor, own: torch.Tensor, source_f0_hz: torch.Tensor, config: MatchConfig
) -> torch.Tensor:
    """RVC's `index_rate` and `protect` blends of matched and source features.

    feats = R * matched + (1 - R) * own, then on unvoiced source frames
    feats = protect * feats + (1 - protect) * own (unless protect is `PROTECT_OFF`).

    Args:
        matched: (B, D) matched features in the matching dtype.
        own: (B, D) the source's own features (any float dtype; converted).
        source_f0_hz: (B,) the source's F0 (0 = unvoiced), for `protect`.

    Returns:
        (B, D) in the dtype of `matched`.
    """
    dtype = matched.dtype
    own = own.to(dtype)
    feats = config.index_rate * matched + (1.0 - config.index_rate) * own
    if config.protect < PROTECT_OFF:
        unvoiced = (source_f0_hz <= 0).to(dtype)[:, None]
        keep = 1.0 - (1.0 - config.protect) * unvoiced  # 1 on voiced, protect on unvoiced frames
        feats = keep * feats + (1.0 - keep) * own
    return feats


def vocoder_features(
    indices: torch.Tensor,
    weights: torch.Tensor,
    pool_feats: torch.Tensor,
    config: MatchConfig,
    own: torch.Tensor | None = None,
    source_f0_hz: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, D) float32 vocoder features: the weighted sum of the chosen pool rows in the matching
    precision (then float32, as the reference), blended with the source's features per
    `index_rate` and `protect` (`blend_source`).

    Args:
        indices, weights: (B, K) chosen pool rows and their weights.
        pool_feats: (N, D) the pool's synthesis features.
        own: (B, D) the source's synthesis features, needed when `config.blends_source`.
        source_f0_hz: (B,) the source's F0, needed with `protect`.
    """
    feats = weighted_sum(indices, weights, pool_feats, matching_dtype(config))
    if config.blends_source:
        if own is None or source_f0_hz is None:
            raise RuntimeError("index_rate/protect need the source features, which this result does not hold")
        feats = blend_source(feats, own, source_f0_hz, config)
    return feats.float()


class SummingWeights:
    """The summing weights of the chosen frames (spec §7.4), and what they make.

    Smoothed passes (pass A for the harmonic vocoder or with `smooth_every_vocoder`, pass B
    always) optimise their weights when `optimise_weights` is set; the others average uniformly.
    Offline, one call weighs the whole source (the optimiser's stopping rule is global); with
    ``join_blocks`` every call weighs one block joined to the last frame of the previous call,
    whose weights stay fixed (streaming).

    Args:
        config: matching settings.
        kind: the vocoder's architecture.
        pool: the reference pool.
        max_iters: iteration cap of the optimiser (default `config.max_opt_iters`).
        join_blocks: carry the last frame's weights from call to call (see above).

    Attributes:
        last: per pass ("wavlm", "harm"), the last frame's (K,) rows and weights, with ``join_blocks``.
    """

    def __init__(
        self,
        config: MatchConfig,
        kind: VocoderKind,
        pool: ReferencePool,
        max_iters: int | None = None,
        join_blocks: bool = False,
    ) -> None:
        self.config = config
        self.kind = kind
        self.pool = pool
        self.dtype = matching_dtype(config)
        self.settings = OptimiserSettings(max_iters=config.max_opt_iters if max_iters is None else max_iters)
        self.neighbours = Neighbours.of(pool.num_frames, pool.starts if config.respect_file_boundaries else None)
        self.smooth_features = kind.uses_harmonics or config.smooth_every_vocoder
        self.join_blocks = join_blocks
        self.last: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def uniform(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, K) weights 1/K in the matching dtype."""
        return torch.full(indices.shape, 1.0 / indices.shape[1], dtype=self.dtype)

    def for_features(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, K) weights of pass A's rows (the vocoder features), in the matching dtype."""
        return self._weights("wavlm", indices, self.pool.feats, WAVLM_SMOOTHNESS, self.smooth_features)

    def for_harmonics(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, K) weights of pass B's rows (the harmonic amplitudes), in the matching dtype."""
        return self._weights("harm", indices, self.pool.amps, HARMONIC_SMOOTHNESS, True)

    def _weights(self, name: str, indices: torch.Tensor, table: torch.Tensor, alpha: float,
                 smooth: bool) -> torch.Tensor:
        if not (smooth and self.config.optimise_weights) or indices.shape[0] == 0:
            return self.uniform(indices)
        previous = self.last.get(name) if self.join_blocks else None
        if previous is None:
            weights = optimise_weights(indices, table, alpha, self.settings, self.neighbours, self.dtype)
        else:
            joined = torch.cat([previous[0][None], indices])
            weights = optimise_weights(joined, table, alpha, self.settings, self.neighbours, self.dtype,
                                       fixed_first=previous[1])[1:]
        if self.join_blocks:
            self.last[name] = (indices[-1], weights[-1])
        return weights

    def features(
        self,
        indices: torch.Tensor,
        weights: torch.Tensor,
        own: torch.Tensor | None = None,
        source_f0_hz: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, D) float32 vocoder features of a block (`vocoder_features` on this pool).

        `weights` are rounded to float32 first, as `MatchResult` stores them offline.
        """
        return vocoder_features(indices, weights.float(), self.pool.feats, self.config, own, source_f0_hz)

    def amplitudes(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, H) float32 harmonic amplitudes: the weighted sum of the rows' amplitudes.

        Summed `matching.MATCH_BLOCK` frames at a time into the float32 result (a frame's sum does
        not depend on the frames beside it, see `weighted_sum`), so the matching-precision
        temporaries stay one block's size whatever B.

        Args:
            indices, weights: (B, K) chosen pool rows and their weights.
        """
        amps = torch.empty(indices.shape[0], self.pool.amps.shape[1], dtype=torch.float32)
        for start, stop in frame_blocks(indices.shape[0], MATCH_BLOCK):
            amps[start:stop] = weighted_sum(indices[start:stop], weights[start:stop], self.pool.amps, self.dtype)
        return amps


class PhaseCursor:
    """The excitation's phase at successive block starts, summed exactly as the whole signal's.

    The vocoders' excitation phase is an inclusive float64 running sum over samples; blocks move
    forward (with overlapping margins), so the sum is carried along, sample by sample, and any
    sequence of block starts gives the whole signal's phase.

    Args:
        f0_hz: ``f0_hz(a, b)`` -> (b - a,) the target F0 of frames a..b-1 (frames from the
            cursor's position on must still be available).
        sample_rate, hop_length: the output rate of the vocoder and its samples per frame (the
            phase is summed over output samples).
    """

    def __init__(self, f0_hz: Callable[[int, int], torch.Tensor], sample_rate: int = SAMPLE_RATE,
                 hop_length: int = HOP_LENGTH) -> None:
        self.f0_hz = f0_hz
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.frame = 0
        self.cycles = torch.zeros(1, dtype=torch.float64)

    def cycles_before(self, frame: int) -> torch.Tensor:
        """(1,) float64 cycles accumulated over the samples before `frame`; moves the cursor there."""
        if frame < self.frame:
            raise ValueError("blocks must move forward")
        if frame > self.frame:
            f0_hz = self.f0_hz(self.frame, frame)[None]
            self.cycles = running_cycles(f0_hz, self.cycles, self.sample_rate, self.hop_length)[:, -1]
            self.frame = frame
        return self.cycles


class BlockVocoder:
    """Vocodes a frame sequence block by block: each block with its margins (the vocoder's
    receptive field, plus the loudness window with `rms_mix`), the excitation's phase carried.

    The caller passes a block's frames with `margin` extra frames on each side where it has them
    and keeps the middle (`hop_length` output samples per frame); blocks must move forward. The
    concatenated middles are the whole-sequence output (up to float rounding).

    Args:
        vocoder: the generator.
        f0_hz: ``f0_hz(a, b)`` -> (b - a,) target F0 of frames a..b-1, for the phase (see `PhaseCursor`).
        device: where the vocoder runs.
        rms_mix: `MatchConfig.rms_mix`: how far the output's loudness follows the source's.
        timer: charges the vocoder to the stage "vocode".
        precision: the network's precision (`knnsvc.runtime.NETWORK_PRECISIONS`): float32, or
            bfloat16/float16 under autocast (the output is returned in float32).
    """

    def __init__(
        self,
        vocoder: Vocoder,
        f0_hz: Callable[[int, int], torch.Tensor],
        device: torch.device | str = "cpu",
        rms_mix: float = 0.0,
        timer: StageTimer | None = None,
        precision: str = "float32",
    ) -> None:
        self.vocoder = vocoder
        self.precision = check_network_precision(precision)
        self.device = torch.device(device)
        self.rms_mix = float(rms_mix)
        self.timer = timer
        self.hop_length: int = getattr(vocoder, "samples_per_frame", HOP_LENGTH)
        """Output samples per frame (320 at 16 kHz)."""
        self.sample_rate: int = getattr(vocoder, "sample_rate", SAMPLE_RATE)
        self.phase = PhaseCursor(f0_hz, self.sample_rate, self.hop_length)

    @property
    def loudness_frames(self) -> int:
        """Frames of context the loudness following needs on each side (0 without `rms_mix`)."""
        return RMS_WINDOW_FRAMES if self.rms_mix > 0 else 0

    @property
    def margin(self) -> int:
        """Frames on each side of a block that make its middle exact."""
        return self.vocoder.context_frames + self.loudness_frames

    def __call__(
        self,
        first: int,
        feats: torch.Tensor,
        f0_hz: torch.Tensor,
        amps: torch.Tensor | None = None,
        source_energy: torch.Tensor | None = None,
        keep: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Waveform of the frames first..first+B-1 (or of the rows `keep` of them).

        Args:
            first: the global index of the first frame (the phase is carried to it).
            feats: (B, D) float32 vocoder features; f0_hz: (B,) target F0; amps: (B, H) or None.
            source_energy: (B,) float64 the source's frame energies (`frame_energy`), with `rms_mix`.
            keep: (lo, hi) with 0 <= lo < hi <= B: only rows lo..hi-1 are wanted. A vocoder with
                ``accepts_keep`` then computes only them and what they read (the HiFi-GAN
                generators: their upsampling stages run on those rows, their margins and, with
                `rms_mix`, the loudness window), the same samples up to float rounding; any other
                vocoder runs on all B rows and the rows are cut out.

        Returns:
            (B * hop_length,) float32 on the CPU, at the vocoder's rate; ((hi - lo) * hop_length,) with `keep`.
        """
        rows = (0, feats.shape[0]) if keep is None else keep
        if not 0 <= rows[0] < rows[1] <= feats.shape[0]:
            raise ValueError(f"keep must be a row range within 0..{feats.shape[0]} with lo < hi, got {tuple(rows)}")
        # the loudness following reads the output +- its window around a frame, and one frame more
        # for the gain interpolation between frame centres
        reach = self.loudness_frames + 1 if self.rms_mix > 0 else 0
        lo, hi = max(0, rows[0] - reach), min(feats.shape[0], rows[1] + reach)
        crop = {"keep": (lo, hi)} if getattr(self.vocoder, "accepts_keep", False) and (lo, hi) != (0, feats.shape[0]) \
            else {}
        stage = self.timer("vocode") if self.timer is not None else nullcontext()
        with torch.inference_mode(), stage, network_autocast(self.device, self.precision):
            wav = self.vocoder(
                feats[None].to(self.device),
                f0_hz[None].to(self.device),
                None if amps is None else amps[None].to(self.device),
                self.phase.cycles_before(first).to(self.device),
                **crop,
            ).reshape(-1).float().cpu()
        if not crop:
            wav = wav[lo * self.hop_length : hi * self.hop_length]
        if self.rms_mix > 0:
            if source_energy is None:
                raise RuntimeError("rms_mix needs the source's frame energies, which this result does not hold")
            wav = follow_loudness(wav, source_energy[lo:hi], self.rms_mix, self.hop_length)
        return wav[(rows[0] - lo) * self.hop_length : (rows[1] - lo) * self.hop_length]


def block_windows(num_frames: int, block: int, margin: int) -> Iterator[tuple[int, int, int, int]]:
    """(start, stop, lo, hi) per block of `block` frames (0 = one block): the block keeps frames
    [start, stop) and reads [lo, hi), `margin` more on each side where the sequence has them."""
    for start, stop in frame_blocks(num_frames, block):
        yield start, stop, max(start - margin, 0), min(stop + margin, num_frames)


def frame_energy(wav: torch.Tensor, num_frames: int, hop_length: int = HOP_LENGTH) -> torch.Tensor:
    """(T,) float64 sum of squared samples of each frame of `hop_length` samples (missing samples count 0).

    Computed `ENERGY_BLOCK_FRAMES` frames at a time (each frame's sum is over its own samples, so
    the result does not depend on the blocks): no float64 copy of the whole waveform.

    Args:
        wav: (L,) waveform of any float dtype, on any device.
        num_frames: T; samples beyond T * hop_length are ignored.
    """
    samples = wav.detach()
    energy = torch.empty(num_frames, dtype=torch.float64)
    for start, stop in frame_blocks(num_frames, ENERGY_BLOCK_FRAMES):
        block = samples[start * hop_length : stop * hop_length].cpu().double()
        block = F.pad(block, (0, (stop - start) * hop_length - block.numel()))
        energy[start:stop] = block.reshape(stop - start, hop_length).square().sum(dim=1)
    return energy


def loudness_envelope(energy: torch.Tensor, hop_length: int = HOP_LENGTH) -> torch.Tensor:
    """(T,) RMS over `RMS_WINDOW_FRAMES` frames centred on each frame (fewer at the ends), from
    frame energies of `hop_length` samples each."""
    half = RMS_WINDOW_FRAMES // 2
    padded = F.pad(energy, (half, half))
    counts = F.pad(torch.ones_like(energy), (half, half))
    window = torch.ones(2 * half + 1, dtype=energy.dtype)
    total = F.conv1d(padded[None, None], window[None, None])[0, 0]
    count = F.conv1d(counts[None, None], window[None, None])[0, 0]
    return (total / (count * hop_length)).sqrt()


def follow_loudness(
    wav: torch.Tensor, source_energy: torch.Tensor, amount: float, hop_length: int = HOP_LENGTH
) -> torch.Tensor:
    """Scale `wav` (T * hop_length,) so its loudness envelope moves towards the source's by `amount`.

    gain = ((rms_source + eps) / (rms_output + eps)) ** amount per frame, linearly interpolated
    between frame centres. Frame t's gain reads frames t +- 12, so a block needs that context.

    Args:
        source_energy: (T,) the source's frame energies (`frame_energy` of the 16 kHz source).
        hop_length: output samples per frame (320 at 16 kHz; the vocoder's at other rates).
    """
    n_frames = source_energy.shape[0]
    output_energy = frame_energy(wav, n_frames, hop_length)
    eps = 1e-5
    gain = ((loudness_envelope(source_energy) + eps) / (loudness_envelope(output_energy, hop_length) + eps)) ** amount
    centres = (torch.arange(n_frames, dtype=torch.float64) + 0.5) * hop_length
    samples = torch.arange(n_frames * hop_length, dtype=torch.float64) + 0.5
    position = ((samples - centres[0]) / hop_length).clamp(0, max(n_frames - 1, 0))
    left = position.floor().long().clamp(max=max(n_frames - 2, 0))
    frac = position - left
    right = (left + 1).clamp(max=n_frames - 1)
    per_sample = gain[left] * (1 - frac) + gain[right] * frac
    return (wav.double() * per_sample).float()
