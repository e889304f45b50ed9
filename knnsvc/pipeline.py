"""The offline converter: reference pool in, waveform out. No file I/O, no printing.

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

`KnnSvc` is the offline driver of the per-block method in `knnsvc.blocks` (frame selection,
summing weights, vocoding with margins and carried phase), which the streaming driver
(`knnsvc.streaming`) runs too.

Shape letters: T frames (50 Hz), N pool frames, D feature dim, C candidates, K neighbours,
H harmonics, L samples (16 kHz).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from hifigan.generator import Vocoder, VocoderKind
from knnsvc import matching
from knnsvc.audio import Resampler
from knnsvc.blocks import (  # noqa: F401  (frame_energy, follow_loudness, loudness_envelope: re-exported)
    BlockVocoder,
    FrameSelector,
    SummingWeights,
    block_windows,
    check_pool,
    follow_loudness,
    frame_energy,
    loudness_envelope,
    target_f0,
    vocoder_features,
)
from knnsvc.config import (  # noqa: F401  (PROTECT_OFF: re-exported, the README documents it here)
    DEFAULT_BLOCK_SECONDS,
    DEFAULT_F0,
    HOP_LENGTH,
    MAX_BLOCK_SECONDS,
    MIN_BLOCK_SECONDS,
    PROTECT_OFF,
    SAMPLE_RATE,
    MatchConfig,
)
from knnsvc.encoder import WavLMEncoder
from knnsvc.frames import FrameStore
from knnsvc.harmonics import (
    amplitude_rate,
    harmonic_amplitudes,
    harmonics_for_rate,
    magnitude_spectrogram,
    spectrum_size,
)
from knnsvc.matching import frame_blocks
from knnsvc.pitch import F0Extractor, get_f0_extractor
from knnsvc.pool import ReferencePool, module_fingerprint
from knnsvc.runtime import StageTimer, analysis_split, check_network_precision, torch_threads, usable_cores

SPECTRUM_BLOCK = 4096
"""Frames per block when a reference's spectrum and harmonic amplitudes are computed."""

CHECK_BLOCK = 1 << 20
"""Samples per slice when `check_waveform` counts non-finite samples."""


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


class F0Job:
    """The F0 of one recording, computed on a thread of its own (`KnnSvc.start_f0`, `KnnSvc.analyse`).

    Args:
        extract: ``extract(wav_16k, stop) -> (T,) f0_hz``, run once on the thread.
        wav_16k: (L,) CPU waveform at 16 kHz.
    """

    def __init__(self, extract: Callable[[torch.Tensor, threading.Event], torch.Tensor], wav_16k: torch.Tensor,
                 ) -> None:
        self.stop = threading.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knnsvc-f0")
        self._future = self._worker.submit(extract, wav_16k, self.stop)

    def result(self) -> torch.Tensor:
        """The (L // 320 + 1,) float32 F0 in Hz, once computed (the extraction's error, if it failed)."""
        try:
            return self._future.result()
        finally:
            self._worker.shutdown(wait=True)

    def done(self) -> bool:
        """Whether the F0 is computed (or failed, or was stopped)."""
        return self._future.done()

    def cancel(self, wait: bool = False) -> None:
        """Tell the extraction to stop (extractors that take ``stop=`` give up within about a second;
        worker processes are killed); with `wait`, return only once its thread has ended."""
        self.stop.set()
        self._worker.shutdown(wait=wait, cancel_futures=True)


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
        rows = slice(start, stop)
        own = None
        if self.config.blends_source and self.source is not None:
            own = self.source.feats[start:stop]
        return vocoder_features(self.indices_wavlm[rows], self.weights_wavlm[rows], self.pool_feats, self.config,
                                own, self.source_f0_hz[rows])

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
            bounded for any length): 0 = whole recordings at once (the reference's behaviour),
            else within [`MIN_BLOCK_SECONDS`, `MAX_BLOCK_SECONDS`].
        f0: F0 extractor (`knnsvc.pitch.get_f0_extractor`; default: Harvest, which the released
            vocoders were trained on); its `cache_id` enters pool cache keys.

    Stage times accumulate in `timings` (seconds per stage name); clear it to start a new
    measurement. On CUDA the timer synchronises, so GPU work is charged to its own stage.

    Raises:
        ValueError: `block_seconds` is neither 0 nor within the accepted range.
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
        self.encoder = encoder.eval()
        self.vocoder = vocoder.eval() if vocoder is not None else None
        self.kind = VocoderKind(kind)
        self.config = config or MatchConfig()
        self.block_seconds = _checked_block_seconds(block_seconds)
        self.f0 = f0 if f0 is not None else get_f0_extractor(DEFAULT_F0)
        self._timer = StageTimer(self.encoder.device)
        self._encoder_id: str | None = None

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def timer(self) -> StageTimer:
        """The stage timer behind `timings` (the drivers of `knnsvc.blocks` charge their stages to it)."""
        return self._timer

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage since the last clear (encode, f0, knn, reselect, optimise, vocode, ...)."""
        return self._timer.seconds

    @timings.setter
    def timings(self, value: dict[str, float]) -> None:
        self._timer.seconds = value

    @property
    def sample_rate(self) -> int:
        """The output rate: the vocoder's own (16 kHz for the released vocoders, 24 or 44.1 kHz for
        the families trained at a higher rate)."""
        return int(getattr(self.vocoder, "sample_rate", SAMPLE_RATE))

    @property
    def n_harmonics(self) -> int:
        """H, the harmonic amplitude columns of this converter's pools: 49 at 16 kHz, as many as fit
        below the output rate's Nyquist otherwise (`knnsvc.harmonics.harmonics_for_rate`)."""
        return harmonics_for_rate(self.sample_rate)

    def amplitude_rate(self, original_rate: int) -> int:
        """The rate the harmonic amplitudes of a recording made at `original_rate` are measured at:
        16 kHz for a 16 kHz vocoder, else min(original rate, output rate), at least 16 kHz
        (`knnsvc.harmonics.amplitude_rate`)."""
        return amplitude_rate(original_rate, self.sample_rate)

    @property
    def network_precision(self) -> str:
        """The precision WavLM and the vocoder run in (`knnsvc.runtime.NETWORK_PRECISIONS`): float32
        (the reference), or bfloat16/float16 under autocast. Set it to change both."""
        return str(getattr(self.encoder, "precision", "float32"))

    @network_precision.setter
    def network_precision(self, value: str) -> None:
        check_network_precision(value)
        if not hasattr(self.encoder, "precision"):
            if value != "float32":
                raise ValueError(f"network precision {value}: this encoder ({type(self.encoder).__name__}) runs "
                                 "in its own precision only")
            return
        self.encoder.precision = value

    @property
    def samples_per_frame(self) -> int:
        """Output samples per feature frame: 320 at 16 kHz, 480 at 24 kHz, 882 at 44.1 kHz."""
        return int(getattr(self.vocoder, "samples_per_frame", HOP_LENGTH))

    @property
    def block_frames(self) -> int:
        """Frames per F0/vocoder block (0 = whole recordings)."""
        return round(self.block_seconds * SAMPLE_RATE / HOP_LENGTH)

    @property
    def encoder_id(self) -> str:
        """Fingerprint of the encoder weights and layer (part of a pool's cache key)."""
        if self._encoder_id is None:
            declared = getattr(self.encoder, "encoder_id", None)  # an exported encoder names its source's
            self._encoder_id = (declared if isinstance(declared, str)
                                else f"{module_fingerprint(self.encoder)}-layer{self.encoder.layer}")
        return self._encoder_id

    # ----------------------------------------------------------------------------- analysis
    def start_f0(self, wav_16k: torch.Tensor) -> F0Job:
        """Start the F0 of the (L,) 16 kHz waveform `wav_16k` on a thread of its own (`F0Job`), for
        `analyse` to use: a batch starts the next file's F0 while the current one is vocoded."""
        return F0Job(self._timed_f0, wav_16k.detach().cpu())

    def analyse(self, wav_16k: torch.Tensor, progress: Progress | None = None, f0: F0Job | None = None,
                ) -> SourceFeatures:
        """WavLM features, F0 and frame energies of one recording, frame-aligned.

        F0 runs on a second thread while WavLM encodes (Harvest releases the GIL); when anything
        (Ctrl-C included) interrupts the encoding, the F0 thread is told to stop (extractors that
        take ``stop=``) and the exception propagates without waiting for it. Features of a long
        recording go to a `FrameStore` (spilled to a temporary file beyond 64 MB).

        Args:
            wav_16k: (L,) finite floating-point waveform, at least one frame (400 samples) long.
            f0: the F0 of this very waveform, started earlier with `start_f0` (the same curve as
                the one computed here; it is stopped if the analysis fails); None: start it now.

        Returns:
            `SourceFeatures` with T = frames of the encoder.

        Raises:
            TypeError: `wav_16k` is not a floating-point tensor.
            ValueError: `wav_16k` is not 1-D, too short for one frame, or holds NaN/inf samples.
        """
        try:
            check_waveform(wav_16k, "wav_16k")
        except BaseException:
            if f0 is not None:
                f0.cancel()
            raise
        wav_cpu = wav_16k.detach().cpu()
        total = self.encoder.num_frames(wav_cpu.numel())
        if total == 0:
            if f0 is not None:
                f0.cancel()
            raise ValueError(f"wav_16k is too short: {wav_cpu.numel()} samples, one frame needs more than {HOP_LENGTH}")
        layers = self.config.match_layers
        feats = FrameStore(self.encoder.dim)
        match_feats = FrameStore(self.encoder.dim) if layers else None
        f0_job = f0 if f0 is not None else F0Job(self._timed_f0, wav_cpu)
        try:
            if progress is not None:
                progress("encode", 0, total)
            with self._timer("encode"), contextlib.ExitStack() as sharing:
                sharing.enter_context(self.cores_shared_with_f0())
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
                    if f0_job.done():
                        sharing.close()  # the F0 is done: the rest of the encoding gets every core
            f0_hz = f0_job.result()[:total]
        except BaseException:
            f0_job.cancel()  # the F0 thread gives up within about a second (extractors that take `stop`)
            feats.close()
            if match_feats is not None:
                match_feats.close()
            raise
        return SourceFeatures(feats=_compact(feats), f0_hz=f0_hz, energy=frame_energy(wav_cpu, total),
                              match_feats=None if match_feats is None else _compact(match_feats))

    def cores_shared_with_f0(self) -> contextlib.AbstractContextManager:
        """While WavLM encodes on the CPU beside a CPU-bound F0 (Harvest, dio; `analyse` and the
        streaming step): the cores split between them (`runtime.analysis_split`); once the block
        ends, each gets them all again. The output does not change (the F0 workers' blocks are the
        same; tested)."""
        if self.encoder.device.type != "cpu" or not getattr(self.f0, "cpu_bound", False):
            return contextlib.nullcontext()
        threads, f0_blocks = analysis_split(usable_cores())
        stack = contextlib.ExitStack()
        stack.enter_context(torch_threads(min(threads, torch.get_num_threads())))
        stack.enter_context(self.f0.limited(f0_blocks))
        return stack

    def _timed_f0(self, wav_16k: torch.Tensor, stop: threading.Event) -> torch.Tensor:
        with self._timer("f0", sync=False):
            extract: Callable[..., torch.Tensor] = self.f0
            if _accepts_stop(extract):
                return extract(wav_16k, self.block_seconds or None, stop=stop)
            return extract(wav_16k, self.block_seconds or None)

    def reference_pool(
        self,
        wav_16k: torch.Tensor,
        name: str = "",
        wav: torch.Tensor | None = None,
        wav_rate: int | None = None,
        output_rate: int | None = None,
    ) -> ReferencePool:
        """A one-file pool: features, F0 and per-frame harmonic amplitudes (spec §8.1–8.2),
        recording this encoder's fingerprint (`encoder_id`) and the amplitudes' measuring rate.

        The features and F0 come from `wav_16k`. The amplitudes (`harmonics_for_rate(output_rate)`
        columns, `n_harmonics` by default) are measured at `amplitude_rate(wav_rate, output_rate)`:
        from `wav_16k` at 16 kHz (always for a 16 kHz vocoder, and when no `wav` is given), else from
        `wav` (resampled to the measuring rate when it is above it), so a vocoder above 16 kHz gets
        harmonics above 8 kHz from a recording that has them.
        The spectrum and amplitudes are computed `SPECTRUM_BLOCK` frames at a time.

        Args:
            wav_16k: (L,) the recording at 16 kHz.
            name: the file's name in the pool.
            wav: (L',) the same recording at its original rate `wav_rate` (None: only `wav_16k`).
            wav_rate: the rate of `wav`.
            output_rate: the vocoder rate the pool is for (None: this converter's `sample_rate`;
                prematching passes the rate the vocoder is trained at).

        Raises:
            TypeError, ValueError: as `analyse`; `wav` without `wav_rate` or not a mono waveform.
        """
        output_rate = self.sample_rate if output_rate is None else output_rate
        n_harmonics = harmonics_for_rate(output_rate)
        rate = SAMPLE_RATE
        wav_measured: torch.Tensor | None = None
        if wav is not None:
            if not isinstance(wav_rate, numbers.Integral) or isinstance(wav_rate, bool) or wav_rate <= 0:
                raise ValueError(f"reference_pool needs wav_rate, the rate of wav in whole Hz, got {wav_rate!r}")
            check_waveform(wav, "wav")
            rate = amplitude_rate(int(wav_rate), output_rate)
            if rate != SAMPLE_RATE:
                wav_measured = _resampled(wav.detach().cpu(), wav_rate, rate)
        source = self.analyse(wav_16k)
        n_frames = source.num_frames
        feats = source.feats[0:n_frames]
        match_feats = None if source.match_feats is None else source.match_feats[0:n_frames]
        source.close()
        with self._timer("harmonics", sync=False):
            wav_cpu = wav_16k.detach().cpu() if wav_measured is None else _frames_long(wav_measured, n_frames, rate)
            amps = torch.empty(n_frames, n_harmonics)
            for start, stop in frame_blocks(n_frames, SPECTRUM_BLOCK):
                spec = magnitude_spectrogram(wav_cpu, start, stop - start, sample_rate=rate)
                amps[start:stop] = harmonic_amplitudes(spec, source.f0_hz[start:stop], n_harmonics, rate)
        return ReferencePool(feats=feats, f0_hz=source.f0_hz, amps=amps, starts=[0], names=[name],
                             match_feats=match_feats, encoder_id=self.encoder_id, amp_rates=[rate])

    def build_pool(
        self,
        wavs: Sequence[torch.Tensor],
        names: Sequence[str] | None = None,
        originals: Sequence[tuple[torch.Tensor, int] | None] | None = None,
    ) -> ReferencePool:
        """Pool of several recordings of one singer, concatenated in order.

        Args:
            wavs: the recordings at 16 kHz, each (L,).
            names: one name per recording (default "0", "1", ...).
            originals: per recording, ``(waveform (L',), rate)`` at its original rate, or None;
                a vocoder above 16 kHz measures the harmonic amplitudes from them (`reference_pool`).

        Raises:
            ValueError: `names` or `originals` does not give one entry per recording.
        """
        names = list(names) if names is not None else [str(i) for i in range(len(wavs))]
        if len(names) != len(wavs):
            raise ValueError(f"{len(wavs)} recordings but {len(names)} names")
        given = list(originals) if originals is not None else [None] * len(wavs)
        if len(given) != len(wavs):
            raise ValueError(f"{len(wavs)} recordings but {len(given)} original-rate recordings")
        pools = []
        for wav_16k, name, original in zip(wavs, names, given, strict=True):
            if original is None:
                pools.append(self.reference_pool(wav_16k, name))
            else:
                pools.append(self.reference_pool(wav_16k, name, wav=original[0], wav_rate=original[1]))
        return ReferencePool.concat(pools)

    def pool_settings(self) -> dict:
        """Settings that determine a pool's contents (the rest of its cache key)."""
        return {
            "encoder": self.encoder_id,
            "layer": self.encoder.layer,
            "chunk_samples": self.encoder.chunk_samples,
            "f0": self.f0.cache_id,
            "f0_block_seconds": self.block_seconds,
            "match_layers": self.config.match_layers,
            "output_rate": self.sample_rate,
            "harmonics": self.n_harmonics,
        }

    # ----------------------------------------------------------------------------- matching
    def match(
        self, source: torch.Tensor | SourceFeatures, pool: ReferencePool, progress: Progress | None = None
    ) -> MatchResult:
        """Select and weight pool frames for every source frame (spec §6–§7), in blocks.

        The frames are chosen `matching.MATCH_BLOCK` source frames at a time (`blocks.FrameSelector`,
        the reselection carried across blocks); the summing weights are optimised over the whole
        source at once (`blocks.SummingWeights`: the reference's stopping rule is global).

        Args:
            source: (L,) 16 kHz waveform, or its `SourceFeatures`.
            pool: the target singer's `ReferencePool`.

        Raises:
            TypeError: `source` or `pool` is of the wrong type.
            ValueError: a waveform `analyse` refuses; the pool has fewer frames than candidates,
                was built by another encoder, holds features of another width or lacks the
                matching layers; or an automatic pitch shift and the source or the reference has
                no voiced frame.
        """
        source = self._source(source)
        check_pool(pool, self.config, self.encoder_id, source.feats.shape[1])
        cfg = self.config
        n_frames = source.num_frames
        queries, _ = matching_tables(cfg, source, pool)
        f0_target, semitones = target_f0(cfg, self.kind, source.f0_hz, pool.f0_hz)

        with torch.inference_mode():
            selector = FrameSelector(cfg, self.kind, pool, self.device, f0_target_hz=f0_target, timer=self._timer)
            candidates = torch.empty(n_frames, cfg.n_candidates, dtype=torch.long)
            indices_wavlm = torch.empty(n_frames, cfg.topk, dtype=torch.long)
            indices_harm = torch.empty(n_frames, cfg.topk, dtype=torch.long) if self.kind.uses_harmonics else None
            if progress is not None:
                progress("match", 0, n_frames)
            for start, stop in frame_blocks(n_frames, matching.MATCH_BLOCK):
                chosen = selector.select(queries[start:stop], f0_target[start:stop])
                candidates[start:stop] = chosen.candidates
                indices_wavlm[start:stop] = chosen.indices_wavlm
                if indices_harm is not None and chosen.indices_harm is not None:
                    indices_harm[start:stop] = chosen.indices_harm
                if progress is not None:
                    progress("match", stop, n_frames)
            del selector  # its (N, D) unit rows

            weigh = SummingWeights(cfg, self.kind, pool)
            with self._timer("optimise"):
                weights_wavlm = weigh.for_features(indices_wavlm)
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
                weights_harm = weigh.for_harmonics(indices_harm)
            result.indices_harm = indices_harm
            result.weights_harm = weights_harm.float()
            result.amps = weigh.amplitudes(indices_harm, weights_harm)
        return result

    def _source(self, source: object) -> SourceFeatures:
        """`SourceFeatures` as they are; a waveform analysed."""
        if isinstance(source, SourceFeatures):
            return source
        if isinstance(source, torch.Tensor):
            check_waveform(source, "source")
            return self.analyse(source)
        raise TypeError(f"source must be a waveform tensor (L,) or SourceFeatures, got {type(source).__name__}")

    # ----------------------------------------------------------------------------- vocoding
    def vocode_blocks(self, result: MatchResult, progress: Progress | None = None) -> Iterator[torch.Tensor]:
        """The waveform block by block: consecutive (hop * frames,) float32 CPU tensors at the
        vocoder's rate (hop = its `samples_per_frame`, 320 at 16 kHz).

        Each block of `block_frames` frames is vocoded by a `blocks.BlockVocoder` with its margin
        (the vocoder's receptive field, plus the loudness window with `rms_mix`) of extra frames
        on both sides, which are then dropped; the excitation's phase is carried across blocks.
        The concatenated blocks are the whole-sequence output (up to float rounding).
        """
        if self.vocoder is None:
            raise RuntimeError("this converter was built without a vocoder: it can match, not vocode")
        cfg = self.config
        n_frames = result.num_frames
        energy = None  # (T,) the source's frame energies, for rms_mix
        if cfg.rms_mix > 0:
            if result.source is None or result.source.energy is None:
                raise RuntimeError("rms_mix needs the source's frame energies, which this result does not hold")
            energy = result.source.energy
        vocode = BlockVocoder(self.vocoder, lambda a, b: result.f0_hz[a:b], self.device, cfg.rms_mix, self._timer,
                              precision=self.network_precision)
        if progress is not None:
            progress("vocode", 0, n_frames)
        for start, stop, lo, hi in block_windows(n_frames, self.block_frames, vocode.margin):
            amps = None if result.amps is None else result.amps[lo:hi]
            wav = vocode(lo, result.feats_block(lo, hi), result.f0_hz[lo:hi], amps,
                         None if energy is None else energy[lo:hi])
            yield wav[(start - lo) * vocode.hop_length : (stop - lo) * vocode.hop_length]
            if progress is not None:
                progress("vocode", stop, n_frames)

    def vocode(self, result: MatchResult, progress: Progress | None = None) -> torch.Tensor:
        """Waveform (T * hop,) float32 on the CPU, at the vocoder's rate (see `vocode_blocks`)."""
        blocks = list(self.vocode_blocks(result, progress))
        return torch.cat(blocks) if blocks else torch.zeros(0)

    def convert(self, source: torch.Tensor | SourceFeatures, pool: ReferencePool) -> torch.Tensor:
        """Sing the source in the pool's voice.

        Args:
            source: (L,) 16 kHz waveform, or its precomputed `SourceFeatures`.
            pool: the target singer's `ReferencePool`.

        Returns:
            (T * hop,) float32 waveform at the vocoder's rate (16 kHz, 320 per frame, for the
            released vocoders).

        Raises:
            TypeError, ValueError: as `match`.
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


def _resampled(wav: torch.Tensor, rate_in: int, rate_out: int) -> torch.Tensor:
    """(L,) -> (L',) float32, soxr VHQ (`knnsvc.audio.Resampler`: as `load_audio` reads a file at `rate_out`)."""
    if rate_in == rate_out:
        return wav.float()
    resampler = Resampler(rate_in, rate_out, 1)
    block = resampler(wav.float().numpy()[:, None])
    return torch.from_numpy(np.concatenate([block, resampler.flush()])[:, 0])


def _frames_long(wav: torch.Tensor, n_frames: int, sample_rate: int) -> torch.Tensor:
    """`wav` at `sample_rate`, zero-padded at the end if it has fewer than `n_frames` spectrum frames
    (resampled lengths round; WavLM's frames never outnumber them by more than one)."""
    hop = spectrum_size(sample_rate)[1]
    missing = (n_frames - 1) * hop - wav.numel()
    return torch.cat([wav, wav.new_zeros(missing)]) if missing > 0 else wav


def _compact(store: FrameStore) -> torch.Tensor | FrameStore:
    """A store that stayed in memory as a plain tensor; a spilled one as it is."""
    return store if store.spilled else store[0 : len(store)]


def check_waveform(wav_16k: object, name: str) -> None:
    """Refuse what is not a mono floating-point waveform, naming the argument.

    The non-finite samples are counted `CHECK_BLOCK` samples at a time (no whole-length temporaries).

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: not of shape (L,), empty, or holding NaN/inf samples.
    """
    if not isinstance(wav_16k, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor waveform of shape (L,), got {type(wav_16k).__name__}")
    if not wav_16k.is_floating_point():
        raise TypeError(f"{name} must be a floating-point waveform, got {wav_16k.dtype}")
    if wav_16k.dim() != 1:
        raise ValueError(f"{name} must be a mono waveform of shape (L,), got shape {tuple(wav_16k.shape)}")
    if wav_16k.numel() == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    bad = wav_16k.numel() - sum(int(torch.isfinite(wav_16k[start : start + CHECK_BLOCK]).sum())
                                for start in range(0, wav_16k.numel(), CHECK_BLOCK))
    if bad:
        raise ValueError(f"the waveform has {bad} non-finite samples (NaN or inf)")


def _checked_block_seconds(value: object) -> float:
    """`KnnSvc`'s block length: 0 or within [`MIN_BLOCK_SECONDS`, `MAX_BLOCK_SECONDS`]."""
    seconds = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not (seconds == 0 or MIN_BLOCK_SECONDS <= seconds <= MAX_BLOCK_SECONDS):
        raise ValueError(f"block_seconds must be 0 (whole recordings) or within [{MIN_BLOCK_SECONDS:g}, "
                         f"{MAX_BLOCK_SECONDS:g}] seconds, got {value!r}")
    return seconds


def _accepts_stop(f0: Callable) -> bool:
    """Whether an F0 extractor takes ``stop=`` (a `threading.Event` that abandons the work)."""
    try:
        return "stop" in inspect.signature(f0).parameters
    except (TypeError, ValueError):
        return False


def _ratio(source_f0_hz: torch.Tensor, shifted_f0_hz: torch.Tensor) -> float:
    voiced = source_f0_hz > 0
    if not bool(voiced.any()):
        return 1.0
    return float((shifted_f0_hz[voiced].double() / source_f0_hz[voiced].double()).median())
