"""The converter: reference pool in, waveform out. No file I/O, no printing.

    source wav ─► WavLM layer 6 (T, D) ─┬─► cosine top-32 in the pool ─► pass A: first K,
                 Harvest F0 (T,)        │     reselect + optimise weights ─► feats (T, D)
                                        └─► key shift ─► pass B: pitch-priority K, reselect +
                                              optimise weights ─► harmonic amps (T, H)
    vocoder(feats, shifted F0, amps) ─► waveform (T * 320,)

Every stage works in blocks, so memory is bounded whatever the length of the source or the
reference: WavLM encodes 30 s chunks (the reference's), F0 and the vocoder run in blocks of
`block_seconds` with margins, matching in blocks of `matching.MATCH_BLOCK` frames, and long
sources keep their features in a `FrameStore` (spilled to a temporary file). Blocking does not
change the result: the vocoder's margins exceed its receptive field and the excitation's phase is
carried from block to block; ``block_seconds=0`` runs every stage on the whole recording at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hifigan.generator import Vocoder, VocoderKind
from knnsvc import matching
from knnsvc.config import (
    DEFAULT_BLOCK_SECONDS,
    DEFAULT_F0,
    HOP_LENGTH,
    N_HARMONICS,
    PROTECT_OFF,
    RMS_WINDOW_FRAMES,
    SAMPLE_RATE,
    MatchConfig,
)
from knnsvc.encoder import WavLMEncoder
from knnsvc.frames import FrameStore
from knnsvc.harmonics import harmonic_amplitudes, magnitude_spectrogram, running_cycles
from knnsvc.matching import (
    HARMONIC_SMOOTHNESS,
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
from knnsvc.pitch import F0Extractor, apply_pitch_shift, get_f0_extractor
from knnsvc.pool import ReferencePool, module_fingerprint
from knnsvc.runtime import StageTimer

SPECTRUM_BLOCK = 4096
"""Frames per block when a reference's spectrum and harmonic amplitudes are computed."""


Progress = Callable[[str, int, int], None]
"""Progress callback ``(stage, done, total)``, called as the stages of a conversion advance."""


@dataclass
class SourceFeatures:
    """What the converter needs of a source recording, frame-aligned (T frames).

    Attributes:
        feats: (T, D) float32 WavLM features: a tensor, or a `FrameStore` for long sources.
        f0_hz: (T,) float32 F0, 0 = unvoiced.
        energy: (T,) float64 sum of squared samples per frame (for `MatchConfig.rms_mix`), or None.
        match_feats: (T, D) features of `MatchConfig.match_layers` (None: match on `feats`).
    """

    feats: torch.Tensor | FrameStore
    f0_hz: torch.Tensor
    energy: torch.Tensor | None = None
    match_feats: torch.Tensor | FrameStore | None = None

    @property
    def num_frames(self) -> int:
        return self.f0_hz.shape[0]

    def close(self) -> None:
        """Free the features (a spilled `FrameStore` deletes its temporary file)."""
        for store in (self.feats, self.match_feats):
            if isinstance(store, FrameStore):
                store.close()


@dataclass
class MatchResult:
    """Everything the vocoder gets, plus the provenance of every output frame.

    The vocoder's features are computed block by block from the chosen pool rows and weights
    (`feats_block`), so a long conversion never holds all of them; `feats` builds them all.

    Attributes:
        f0_hz: (T,) key-shifted source F0, the pitch the output sings at.
        source_f0_hz: (T,) the source's own F0.
        amps: (T, H) float32 harmonic amplitudes (None unless the vocoder is harmonic).
        candidates: (T, C) cosine-nearest pool rows.
        indices_wavlm, weights_wavlm: (T, K) pool rows and weights averaged into the features.
        indices_harm, weights_harm: (T, K) pool rows and weights averaged into `amps`.
        shift_ratio: the pitch ratio applied to the source (1.0 without shift).
        semitones: the transposition in semitones (0 without shift).
        pool_feats: (N, D) the pool's features the rows index (shared, not copied).
        source: the source's features, for the RVC-style blends (None when not needed).
        config: the settings the match was made with.
    """

    f0_hz: torch.Tensor
    source_f0_hz: torch.Tensor
    amps: torch.Tensor | None
    candidates: torch.Tensor
    indices_wavlm: torch.Tensor
    weights_wavlm: torch.Tensor
    pool_feats: torch.Tensor
    indices_harm: torch.Tensor | None = None
    weights_harm: torch.Tensor | None = None
    shift_ratio: float = 1.0
    semitones: float = 0.0
    source: SourceFeatures | None = None
    config: MatchConfig = field(default_factory=MatchConfig)

    @property
    def num_frames(self) -> int:
        return self.f0_hz.shape[0]

    def feats_block(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, D) float32 vocoder features of frames start..stop-1.

        The weighted sum of the chosen pool rows in the matching precision (then float32, as the
        reference), blended with the source's features per `index_rate` and `protect`.
        """
        cfg = self.config
        dtype = torch.float64 if cfg.precision == "float64" else torch.float32
        rows = slice(start, stop)
        feats = weighted_sum(self.indices_wavlm[rows], self.weights_wavlm[rows], self.pool_feats, dtype)
        if cfg.blends_source:
            if self.source is None:
                raise RuntimeError("index_rate/protect need the source features, which this result does not hold")
            own = self.source.feats[start:stop].to(dtype)
            feats = cfg.index_rate * feats + (1.0 - cfg.index_rate) * own
            if cfg.protect < PROTECT_OFF:
                unvoiced = (self.source_f0_hz[rows] <= 0).to(dtype)[:, None]
                keep = 1.0 - (1.0 - cfg.protect) * unvoiced  # 1 on voiced, protect on unvoiced frames
                feats = keep * feats + (1.0 - keep) * own
        return feats.float()

    @property
    def feats(self) -> torch.Tensor:
        """(T, D) float32 features fed to the vocoder (all of them, built in blocks)."""
        if self.num_frames == 0:
            return self.pool_feats.new_zeros(0, self.pool_feats.shape[1])
        return torch.cat([self.feats_block(a, b) for a, b in frame_blocks(self.num_frames, matching.MATCH_BLOCK)])


class KnnSvc:
    """kNN-SVC converter: a WavLM encoder, a vocoder and the matching settings.

    `vocoder` may be None for matching only (e.g. preparing vocoder training data); `kind` then
    still says which passes `match` runs.

    Args:
        encoder: the WavLM feature extractor.
        vocoder: a generator (see `hifigan.generator.Vocoder`), or None.
        kind: the vocoder's architecture.
        config: matching settings.
        block_seconds: F0 extraction and vocoding work in blocks of this length (memory
            bounded for any length); 0 = whole recordings at once (the reference's behaviour).
        f0: F0 extractor (`knnsvc.pitch.get_f0_extractor`; default: Harvest, which the released
            vocoders were trained on); its `cache_id` enters pool cache keys.

    Stage times accumulate in `timings` (seconds per stage name); clear it to start a new
    measurement. On CUDA the timer synchronises, so GPU work is charged to its own stage.
    """

    def __init__(
        self,
        encoder: WavLMEncoder,
        vocoder: Vocoder | None,
        kind: VocoderKind | str,
        config: MatchConfig | None = None,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
        f0: F0Extractor | None = None,
    ) -> None:
        if not (math.isfinite(block_seconds) and block_seconds >= 0):
            raise ValueError(f"block_seconds must be a finite number >= 0, got {block_seconds}")
        self.encoder = encoder.eval()
        self.vocoder = vocoder.eval() if vocoder is not None else None
        self.kind = VocoderKind(kind)
        self.config = config or MatchConfig()
        self.block_seconds = float(block_seconds)
        self.f0 = f0 if f0 is not None else get_f0_extractor(DEFAULT_F0)
        self._timer = StageTimer(self.encoder.device)
        self._encoder_id: str | None = None

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage since the last clear (encode, f0, knn, reselect, optimise, vocode, ...)."""
        return self._timer.seconds

    @timings.setter
    def timings(self, value: dict[str, float]) -> None:
        self._timer.seconds = value

    @property
    def block_frames(self) -> int:
        """Frames per F0/vocoder block (0 = whole recordings)."""
        return round(self.block_seconds * SAMPLE_RATE / HOP_LENGTH)

    @property
    def encoder_id(self) -> str:
        """Fingerprint of the encoder weights and layer (part of a pool's cache key)."""
        if self._encoder_id is None:
            self._encoder_id = f"{module_fingerprint(self.encoder)}-layer{self.encoder.layer}"
        return self._encoder_id

    # ----------------------------------------------------------------------------- analysis
    def analyse(self, wav_16k: torch.Tensor, progress: Progress | None = None) -> SourceFeatures:
        """WavLM features, F0 and frame energies of one recording, frame-aligned.

        F0 runs on a second thread while WavLM encodes (Harvest releases the GIL). Features of a
        long recording go to a `FrameStore` (spilled to a temporary file beyond 64 MB).

        Args:
            wav_16k: (L,) finite waveform.

        Returns:
            `SourceFeatures` with T = frames of the encoder.

        Raises:
            ValueError: the waveform is not 1-D or holds NaN/inf samples.
        """
        if wav_16k.dim() != 1:
            raise ValueError(f"expected a mono waveform of shape (L,), got {tuple(wav_16k.shape)}")
        bad = int((~torch.isfinite(wav_16k)).sum())
        if bad:
            raise ValueError(f"the waveform has {bad} non-finite samples (NaN or inf)")
        wav_cpu = wav_16k.detach().cpu()
        total = self.encoder.num_frames(wav_cpu.numel())
        layers = self.config.match_layers
        feats = FrameStore(self.encoder.dim)
        match_feats = FrameStore(self.encoder.dim) if layers else None
        with ThreadPoolExecutor(max_workers=1) as worker:
            f0_job = worker.submit(self._timed_f0, wav_cpu)
            if progress is not None:
                progress("encode", 0, total)
            with self._timer("encode"):
                chunks: Iterator[tuple[torch.Tensor, torch.Tensor | None]]
                if layers:
                    chunks = self.encoder.chunks_with_matching(wav_cpu, layers)
                else:
                    chunks = ((chunk, None) for chunk in self.encoder.chunks(wav_cpu))
                for chunk, match_chunk in chunks:
                    feats.append(chunk)
                    if match_feats is not None and match_chunk is not None:
                        match_feats.append(match_chunk)
                    if progress is not None:
                        progress("encode", len(feats), total)
            f0_hz = f0_job.result()[:total]
        return SourceFeatures(feats=_compact(feats), f0_hz=f0_hz, energy=frame_energy(wav_cpu, total),
                              match_feats=None if match_feats is None else _compact(match_feats))

    def _timed_f0(self, wav_16k: torch.Tensor) -> torch.Tensor:
        with self._timer("f0", sync=False):
            return self.f0(wav_16k, self.block_seconds or None)

    def reference_pool(self, wav_16k: torch.Tensor, name: str = "") -> ReferencePool:
        """A one-file pool: features, F0 and per-frame harmonic amplitudes (spec §8.1–8.2).

        The spectrum and amplitudes are computed `SPECTRUM_BLOCK` frames at a time.
        """
        source = self.analyse(wav_16k)
        n_frames = source.num_frames
        feats = source.feats[0:n_frames]
        match_feats = None if source.match_feats is None else source.match_feats[0:n_frames]
        source.close()
        with self._timer("harmonics", sync=False):
            wav_cpu = wav_16k.detach().cpu()
            amps = torch.empty(n_frames, N_HARMONICS)
            for start, stop in frame_blocks(n_frames, SPECTRUM_BLOCK):
                spec = magnitude_spectrogram(wav_cpu, start, stop - start)
                amps[start:stop] = harmonic_amplitudes(spec, source.f0_hz[start:stop])
        return ReferencePool(feats=feats, f0_hz=source.f0_hz, amps=amps, starts=[0], names=[name],
                             match_feats=match_feats)

    def build_pool(
        self, wavs: Sequence[torch.Tensor], names: Sequence[str] | None = None
    ) -> ReferencePool:
        """Pool of several recordings of one singer, concatenated in order.

        Raises:
            ValueError: `names` does not give one name per recording.
        """
        names = list(names) if names is not None else [str(i) for i in range(len(wavs))]
        if len(names) != len(wavs):
            raise ValueError(f"{len(wavs)} recordings but {len(names)} names")
        return ReferencePool.concat([self.reference_pool(w, n) for w, n in zip(wavs, names, strict=True)])

    def pool_settings(self) -> dict:
        """Settings that determine a pool's contents (the rest of its cache key)."""
        return {
            "encoder": self.encoder_id,
            "layer": self.encoder.layer,
            "chunk_samples": self.encoder.chunk_samples,
            "f0": self.f0.cache_id,
            "f0_block_seconds": self.block_seconds,
            "match_layers": self.config.match_layers,
        }

    # ----------------------------------------------------------------------------- matching
    def match(
        self, source: torch.Tensor | SourceFeatures, pool: ReferencePool, progress: Progress | None = None
    ) -> MatchResult:
        """Select and weight pool frames for every source frame (spec §6–§7), in blocks.

        Raises:
            ValueError: the pool has fewer frames than candidates, or an automatic pitch shift and
                the source or the reference has no voiced frame.
        """
        if isinstance(source, torch.Tensor):
            source = self.analyse(source)
        cfg = self.config
        dtype = torch.float64 if cfg.precision == "float64" else torch.float32
        if pool.num_frames < cfg.n_candidates:
            raise ValueError(
                f"the reference is too short: {pool.num_frames} frames "
                f"({pool.seconds:.2f} s), at least {cfg.n_candidates} needed"
            )
        n_frames = source.num_frames
        queries, keys = matching_tables(cfg, source, pool)
        f0_target, semitones = self._shifted_f0(source.f0_hz, pool.f0_hz)
        smooth = self.kind.uses_harmonics or cfg.smooth_every_vocoder
        settings = OptimiserSettings(max_iters=cfg.max_opt_iters)
        neighbours = Neighbours.of(pool.num_frames, pool.starts if cfg.respect_file_boundaries else None)

        with torch.inference_mode():
            pool_unit = unit_rows(keys.to(device=self.device, dtype=dtype))  # (N, D) in the matching space
            reselect_a = reselect_b = None
            if cfg.concat_weight is not None:
                if smooth:
                    reselect_a = Reselector(pool_unit, cfg.concat_weight, neighbours=neighbours)
                if self.kind.uses_harmonics:
                    pitch = PitchCost(f0_target, pool.f0_hz, sticky_switch_off=cfg.sticky_concat_switch)
                    reselect_b = Reselector(pool_unit, cfg.concat_weight, pitch, neighbours)
            candidates = torch.empty(n_frames, cfg.n_candidates, dtype=torch.long)
            indices_wavlm = torch.empty(n_frames, cfg.topk, dtype=torch.long)
            indices_harm = torch.empty(n_frames, cfg.topk, dtype=torch.long) if self.kind.uses_harmonics else None
            if progress is not None:
                progress("match", 0, n_frames)
            for start, stop in frame_blocks(n_frames, matching.MATCH_BLOCK):
                query = queries[start:stop].to(device=self.device, dtype=dtype)
                with self._timer("knn"):
                    block = cosine_topk(query, pool_unit, cfg.n_candidates, pool_is_unit=True).cpu()
                candidates[start:stop] = block
                query_unit = unit_rows(query)
                with self._timer("reselect"):
                    chosen = block[:, : cfg.topk]
                    indices_wavlm[start:stop] = reselect_a(chosen, query_unit) if reselect_a else chosen
                    if indices_harm is not None:
                        chosen = pitch_priority(block, f0_target[start:stop], pool.f0_hz)[:, : cfg.topk]
                        indices_harm[start:stop] = reselect_b(chosen, query_unit) if reselect_b else chosen
                if progress is not None:
                    progress("match", stop, n_frames)
            del pool_unit, reselect_a, reselect_b

            with self._timer("optimise"):
                weights_wavlm = self._weights(indices_wavlm, pool.feats, WAVLM_SMOOTHNESS, smooth, settings,
                                              neighbours, dtype)
            result = MatchResult(
                f0_hz=f0_target,
                source_f0_hz=source.f0_hz,
                amps=None,
                candidates=candidates,
                indices_wavlm=indices_wavlm,
                weights_wavlm=weights_wavlm.float(),
                pool_feats=pool.feats,
                shift_ratio=_ratio(source.f0_hz, f0_target),
                semitones=semitones,
                source=source if (cfg.blends_source or cfg.rms_mix > 0) else None,
                config=cfg,
            )
            if indices_harm is None:
                return result
            with self._timer("optimise"):
                weights_harm = self._weights(indices_harm, pool.amps, HARMONIC_SMOOTHNESS, True, settings,
                                             neighbours, dtype)
            result.indices_harm = indices_harm
            result.weights_harm = weights_harm.float()
            result.amps = weighted_sum(indices_harm, weights_harm, pool.amps, dtype).float()
        return result

    def _shifted_f0(self, source_f0_hz: torch.Tensor, pool_f0_hz: torch.Tensor) -> tuple[torch.Tensor, float]:
        shift = self.config.pitch_shift if self.kind.uses_pitch else None
        if isinstance(shift, str):
            if not bool((source_f0_hz > 0).any()):
                raise ValueError("the source has no voiced frame: its median pitch is undefined")
            if not bool((pool_f0_hz > 0).any()):
                raise ValueError("the reference has no voiced frame: its median pitch is undefined")
        return apply_pitch_shift(source_f0_hz, pool_f0_hz, shift)

    def _weights(
        self,
        indices: torch.Tensor,
        table: torch.Tensor,
        alpha: float,
        smooth: bool,
        settings: OptimiserSettings,
        neighbours: Neighbours,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        if smooth and self.config.optimise_weights:
            return optimise_weights(indices, table, alpha, settings, neighbours, dtype)
        k = indices.shape[1]
        return torch.full(indices.shape, 1.0 / k, dtype=dtype)

    # ----------------------------------------------------------------------------- vocoding
    def vocode_blocks(self, result: MatchResult, progress: Progress | None = None) -> Iterator[torch.Tensor]:
        """The waveform block by block: consecutive (320 * frames,) float32 CPU tensors.

        Each block of `block_frames` frames is vocoded with the vocoder's receptive field
        (`context_frames`, plus the loudness window with `rms_mix`) of extra frames on both
        sides, which are then dropped; the excitation's phase is carried across blocks. The
        concatenated blocks are the whole-sequence output (up to float rounding).
        """
        if self.vocoder is None:
            raise RuntimeError("this converter was built without a vocoder: it can match, not vocode")
        cfg = self.config
        n_frames = result.num_frames
        margin = self.vocoder.context_frames + (RMS_WINDOW_FRAMES if cfg.rms_mix > 0 else 0)
        energy = None  # (T,) the source's frame energies, for rms_mix
        if cfg.rms_mix > 0:
            if result.source is None or result.source.energy is None:
                raise RuntimeError("rms_mix needs the source's frame energies, which this result does not hold")
            energy = result.source.energy
        phase = _PhaseCursor(result.f0_hz)
        if progress is not None:
            progress("vocode", 0, n_frames)
        for start, stop in frame_blocks(n_frames, self.block_frames):
            lo, hi = max(start - margin, 0), min(stop + margin, n_frames)
            with torch.inference_mode(), self._timer("vocode"):
                amps = None if result.amps is None else result.amps[None, lo:hi].to(self.device)
                wav = self.vocoder(
                    result.feats_block(lo, hi)[None].to(self.device),
                    result.f0_hz[None, lo:hi].to(self.device),
                    amps,
                    phase.cycles_before(lo).to(self.device),
                ).reshape(-1).float().cpu()
            if energy is not None:
                wav = follow_loudness(wav, energy[lo:hi], cfg.rms_mix)
            yield wav[(start - lo) * HOP_LENGTH : (stop - lo) * HOP_LENGTH]
            if progress is not None:
                progress("vocode", stop, n_frames)

    def vocode(self, result: MatchResult, progress: Progress | None = None) -> torch.Tensor:
        """Waveform (T * 320,) float32 on the CPU from a match result (see `vocode_blocks`)."""
        blocks = list(self.vocode_blocks(result, progress))
        return torch.cat(blocks) if blocks else torch.zeros(0)

    def convert(self, source: torch.Tensor | SourceFeatures, pool: ReferencePool) -> torch.Tensor:
        """Sing the source in the pool's voice.

        Args:
            source: (L,) 16 kHz waveform, or its precomputed `SourceFeatures`.
            pool: the target singer's `ReferencePool`.

        Returns:
            (T * 320,) float32 waveform at 16 kHz.
        """
        return self.vocode(self.match(source, pool))


def matching_tables(
    config: MatchConfig, source: SourceFeatures, pool: ReferencePool
) -> tuple[torch.Tensor | FrameStore, torch.Tensor]:
    """What is matched: the source's and the pool's features of `config.match_layers` (or of the
    synthesis layer). The vocoder always gets the synthesis layer's features of the chosen rows.

    Raises:
        ValueError: matching layers asked for, but the source or the pool lacks them.
    """
    if not config.match_layers:
        return source.feats, pool.feats
    if source.match_feats is None or pool.match_feats is None:
        missing = "source" if source.match_feats is None else "reference pool"
        raise ValueError(f"match_layers={config.match_layers}, but the {missing} was analysed without them")
    return source.match_feats, pool.match_feats


def _compact(store: FrameStore) -> torch.Tensor | FrameStore:
    """A store that stayed in memory as a plain tensor; a spilled one as it is."""
    return store if store.spilled else store[0 : len(store)]


class _PhaseCursor:
    """The excitation's phase at successive block starts, summed exactly as the whole signal's.

    The vocoders' excitation phase is an inclusive float64 running sum over samples; blocks
    move forward (with overlapping margins), so the sum is carried along, sample by sample.
    """

    def __init__(self, f0_hz: torch.Tensor) -> None:
        self.f0_hz = f0_hz
        self.frame = 0
        self.cycles = torch.zeros(1, dtype=torch.float64)

    def cycles_before(self, frame: int) -> torch.Tensor:
        """(1,) float64 cycles accumulated over the samples before `frame`."""
        if frame < self.frame:
            raise ValueError("blocks must move forward")
        if frame > self.frame:
            self.cycles = running_cycles(self.f0_hz[None, self.frame : frame], self.cycles)[:, -1]
            self.frame = frame
        return self.cycles


def frame_energy(wav_16k: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(T,) float64 sum of squared samples of each 320-sample frame (missing samples count 0)."""
    samples = wav_16k.detach().cpu().double()[: num_frames * HOP_LENGTH]
    samples = F.pad(samples, (0, num_frames * HOP_LENGTH - samples.numel()))
    return samples.reshape(num_frames, HOP_LENGTH).square().sum(dim=1)


def loudness_envelope(energy: torch.Tensor) -> torch.Tensor:
    """(T,) RMS over `RMS_WINDOW_FRAMES` frames centred on each frame (fewer at the ends)."""
    half = RMS_WINDOW_FRAMES // 2
    padded = F.pad(energy, (half, half))
    counts = F.pad(torch.ones_like(energy), (half, half))
    window = torch.ones(2 * half + 1, dtype=energy.dtype)
    total = F.conv1d(padded[None, None], window[None, None])[0, 0]
    count = F.conv1d(counts[None, None], window[None, None])[0, 0]
    return (total / (count * HOP_LENGTH)).sqrt()


def follow_loudness(wav: torch.Tensor, source_energy: torch.Tensor, amount: float) -> torch.Tensor:
    """Scale `wav` (T * 320,) so its loudness envelope moves towards the source's by `amount`.

    gain = ((rms_source + eps) / (rms_output + eps)) ** amount per frame, linearly interpolated
    between frame centres. Frame t's gain reads frames t +- 12, so a block needs that context.
    """
    n_frames = source_energy.shape[0]
    output_energy = frame_energy(wav, n_frames)
    eps = 1e-5
    gain = ((loudness_envelope(source_energy) + eps) / (loudness_envelope(output_energy) + eps)) ** amount
    centres = (torch.arange(n_frames, dtype=torch.float64) + 0.5) * HOP_LENGTH
    samples = torch.arange(n_frames * HOP_LENGTH, dtype=torch.float64) + 0.5
    position = ((samples - centres[0]) / HOP_LENGTH).clamp(0, max(n_frames - 1, 0))
    left = position.floor().long().clamp(max=max(n_frames - 2, 0))
    frac = position - left
    right = (left + 1).clamp(max=n_frames - 1)
    per_sample = gain[left] * (1 - frac) + gain[right] * frac
    return (wav.double() * per_sample).float()


def _ratio(source_f0_hz: torch.Tensor, shifted_f0_hz: torch.Tensor) -> float:
    voiced = source_f0_hz > 0
    if not bool(voiced.any()):
        return 1.0
    return float((shifted_f0_hz[voiced].double() / source_f0_hz[voiced].double()).median())
