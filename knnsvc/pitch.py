"""F0 extraction on the WavLM frame grid, F0 curve files, and key shift.

Extractors are selected by name (:data:`F0_EXTRACTORS`, :func:`get_f0_extractor`). WORLD Harvest
is the default: the released vocoders were trained on it. Dio, FCPE and SwiftF0 are faster; the
neural two need the optional packages of the ``pitch`` extra. Every extractor returns
(L // 320 + 1,) float32 Hz at frame centres n * 20 ms, 0 for unvoiced frames, and works on long
audio in blocks with margins. Harvest and Dio analyse the blocks in worker processes, one per
core by default, bit for bit what one thread computes; a call can be stopped from another thread
(:class:`F0Stopped`). F0 curve files (``time_s,f0_hz`` CSV) are read and written here too.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import functools
import importlib
import importlib.metadata
import io
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knnsvc.audio import MEDIAN_UNDEFINED, no_voiced_frames
from knnsvc.config import (  # noqa: F401  (the pitch-shift setting lives with the settings; re-exported)
    AUTO_SHIFTS,
    HOP_LENGTH,
    MAX_SHIFT_SEMITONES,
    SAMPLE_RATE,
    PitchShift,
    parse_pitch_shift,
)
from knnsvc.runtime import usable_cores

logger = logging.getLogger(__name__)

F0_FLOOR_HZ = 65.0
F0_CEIL_HZ = 1047.0
VOICED_MIN_HZ = 80.0
"""Harvest values below this are set to 0 (= unvoiced), as in the reference."""


F0_BLOCK_MARGIN_SECONDS = 1.0
"""Audio analysed on each side of a block beyond what it keeps (Harvest's filters settle within it)."""

DC_TAIL_SECONDS = 1.0
"""Minimum length of the constant tail that gives a block the whole recording's mean (see below)."""

F0_EXTRACTORS: tuple[str, ...] = ("harvest", "dio", "fcpe", "swiftf0")
"""Names accepted by :func:`get_f0_extractor`; the first is the default."""

PITCH_EXTRA_INSTALL = 'pip install -e ".[pitch]"'
"""Installs swift-f0 and torchfcpe's dependencies."""

FCPE_INSTALL = f"{PITCH_EXTRA_INSTALL} && pip install --no-deps torchfcpe==0.0.4"
"""torchfcpe declares torchaudio, which pulls a CUDA torch: it is installed without dependencies."""

FCPE_HOP = 160
"""Samples between FCPE frames (10 ms); frame i is the pitch at i * 10 ms (measured on glides)."""

FCPE_THRESHOLD = 0.006
"""FCPE frames whose largest class activation is at most this are unvoiced (torchfcpe's default)."""

SWIFTF0_HOP = 256
"""Samples between SwiftF0 frames (16 ms); frame i is the pitch at i * 16 ms."""

SWIFTF0_CONFIDENCE = 0.5
"""SwiftF0 frames with a confidence below this are unvoiced (its calibrated voicing threshold)."""


F0_WORKER_POLL_SECONDS = 0.1
"""How often a call that waits on worker processes looks at its `stop` event."""


class F0Stopped(RuntimeError):
    """The F0 extraction was stopped by its `stop` event before it finished (no F0 is returned)."""


def _raise_if_stopped(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise F0Stopped("F0 extraction stopped")


def harvest_f0(wav_16k: torch.Tensor, block_seconds: float | None = None) -> torch.Tensor:
    """WORLD Harvest F0 at the WavLM frame rate (spec §5), optionally in blocks.

    Harvest's memory grows about quadratically with the length of what it analyses (9 GB for six
    minutes), so long recordings are analysed in blocks of `block_seconds`, each with
    `F0_BLOCK_MARGIN_SECONDS` of extra audio on both sides whose frames are discarded. Two
    properties of Harvest that span the whole recording are reproduced for every block, which
    makes the blocks agree with the whole-recording analysis (on the real singing clips: no
    frame differs for 30 s blocks; a frame can differ by one float32 ulp, as a block's FFT sizes
    differ from the whole recording's):

    - Harvest removes the *mean of what it is given* before filtering. A block is therefore
      extended by a constant tail, on the side that is not an end of the recording and beyond the
      discarded margin, chosen so that the block's mean is the whole recording's mean.
    - Harvest decimates to 8 kHz on a grid that depends on the parity of the length; a block is
      cut with the parity of the whole recording, so it samples the same grid.

    Args:
        wav_16k: (L,) waveform at 16 kHz.
        block_seconds: analyse in blocks of this length; None or 0 analyses the whole recording
            at once (the reference's behaviour; memory grows with the length).

    Returns:
        f0_hz: (L // 320 + 1,) float32; frame n is centred at n * 20 ms; 0 marks unvoiced frames.

    Raises:
        ValueError: `wav_16k` is empty or not 1-D.
    """
    return torch.from_numpy(_analyse_in_blocks(_checked_samples(wav_16k), block_seconds, _harvest, match_mean=True))


def _checked_samples(wav_16k: torch.Tensor) -> np.ndarray:
    """(L,) samples of a non-empty mono waveform, float32 if float32 holds them exactly (float32,
    float16, bfloat16) and float64 otherwise; a view of a float32 or float64 CPU tensor, not a
    copy (the analyses convert one block at a time to float64, see :func:`_segments`).
    ValueError otherwise."""
    if wav_16k.dim() != 1 or wav_16k.numel() == 0:
        raise ValueError(f"F0 needs a non-empty mono waveform of shape (L,), got shape {tuple(wav_16k.shape)}")
    samples = wav_16k.detach().cpu()
    exact_in_float32 = samples.dtype in (torch.float32, torch.float16, torch.bfloat16)
    return (samples.float() if exact_in_float32 else samples.double()).numpy()


MEAN_LEAF_SAMPLES = 1 << 18
"""Largest run of samples that :func:`_mean_float64` converts to float64 at once."""


def _mean_float64(samples: np.ndarray) -> float:
    """``float(samples.astype(np.float64).mean())`` to the last bit, without the float64 copy.

    NumPy sums a contiguous float64 array pairwise, halving it (the first half a multiple of 8
    long) down to runs of 128; ``samples.mean(dtype=np.float64)`` instead casts in buffers of 8192
    and adds the buffers' sums in a row, which rounds differently beyond about a million samples.
    The same halving is followed here down to runs of at most `MEAN_LEAF_SAMPLES`, each converted
    and summed by NumPy, so the additions are the whole float64 sum's.

    Args:
        samples: (L,) float32 or float64 samples, L >= 1.
    """
    def pairwise(lo: int, n: int) -> float:
        if n <= MEAN_LEAF_SAMPLES:
            return float(np.add.reduce(np.ascontiguousarray(samples[lo : lo + n], dtype=np.float64)))
        half = n // 2
        half -= half % 8
        return pairwise(lo, half) + pairwise(lo + half, n - half)

    return float(np.float64(pairwise(0, samples.shape[0])) / samples.shape[0])


def _block_plan(n_samples: int, block_seconds: float | None, align: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, lo, hi) sample bounds of each block: it keeps [start, stop) and analyses
    [lo, hi), `F0_BLOCK_MARGIN_SECONDS` more on each side, lo a multiple of `align`. One block
    (0, L, 0, L) when `block_seconds` is None or 0 or the recording fits one block and its margin."""
    block = round((block_seconds or 0.0) * SAMPLE_RATE / HOP_LENGTH) * HOP_LENGTH
    margin = round(F0_BLOCK_MARGIN_SECONDS * SAMPLE_RATE / HOP_LENGTH) * HOP_LENGTH
    if block <= 0 or n_samples <= block + margin:
        return [(0, n_samples, 0, n_samples)]
    plan = []
    for start in range(0, n_samples, block):
        stop = min(start + block, n_samples)
        plan.append((start, stop, max(start - margin, 0) // align * align, min(stop + margin, n_samples)))
    return plan


def _analyse_in_blocks(
    samples: np.ndarray,
    block_seconds: float | None,
    analyse: Callable[[np.ndarray], np.ndarray],
    match_mean: bool,
    align: int = HOP_LENGTH,
    stop: threading.Event | None = None,
) -> np.ndarray:
    """`analyse` over the whole recording, or over the blocks of :func:`_block_plan`, in this thread.

    Args:
        samples: (L,) float32 or float64 waveform at 16 kHz; `analyse` gets float64 copies of
            one block at a time (of the whole recording when it is one block).
        block_seconds: block length; None or 0 for one analysis of everything.
        analyse: (S,) float64 segment starting on the frame grid -> (S // 320 + 1,) float32 F0.
        match_mean: give each block the recording's mean and length parity (WORLD, see
            :func:`harvest_f0`).
        align: segments start at multiples of this many samples (a multiple of 320), so that an
            extractor with another hop sees its frames where the whole-recording analysis does.
        stop: checked before each block; once set, :class:`F0Stopped` is raised.

    Returns:
        (L // 320 + 1,) float32 F0 in Hz.
    """
    plan = _block_plan(samples.shape[0], block_seconds, align)
    if len(plan) == 1:
        _raise_if_stopped(stop)
        return analyse(np.asarray(samples, dtype=np.float64))
    f0_hz = np.empty(samples.shape[0] // HOP_LENGTH + 1, dtype=np.float32)
    for segment, first_frame, keep in _segments(samples, plan, match_mean):
        _raise_if_stopped(stop)
        frames = analyse(segment)
        f0_hz[keep] = frames[keep.start - first_frame : keep.stop - first_frame]
    return f0_hz


def _segments(
    samples: np.ndarray, plan: list[tuple[int, int, int, int]], match_mean: bool
) -> Iterator[tuple[np.ndarray, int, slice]]:
    """What each block of `plan` analyses, made when asked for (one block's samples at a time,
    converted to float64 then: the whole of `samples`, float32 or float64, is never copied).

    Yields:
        segment: (S,) float64 samples the block analyses (with a DC tail when `match_mean`).
        first_frame: frame of the recording at the segment's first sample (negative for a tail in front).
        keep: the frames of the recording that the block provides.
    """
    n_samples = samples.shape[0]
    n_frames = n_samples // HOP_LENGTH + 1
    mean = _mean_float64(samples) if match_mean else 0.0
    for start, stop, lo, hi in plan:
        first_frame = lo // HOP_LENGTH
        if match_mean:
            if hi < n_samples and (hi - lo) % 2 != n_samples % 2:
                hi += 1  # same decimation grid as the whole recording
            tail_at_end = hi < n_samples
            piece = samples[lo:hi].astype(np.float64)
            tail = _dc_tail(piece, mean)
            segment = np.concatenate([piece, tail] if tail_at_end else [tail, piece])
            first_frame = (lo - (0 if tail_at_end else tail.shape[0])) // HOP_LENGTH
        else:
            segment = samples[lo:hi].astype(np.float64)
        yield segment, first_frame, slice(start // HOP_LENGTH, stop // HOP_LENGTH if stop < n_samples else n_frames)


def _dc_tail(segment: np.ndarray, mean: float) -> np.ndarray:
    """A constant run that brings `segment`'s mean to `mean`: a whole number of frames long (so a
    tail in front keeps the frame grid), at least `DC_TAIL_SECONDS`, its level within ±0.5."""
    excess = mean * segment.shape[0] - float(segment.sum())
    length = max(round(DC_TAIL_SECONDS * SAMPLE_RATE), math.ceil(abs(excess) / 0.5))
    length = -(-length // HOP_LENGTH) * HOP_LENGTH
    level = (mean * (segment.shape[0] + length) - float(segment.sum())) / length
    return np.full(length, level)


def _pyworld() -> types.ModuleType:
    with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import pyworld
    return pyworld


def _harvest(samples: np.ndarray) -> np.ndarray:
    """Harvest with the reference's settings on float64 samples; values below 80 Hz -> 0."""
    f0, _ = _pyworld().harvest(
        samples,
        SAMPLE_RATE,
        f0_floor=F0_FLOOR_HZ,
        f0_ceil=F0_CEIL_HZ,
        frame_period=HOP_LENGTH / SAMPLE_RATE * 1000.0,
    )
    f0[f0 < VOICED_MIN_HZ] = 0.0
    return f0.astype(np.float32)


def _dio(samples: np.ndarray) -> np.ndarray:
    """Dio refined by StoneMask, with Harvest's floor, ceiling, frame period and 80 Hz rule."""
    pyworld = _pyworld()
    f0, times = pyworld.dio(
        samples,
        SAMPLE_RATE,
        f0_floor=F0_FLOOR_HZ,
        f0_ceil=F0_CEIL_HZ,
        frame_period=HOP_LENGTH / SAMPLE_RATE * 1000.0,
    )
    f0 = pyworld.stonemask(samples, f0, times, SAMPLE_RATE)
    f0[f0 < VOICED_MIN_HZ] = 0.0
    return f0.astype(np.float32)


# ------------------------------------------------------------------------- worker processes (WORLD)
_WORLD_METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"harvest": _harvest, "dio": _dio}
"""The per-block analyses that worker processes run, by extractor name."""

_WORKER_BOOT = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.path.insert(0, sys.argv[1]); "
    "from knnsvc.pitch import _serve_blocks; _serve_blocks(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))"
)
"""A worker's program: it ignores Ctrl-C (its parent ends it) and imports this very package."""


def default_f0_workers() -> int:
    """The cores this process may run on (`runtime.usable_cores`)."""
    return usable_cores()


def _serve_blocks(method: str, read_fd: int, write_fd: int) -> None:
    """A worker process's loop: (S,) float64 segments in, ("ok", (S // 320 + 1,) float32 F0) out.

    It says "ready" once its imports are done, and returns when its parent closes the pipe (or
    exits). An exception in the analysis goes back as ("error", "<type>: <message>").
    """
    analyse = _WORLD_METHODS[method]
    _pyworld()
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        outbox.send("ready")
        while True:
            segment = inbox.recv()
            try:
                reply: tuple[str, Any] = ("ok", analyse(segment))
            except Exception as error:  # noqa: BLE001  (reported to the parent, which raises it)
                reply = ("error", f"{type(error).__name__}: {error}")
            outbox.send(reply)
    except (EOFError, OSError):
        return  # the parent closed the pipe or is gone


@dataclass
class _Worker:
    """One worker process and the parent's ends of its two pipes."""

    process: subprocess.Popen
    inbox: Connection  # results from the worker
    outbox: Connection  # segments to the worker
    ready: bool = False
    job: tuple[int, int, slice] | None = None  # block index, its first frame, the frames it keeps

    @classmethod
    def start(cls, method: str) -> _Worker:
        to_worker, from_worker = os.pipe(), os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, str(Path(__file__).resolve().parents[1]), method,
                 str(to_worker[0]), str(from_worker[1])],
                pass_fds=(to_worker[0], from_worker[1]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C at the terminal reaches the parent only
            )
        except BaseException:
            for fd in (*to_worker, *from_worker):
                os.close(fd)
            raise
        os.close(to_worker[0])
        os.close(from_worker[1])
        return cls(process, Connection(from_worker[0], writable=False), Connection(to_worker[1], readable=False))

    def end(self) -> None:
        """Kill the process (if it still runs), reap it and close the pipes."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        self.inbox.close()
        self.outbox.close()

    def death(self, n_blocks: int) -> RuntimeError:
        """The error for a worker whose pipe closed: how it ended and what it was doing."""
        try:
            code = self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            how = f"signal {-code}"
            with contextlib.suppress(ValueError):
                how += f", {signal.Signals(-code).name}"
        else:
            how = f"exit status {code}"
        if self.job is not None:
            doing = f"while analysing block {self.job[0] + 1} of {n_blocks}"
        else:
            doing = "while idle" if self.ready else "while starting"
        return RuntimeError(f"F0 worker died ({how}) {doing}")


class _BlockPool:
    """Worker processes that run one WORLD analysis on blocks of recordings.

    Started lazily (as many as a call has blocks, up to `size`), kept for later calls, killed at
    exit. One recording at a time: a second caller waits for the first (and honours its own
    `stop` while it waits). When a call is stopped, interrupted or fails, every worker is killed
    (in-flight blocks are abandoned) and the next call starts fresh ones.
    """

    def __init__(self, method: str, size: int) -> None:
        self.method = method
        self.size = size
        self._workers: list[_Worker] = []
        self._turn = threading.Lock()
        self.limit: int | None = None
        """At most this many blocks in flight at once (read before each dispatch); None: `size`."""

    def analyse(self, samples: np.ndarray, block_seconds: float | None, stop: threading.Event | None) -> np.ndarray:
        """Like :func:`_analyse_in_blocks` with the WORLD settings, the blocks analysed by the workers.

        Args:
            samples: (L,) float32 or float64 waveform at 16 kHz (sent as float64, block by block).
            block_seconds: block length; None or 0 for one analysis of everything (in one worker).
            stop: once set, the call kills the workers and raises :class:`F0Stopped`.

        Returns:
            (L // 320 + 1,) float32 F0 in Hz, identical to the serial analysis.
        """
        while not self._turn.acquire(timeout=F0_WORKER_POLL_SECONDS):
            _raise_if_stopped(stop)
        try:
            return self._analyse(samples, _block_plan(samples.shape[0], block_seconds, HOP_LENGTH), stop)
        except BaseException:
            self.close()  # stopped, interrupted or failed: no worker keeps working on this recording
            raise
        finally:
            self._turn.release()

    def _analyse(
        self, samples: np.ndarray, plan: list[tuple[int, int, int, int]], stop: threading.Event | None
    ) -> np.ndarray:
        n_blocks = len(plan)
        f0_hz = np.empty(samples.shape[0] // HOP_LENGTH + 1, dtype=np.float32)
        whole: np.ndarray | None = None
        if n_blocks == 1:  # the whole recording, as the serial path analyses it (no tail)
            whole_segment = np.asarray(samples, dtype=np.float64)
            jobs: Iterator[tuple[int, tuple[np.ndarray, int, slice]]] = iter([(0, (whole_segment, 0, slice(0, None)))])
        else:
            jobs = enumerate(_segments(samples, plan, match_mean=True))
        job = next(jobs, None)
        for worker in [worker for worker in self._workers if worker.process.poll() is not None]:
            logger.warning("F0 worker %d had ended (exit status %s); starting another", worker.process.pid,
                           worker.process.returncode)
            worker.end()
            self._workers.remove(worker)
        while len(self._workers) < min(self.size, n_blocks):
            self._workers.append(_Worker.start(self.method))
        done = 0
        while done < n_blocks:
            _raise_if_stopped(stop)
            in_flight = sum(worker.job is not None for worker in self._workers)
            for worker in self._workers:
                if in_flight >= (self.limit or self.size):
                    break
                if job is not None and worker.ready and worker.job is None:
                    in_flight += 1
                    index, (segment, first_frame, keep) = job
                    worker.job = (index, first_frame, keep)
                    try:
                        worker.outbox.send(segment)
                    except OSError:
                        raise worker.death(n_blocks) from None
                    job = next(jobs, None)
            for inbox in wait([worker.inbox for worker in self._workers], timeout=F0_WORKER_POLL_SECONDS):
                worker = next(worker for worker in self._workers if worker.inbox is inbox)
                try:
                    message = worker.inbox.recv()
                except (EOFError, OSError):
                    raise worker.death(n_blocks) from None
                if message == "ready":
                    worker.ready = True
                    continue
                assert worker.job is not None
                (index, first_frame, keep), worker.job = worker.job, None
                status, frames = message
                if status != "ok":
                    raise RuntimeError(f"F0 analysis of block {index + 1} of {n_blocks} failed: {frames}")
                if n_blocks == 1:
                    whole = frames
                else:
                    f0_hz[keep] = frames[keep.start - first_frame : keep.stop - first_frame]
                done += 1
        return f0_hz if whole is None else whole

    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [worker.process.pid for worker in self._workers]

    def close(self) -> None:
        """Kill every worker; the next call starts new ones."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.end()


_POOLS: dict[tuple[str, int], _BlockPool] = {}
_POOLS_LOCK = threading.Lock()


def _block_pool(method: str, size: int) -> _BlockPool:
    """The process-wide pool of `size` workers for `method` (no process is started here)."""
    with _POOLS_LOCK:
        return _POOLS.setdefault((method, size), _BlockPool(method, size))


@atexit.register
def _close_pools() -> None:
    for pool in list(_POOLS.values()):
        pool.close()


# ------------------------------------------------------------------------------ neural extractors
class _Fcpe:
    """FCPE (torchfcpe's bundled model) with whole-recording statistics in every block.

    The model is convolutional (0.95 s of context each way, inside the block margin) except for
    one statistic over time: the GroupNorm after its first convolution normalises over all frames
    it is given. Evaluated as torchfcpe does, a block would normalise over itself (on the real
    clips, 30 s blocks moved F0 by 5-16 cents RMS with octave flips), so the model runs here layer
    by layer: a first pass over the blocks sums the first convolution's output per group over the
    frames each block keeps (the whole recording's frames, each once), and the second pass
    normalises every block with those sums, in float64. Blocks therefore agree with the whole
    recording up to float32 rounding, and the whole recording with torchfcpe's own forward pass.
    Audio above full scale is scaled to peak 1 (torchfcpe expects [-1, 1]; a gain does not move
    F0), one block at a time, in float64.
    """

    def __init__(self, model: Any) -> None:
        self.model = model  # torchfcpe's InferCFNaiveMelPE (untyped); .model is its CFNaiveMelPE
        self.device: torch.device = model.tensor_device_marker.device

    def __call__(
        self, samples: np.ndarray, block_seconds: float | None, stop: threading.Event | None = None
    ) -> np.ndarray:
        """(L,) float32 or float64 -> (L // 320 + 1,) float32 F0 in Hz; `stop` is looked at before each block."""
        scale = max(1.0, -float(samples.min()), float(samples.max()))  # the peak, above full scale
        norm = self.model.model.input_stack[1]
        groups = torch.zeros(2, norm.num_groups, dtype=torch.float64, device=self.device)
        count = 0
        for start, end, lo, hi in _block_plan(samples.shape[0], block_seconds, HOP_LENGTH):
            _raise_if_stopped(stop)
            hidden = self._first_conv(samples[lo:hi], scale)  # (1, C, S // 160 + 1)
            last = (end - lo) // FCPE_HOP if end < samples.shape[0] else hidden.shape[-1]
            kept = hidden[0, :, (start - lo) // FCPE_HOP : last].double().reshape(norm.num_groups, -1)
            groups += torch.stack([kept.sum(1), kept.square().sum(1)])
            count += kept.shape[1]
        mean = groups[0] / count
        std = (groups[1] / count - mean.square() + norm.eps).sqrt()
        stats = (mean.float().repeat_interleave(norm.num_channels // norm.num_groups)[:, None],
                 std.float().repeat_interleave(norm.num_channels // norm.num_groups)[:, None])
        segment = functools.partial(self._segment, stats, scale)
        return _analyse_in_blocks(samples, block_seconds, segment, match_mean=False, stop=stop)

    @torch.inference_mode()
    def _first_conv(self, segment: np.ndarray, scale: float) -> torch.Tensor:
        """(S,) -> (1, C, S // 160 + 1): log-mel frames at i * 10 ms of ``segment / scale`` (in
        float64, then float32) through the first convolution."""
        wav = torch.from_numpy((segment.astype(np.float64) / scale).astype(np.float32)).to(self.device)
        mel = self.model.wav2mel(wav[None, :, None], SAMPLE_RATE)  # (1, T, n_mels)
        return self.model.model.input_stack[0](mel.transpose(1, 2))

    @torch.inference_mode()
    def _segment(self, stats: tuple[torch.Tensor, torch.Tensor], scale: float, segment: np.ndarray) -> np.ndarray:
        """CFNaiveMelPE.infer of ``segment / scale`` with the given GroupNorm mean and std (each (C, 1));
        -> 20 ms frames."""
        pe = self.model.model
        norm, activation, second_conv = pe.input_stack[1], pe.input_stack[2], pe.input_stack[3]
        mean, std = stats
        hidden = (self._first_conv(segment, scale) - mean) / std * norm.weight[:, None] + norm.bias[:, None]
        x = second_conv(activation(hidden)).transpose(1, 2)  # (1, T, C)
        latent = torch.sigmoid(pe.output_proj(pe.norm(pe.net(x))))  # (1, T, n_classes)
        cents = pe.latent2cents_local_decoder(latent, threshold=FCPE_THRESHOLD)
        f0 = pe.cent_to_f0(cents)[0, :, 0].float().cpu().numpy()  # (S // 160 + 1,), 0 below threshold
        return _native_to_frames(f0, FCPE_HOP, segment.shape[0])


def _swiftf0(detector: Any, segment: np.ndarray) -> np.ndarray:
    """SwiftF0 at 16 ms, searched between Harvest's floor and ceiling, resampled to 20 ms."""
    result = detector.detect(segment.astype(np.float32), SAMPLE_RATE, fmin=F0_FLOOR_HZ, fmax=F0_CEIL_HZ)
    f0 = np.where(result.confidence >= SWIFTF0_CONFIDENCE, result.pitch_hz, 0.0)
    return _native_to_frames(f0, SWIFTF0_HOP, segment.shape[0])


def _native_to_frames(f0_native: np.ndarray, hop: int, n_samples: int) -> np.ndarray:
    """A track with frame i at i * `hop` samples onto the 20 ms grid (see :func:`resample_f0`).

    Values outside Harvest's voiced range [80, 1047] Hz become unvoiced first. The last one or two
    20 ms frames can lie past the last native frame (by less than one hop): they take its value.

    Returns:
        (n_samples // 320 + 1,) float32.
    """
    f0 = np.where((f0_native >= VOICED_MIN_HZ) & (f0_native <= F0_CEIL_HZ), f0_native, 0.0)
    native = np.arange(f0.shape[0]) * hop
    frames = np.minimum(np.arange(n_samples // HOP_LENGTH + 1) * HOP_LENGTH, native[-1])
    return resample_f0(native, f0, frames).astype(np.float32)


def resample_f0(times: np.ndarray, f0_hz: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """An F0 track sampled at `times` read at `targets` (same unit), unvoiced where it is unvoiced.

    A target is voiced when the nearer of the two samples around it is voiced (halfway between a
    voiced and an unvoiced one: unvoiced). Its F0 is linear in log-F0 between the two samples when
    both are voiced, else the voiced one's. Targets before the first or after the last sample are
    unvoiced.

    Args:
        times: (M,) strictly increasing sample times.
        f0_hz: (M,) F0 at those times, 0 = unvoiced.
        targets: (T,) times to read.

    Returns:
        (T,) float64 F0 in Hz, 0 = unvoiced.
    """
    times, f0_hz, targets = (np.asarray(a, dtype=np.float64) for a in (times, f0_hz, targets))
    if times.shape[0] == 1:
        return np.where(targets == times[0], f0_hz[0], 0.0)
    right = np.searchsorted(times, targets, side="right").clip(1, times.shape[0] - 1)
    left = right - 1
    weight = (targets - times[left]) / (times[right] - times[left])  # in [0, 1] inside the track
    voiced_left, voiced_right = f0_hz[left] > 0, f0_hz[right] > 0
    voiced = np.where(weight < 0.5, voiced_left, np.where(weight > 0.5, voiced_right, voiced_left & voiced_right))
    log_left = np.log(np.where(voiced_left, f0_hz[left], 1.0))
    log_right = np.log(np.where(voiced_right, f0_hz[right], 1.0))
    log_f0 = np.where(
        voiced_left & voiced_right,
        (1.0 - weight) * log_left + weight * log_right,
        np.where(voiced_left, log_left, log_right),
    )
    inside = (targets >= times[0]) & (targets <= times[-1])
    return np.where(voiced & inside, np.exp(log_f0), 0.0)


_TORCHAUDIO_SUBMODULES = ("torchaudio", "torchaudio.transforms")


class _ResampleUnavailable:
    """torchaudio.transforms.Resample for torchfcpe's import; knnsvc only passes it 16 kHz audio."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("torchfcpe was imported without torchaudio: it can only analyse 16 kHz audio")


def _torchaudio_loads() -> bool:
    """Whether torchaudio imports (the PyPI build needs CUDA libraries that a CPU torch lacks)."""
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        for name in [name for name in sys.modules if name == "torchaudio" or name.startswith("torchaudio.")]:
            del sys.modules[name]  # a partly imported, unusable torchaudio
        return False
    return True


@contextlib.contextmanager
def _torchaudio_stand_in() -> Iterator[None]:
    """A two-module torchaudio for the duration of torchfcpe's import.

    torchfcpe's only use of torchaudio is ``from torchaudio.transforms import Resample`` in
    mel_extractor.py, called for input not at 16 kHz, which this module never passes. The stand-in
    raises if it is ever constructed, and leaves ``sys.modules`` after the import, so no other
    package mistakes it for torchaudio.
    """
    package, transforms = (types.ModuleType(name) for name in _TORCHAUDIO_SUBMODULES)
    vars(transforms)["Resample"] = _ResampleUnavailable
    vars(package)["transforms"] = transforms
    sys.modules.update(dict(zip(_TORCHAUDIO_SUBMODULES, (package, transforms), strict=True)))
    try:
        yield
    finally:
        for name in _TORCHAUDIO_SUBMODULES:
            sys.modules.pop(name, None)


@contextlib.contextmanager
def _environment_kept(variable: str) -> Iterator[None]:
    """Restore an environment variable (or its absence) that an import changes."""
    value = os.environ.get(variable)
    try:
        yield
    finally:
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value


def _import_torchfcpe() -> types.ModuleType:
    """torchfcpe, imported with the torchaudio stand-in where torchaudio does not load.

    Raises:
        ImportError: torchfcpe or one of its dependencies is missing; the message says how to install.
    """
    try:
        if "torchfcpe" not in sys.modules:
            stand_in = contextlib.nullcontext() if _torchaudio_loads() else _torchaudio_stand_in()
            quiet = contextlib.redirect_stdout(io.StringIO())
            with stand_in, _environment_kept("LRU_CACHE_CAPACITY"), quiet as said:
                importlib.import_module("torchfcpe")  # it prints, and sets oneDNN's cache size to 3
            logger.debug("torchfcpe import: %s", said.getvalue().strip())
        return importlib.import_module("torchfcpe")
    except ImportError as error:
        raise ImportError(
            f"the fcpe F0 extractor needs torchfcpe ({error}); install with: {FCPE_INSTALL}"
        ) from None


def _import_swift_f0() -> types.ModuleType:
    try:
        return importlib.import_module("swift_f0")
    except ImportError as error:
        raise ImportError(
            f"the swiftf0 F0 extractor needs swift-f0 ({error}); install with: {PITCH_EXTRA_INSTALL}"
        ) from None


@functools.lru_cache(maxsize=None)
def _fcpe(device: str) -> _Fcpe:
    """The FCPE model bundled in torchfcpe's wheel, loaded once per device, in eval mode.

    Frame i of its output is the pitch at i * 10 ms: on rising and falling glides its error is
    symmetric for that alignment (not for i * 10 ms + 5 ms, the centre of its mel window).
    """
    torchfcpe = _import_torchfcpe()
    with contextlib.redirect_stdout(io.StringIO()) as said:  # torchfcpe prints its settings
        model = torchfcpe.spawn_bundled_infer_model(device=device)
    logger.debug("torchfcpe model: %s", said.getvalue().strip())
    return _Fcpe(model.eval())


@functools.lru_cache(maxsize=None)
def _swiftf0_detector() -> Any:
    """One SwiftF0 ONNX session (CPU), its thread pool sleeping between calls."""
    return _import_swift_f0().SwiftF0(spin=False)


@dataclass(frozen=True)
class F0Extractor:
    """A named F0 extractor: ``extractor(wav_16k, block_seconds=None, *, stop=None) -> f0_hz``.

    Every extractor returns (L // 320 + 1,) float32 Hz at frame centres n * 20 ms (Harvest's
    grid), 0 = unvoiced, within Harvest's voiced range (below 80 Hz or above 1047 Hz is
    unvoiced). Tracks with another hop are read onto that grid by :func:`resample_f0`. Long audio
    is analysed in blocks of `block_seconds` with `F0_BLOCK_MARGIN_SECONDS` of discarded audio on
    each side, in bounded memory; how exactly blocks reproduce the whole-recording analysis:

    - harvest: identical up to one float32 ulp (mean-preserving tail and decimation parity, see
      :func:`harvest_f0`).
    - dio: the same tail (Dio removes the mean too): identical up to one float32 ulp on the real
      clips and the tests' signal; its voiced-run post-processing could reach past the margin.
    - fcpe: identical up to float32 rounding (whole-recording GroupNorm statistics, see `_Fcpe`).
    - swiftf0: identical up to ONNX Runtime's rounding: its receptive field (0.18 s each way) lies
      inside the margin and blocks start on its 16 ms grid (multiples of 80 ms).

    harvest and dio with more than one worker analyse the blocks (or the whole recording, as one
    block) in worker processes, bit for bit what the serial path computes; see
    :func:`get_f0_extractor`.

    Attributes:
        name: one of :data:`F0_EXTRACTORS`.
        cache_id: changes whenever the output can change (name, package version, settings,
            and the device type where the arithmetic depends on it); key caches of F0 with it.
            It does not depend on the number of workers (the output does not).
        analyse: the in-process analysis: (L,) float32 or float64 samples, block_seconds, stop=None ->
            (L // 320 + 1,) float32 F0.
        workers: processes that analyse blocks (1: in the calling thread).
    """

    name: str
    cache_id: str
    analyse: Callable[..., np.ndarray] = field(repr=False)
    workers: int = 1
    pool: _BlockPool | None = field(default=None, repr=False, compare=False)

    def __call__(
        self, wav_16k: torch.Tensor, block_seconds: float | None = None, *, stop: threading.Event | None = None
    ) -> torch.Tensor:
        """F0 of a (L,) 16 kHz waveform -> (L // 320 + 1,) float32 Hz, 0 = unvoiced.

        Args:
            wav_16k: (L,) waveform at 16 kHz.
            block_seconds: analyse in blocks of this length; None or 0: the whole recording at once.
            stop: an event another thread may set to abandon the analysis. With worker processes
                the call kills them (in-flight blocks too) and returns within about
                `F0_WORKER_POLL_SECONDS`; in-process it is looked at between blocks.

        Raises:
            ValueError: `wav_16k` is empty or not 1-D.
            F0Stopped: `stop` was set before the analysis finished.
            RuntimeError: a worker process died (e.g. killed by the OS); the message says how and
                on which block. The extractor stays usable: the next call starts new workers.
        """
        samples = _checked_samples(wav_16k)
        if self.pool is not None:
            return torch.from_numpy(self.pool.analyse(samples, block_seconds, stop))
        return torch.from_numpy(self.analyse(samples, block_seconds, stop=stop))

    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes running now (none before the first call, or in-process)."""
        return [] if self.pool is None else self.pool.pids()

    @property
    def cpu_bound(self) -> bool:
        """Whether the analysis keeps a CPU core busy for a long time (harvest and dio)."""
        return self.name in _WORLD_METHODS

    @contextlib.contextmanager
    def limited(self, blocks: int) -> Iterator[None]:
        """At most `blocks` blocks analysed at once inside the block (the workers of a call already
        running included; the output does not change); no effect in-process."""
        if self.pool is None:
            yield
            return
        self.pool.limit = max(1, blocks)
        try:
            yield
        finally:
            self.pool.limit = None


def get_f0_extractor(name: str, device: str | torch.device = "cpu", workers: int | None = None) -> F0Extractor:
    """The F0 extractor called `name` (any case), its model loaded once per device and kept.

    harvest and dio (pyworld) and swiftf0 (ONNX Runtime) run on the CPU whatever `device` says;
    fcpe runs its model on `device`.

    harvest and dio analyse the blocks of a recording in `workers` processes (pyworld releases the
    GIL, but only a process can be stopped in the middle of a block). The workers are started at
    the first call that needs them, reused by later calls and by every extractor of the same name
    and worker count, and killed at exit; each holds one block's samples at a time (~150 MB of
    its own memory: it imports this package). fcpe and swiftf0 always run in the calling thread
    (they are fast, and fcpe's model lives on `device`); `workers` does not apply to them.

    Args:
        name: one of :data:`F0_EXTRACTORS`, any case.
        device: where fcpe runs.
        workers: worker processes for harvest and dio; None: one per core this process may use
            (:func:`default_f0_workers`); 1: no process, the blocks run in the calling thread.

    Raises:
        ValueError: `name` is not one of :data:`F0_EXTRACTORS`, or `workers` is not a whole number >= 1.
        ImportError: the extractor's package is not installed (the message gives the command).
    """
    key = str(name).strip().lower()
    if workers is None:
        workers = default_f0_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1 (or None for one per core), got {workers!r}")
    voiced_range = f"{F0_FLOOR_HZ:g}-{F0_CEIL_HZ:g}Hz-voiced{VOICED_MIN_HZ:g}"
    if key in ("harvest", "dio"):
        analyse = functools.partial(_analyse_in_blocks, analyse=_WORLD_METHODS[key], match_mean=True)
        cache_id = f"{key}-pyworld{importlib.metadata.version('pyworld')}-{voiced_range}"
        if workers > 1 and os.name != "posix":
            logger.info("F0 worker processes need a POSIX system: %s runs in the calling thread", key)
            workers = 1
        return F0Extractor(key, cache_id, analyse, workers, _block_pool(key, workers) if workers > 1 else None)
    if key == "fcpe":
        _import_torchfcpe()  # on every call: a missing package is reported even after a load
        fcpe = _fcpe(str(torch.device(device)))
        version = importlib.metadata.version("torchfcpe")
        cache_id = f"fcpe-torchfcpe{version}-local_argmax-thr{FCPE_THRESHOLD:g}-{voiced_range}-{fcpe.device.type}"
        return F0Extractor(key, cache_id, fcpe)
    if key == "swiftf0":
        _import_swift_f0()
        analyse = functools.partial(
            _analyse_in_blocks,
            analyse=functools.partial(_swiftf0, _swiftf0_detector()),
            match_mean=False,
            align=math.lcm(HOP_LENGTH, SWIFTF0_HOP),
        )
        version = importlib.metadata.version("swift-f0")
        return F0Extractor(key, f"swiftf0-swift-f0{version}-conf{SWIFTF0_CONFIDENCE:g}-{voiced_range}", analyse)
    raise ValueError(f"unknown F0 extractor {name!r}: choose one of {', '.join(F0_EXTRACTORS)}")


F0_CURVE_HEADER = ("time_s", "f0_hz")
"""Columns of an F0 curve file: seconds, and Hz (0 or empty = unvoiced)."""

F0_CURVE_MAX_HZ = SAMPLE_RATE / 2
"""Largest F0 an F0 curve file may give: 8000 Hz, the Nyquist frequency of the 16 kHz analysis."""

F0_CURVE_MAX_SECONDS = 24 * 3600.0
"""Largest time an F0 curve file may give (a day)."""

F0_CURVE_MAX_BYTES = 64 * 1024 * 1024
"""Largest F0 curve file read (64 MiB: a 20 ms curve of 16 hours is about 20 MiB)."""


def save_f0_curve(path: str | os.PathLike, f0_hz: torch.Tensor | np.ndarray) -> None:
    """Write a frame-grid F0 track as a ``time_s,f0_hz`` CSV that :func:`load_f0_curve` reads back.

    Args:
        path: file to write (replaced if it exists).
        f0_hz: (T,) F0 at n * 20 ms, 0 = unvoiced, each in [0, `F0_CURVE_MAX_HZ`]; values are
            written with 9 significant digits, so a float32 track reads back unchanged.

    Raises:
        ValueError: a value that :func:`load_f0_curve` would refuse (nothing is written).
    """
    values = np.asarray(torch.as_tensor(f0_hz).detach().cpu(), dtype=np.float32).reshape(-1)
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0) & (values <= F0_CURVE_MAX_HZ)))
    if bad.size:
        raise ValueError(f"f0_hz[{bad[0]}] = {values[bad[0]]} is out of range 0-{F0_CURVE_MAX_HZ:g} Hz "
                         f"({bad.size} such values): not written to {os.fspath(path)}")
    rows = [",".join(F0_CURVE_HEADER)]
    rows += [f"{n * HOP_LENGTH / SAMPLE_RATE:.2f},{float(value):.9g}" for n, value in enumerate(values)]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("\n".join(rows) + "\n")


def load_f0_curve(path: str | os.PathLike, num_frames: int) -> torch.Tensor:
    """An F0 curve from a ``time_s,f0_hz`` CSV, read onto the frame grid (n * 20 ms).

    The file is UTF-8 text (a byte-order mark is allowed) with one row per point: time in seconds
    (finite, 0 to `F0_CURVE_MAX_SECONDS`, strictly increasing) and F0 in Hz (finite, 0 to
    `F0_CURVE_MAX_HZ`; 0 or empty = unvoiced). A first line whose fields are not numbers is a
    header; blank lines are skipped. Between points F0 is linear in log-F0 where both are voiced;
    a frame between a voiced and an unvoiced point takes the voicing of the nearer one (halfway:
    unvoiced); frames before the first or after the last point are unvoiced (see
    :func:`resample_f0`).

    Args:
        path: the CSV file.
        num_frames: T, frames of the recording it belongs to (``len(wav_16k) // 320 + 1``).

    Returns:
        (T,) float32 F0 in Hz, 0 = unvoiced, finite, in [0, `F0_CURVE_MAX_HZ`].

    Raises:
        ValueError: one line that starts with the file's path and, for a problem in the text,
            its line number (``<path>:<line>: ...``): text that is not UTF-8 (with the byte
            offset), a row that is not two fields, a field that is not a number or out of range,
            a time not after the previous one, a file without rows or larger than
            `F0_CURVE_MAX_BYTES`.
        OSError: the file cannot be read.
    """
    name = os.fspath(path)
    with open(path, "rb") as handle:
        data = handle.read(F0_CURVE_MAX_BYTES + 1)
    if len(data) > F0_CURVE_MAX_BYTES:
        raise ValueError(f"{name}: larger than {F0_CURVE_MAX_BYTES // 2**20} MiB, not an F0 curve")
    text = _decode_curve(name, data)
    times: list[float] = []
    f0_hz: list[float] = []
    seen_line = False
    for line_no, line in enumerate(io.StringIO(text, newline=""), start=1):
        fields = [part.strip() for part in line.strip().split(",")]
        if fields == [""]:
            continue
        if not seen_line and not any(_is_number(part) for part in fields):
            seen_line = True
            continue  # header
        seen_line = True
        where = f"{name}:{line_no}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected 2 fields time_s,f0_hz, got {len(fields)}: {line.strip()!r}")
        time_s = _curve_number(fields[0], "time_s", where, F0_CURVE_MAX_SECONDS, "s")
        if times and time_s <= times[-1]:
            raise ValueError(f"{where}: time {time_s:g} s is not after the previous row's {times[-1]:g} s")
        times.append(time_s)
        f0_hz.append(_curve_number(fields[1], "f0_hz", where, F0_CURVE_MAX_HZ, "Hz"))
    if not times:
        raise ValueError(f"{name}: no rows of time_s,f0_hz")
    targets = np.arange(num_frames) * HOP_LENGTH / SAMPLE_RATE
    return torch.from_numpy(resample_f0(np.array(times), np.array(f0_hz), targets).astype(np.float32))


def _decode_curve(name: str, data: bytes) -> str:
    """The text of a curve file; ValueError ``<name>:<line>: not UTF-8 text (...)`` otherwise."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = bom + error.start
        before = data[bom:offset].decode("utf-8")
        lines = io.StringIO(before, newline="").readlines()  # split as the reader splits: \n, \r, \r\n
        line_no = len(lines) + (not before or before[-1] in "\r\n")
        problem = f"not UTF-8 text (byte 0x{data[offset]:02x} at byte offset {offset})"
        raise ValueError(f"{name}:{line_no}: {problem}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _curve_number(text: str, column: str, where: str, largest: float, unit: str) -> float:
    """One field of an F0 curve row as a finite number in [0, `largest`] (f0_hz: empty = 0).

    Raises:
        ValueError: ``<where>: <column> '<text>' ...``: empty time, not a number, or out of range.
    """
    if not text:
        if column == "f0_hz":
            return 0.0
        raise ValueError(f"{where}: {column} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        problem = "not finite"
    elif value < 0:
        problem = "negative"
    elif value > largest:
        problem = f"above {largest:g} {unit}"
    else:
        return value
    raise ValueError(f"{where}: {column} {text!r} is out of range ({problem}; expected 0 to {largest:g} {unit})")


def median_log_f0(f0_hz: torch.Tensor) -> torch.Tensor:
    """Lower median of ln F0 over voiced frames (torch.median semantics, as the reference).

    Returns:
        A 0-d tensor in the dtype of `f0_hz`.

    Raises:
        ValueError: no frame is voiced, so the median is undefined.
    """
    voiced = f0_hz[f0_hz > 0]
    if voiced.numel() == 0:
        raise ValueError(no_voiced_frames(MEDIAN_UNDEFINED))
    return torch.log(voiced).median()


def shift_to_reference(source_f0_hz: torch.Tensor, reference_f0_hz: torch.Tensor) -> torch.Tensor:
    """Move the source melody so its median log-F0 equals the reference's (spec §6.1).

    F0_tgt = exp(ln F0_src + mu_ref - mu_src) on voiced frames, evaluated in the source's dtype
    in the reference's order of operations; unvoiced frames stay 0.
    """
    return _shift_log(source_f0_hz, median_log_f0(source_f0_hz), median_log_f0(reference_f0_hz))


def shift_semitones(f0_hz: torch.Tensor, semitones: float) -> torch.Tensor:
    """Transpose voiced frames by a fixed number of semitones; unvoiced frames stay 0."""
    log_to = torch.tensor(semitones / 12.0 * math.log(2.0), dtype=f0_hz.dtype)
    return _shift_log(f0_hz, torch.zeros((), dtype=f0_hz.dtype), log_to)


def pitch_shift_argument(text: str) -> PitchShift:
    """`parse_pitch_shift` as an argparse ``type=`` (a bad value is a usage error)."""
    import argparse

    try:
        return parse_pitch_shift(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def apply_pitch_shift(
    source_f0_hz: torch.Tensor, reference_f0_hz: torch.Tensor, shift: PitchShift
) -> tuple[torch.Tensor, float]:
    """The source F0 transposed as `shift` says, and the transposition in semitones.

    "auto" is the paper's shift (:func:`shift_to_reference`, bit for bit); "auto-semitone" and
    "auto-octave" round its interval to whole semitones / octaves (an octave shift keeps a song's
    key); a number transposes by that many semitones; None keeps the source pitch.

    Raises:
        ValueError: an automatic shift and no voiced frame in the source or the reference.
    """
    shift = parse_pitch_shift(shift)
    if shift is None:
        return source_f0_hz.clone(), 0.0
    if isinstance(shift, float):
        return shift_semitones(source_f0_hz, shift), shift
    log_source, log_reference = median_log_f0(source_f0_hz), median_log_f0(reference_f0_hz)
    semitones = 12.0 * float(log_reference - log_source) / math.log(2.0)
    if shift == "auto":
        return _shift_log(source_f0_hz, log_source, log_reference), semitones
    step = 12.0 if shift == "auto-octave" else 1.0
    rounded = step * round(semitones / step)
    return shift_semitones(source_f0_hz, rounded), rounded


def _shift_log(f0_hz: torch.Tensor, log_from: torch.Tensor, log_to: torch.Tensor) -> torch.Tensor:
    voiced = f0_hz > 0
    shifted = torch.zeros_like(f0_hz)
    shifted[voiced] = torch.exp(torch.log(f0_hz[voiced]) + log_to - log_from)
    return shifted
