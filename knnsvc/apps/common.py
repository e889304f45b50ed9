"""What every command shares: the conversion options and their parsers, the converter and the
reference pool from them, the batch runner, logging through progress bars, and Ctrl-C/SIGTERM.

Applications (convert, cover, stream, demo, score) import this module and the library, never
each other.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from knnsvc import checkpoints
from knnsvc.audio import OUTPUT_SUFFIXES, AudioError, find_audio
from knnsvc.config import DEFAULT_BLOCK_SECONDS, DEFAULT_F0, HOP_LENGTH, PROTECT_OFF, SAMPLE_RATE, MatchConfig
from knnsvc.conversion import needs_voicing
from knnsvc.pipeline import KnnSvc, Progress
from knnsvc.pitch import AUTO_SHIFTS, F0_EXTRACTORS, pitch_shift_argument
from knnsvc.pool import ReferencePool
from knnsvc.references import PoolCache, build_reference_pool
from knnsvc.runtime import resolve_device

log = logging.getLogger("knnsvc.apps")


INTERRUPTED_STATUS = 130
"""Exit status of a run stopped by Ctrl-C or SIGTERM."""


@dataclass
class Batch:
    """What a run has done so far (read when it is interrupted)."""

    total: int = 0
    converted: int = 0
    skipped: int = 0
    failed: int = 0


# ----------------------------------------------------------------------------------- arguments
def number_type(low: float | None = None, high: float | None = None, what: str = "a number"):
    """An argparse type: a finite float within [low, high] (either bound may be open)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in [{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}, got {text!r}")
        return value

    return parse


def layers_type(text: str) -> list[int]:
    """"20-24" or "12,18,24" (or a mix) -> sorted distinct layer numbers."""
    layers: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            layers.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layers like 20-24 or 12,18,24, got {text!r}") from None
    if not layers or min(layers) < 0:
        raise argparse.ArgumentTypeError(f"expected layer numbers >= 0, got {text!r}")
    return sorted(layers)



def add_conversion_arguments(parser: argparse.ArgumentParser, pitch_shift: object = None) -> None:
    """The model, matching, control and output options every conversion command shares.

    Args:
        pitch_shift: the command's default pitch shift (None: `MatchConfig`'s, "auto").
    """
    defaults = MatchConfig()
    if pitch_shift is None:
        pitch_shift = defaults.pitch_shift
    parser.add_argument("--wavlm", default=checkpoints.DEFAULT_WAVLM,
                        help="WavLM checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder", default=checkpoints.DEFAULT_VOCODER,
                        help="vocoder checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder-config", type=Path, metavar="JSON",
                        help="HiFi-GAN config (official config_v1_wavlm.json format) for a non-standard vocoder; "
                             "default: read the widths from the checkpoint")
    smoothing = parser.add_mutually_exclusive_group()
    smoothing.add_argument("--post-opt", type=number_type(0.0, what="a concatenation weight"),
                           default=defaults.concat_weight, metavar="M",
                           help="concatenation weight m of the reselection, with summing-weight optimisation "
                                "(default: %(default)s, the paper's post_opt_0.2)")
    smoothing.add_argument("--no-post-opt", action="store_true",
                           help="no reselection and no weight optimisation: mean of the top-k (no_post_opt)")
    parser.add_argument("--topk", type=int, default=defaults.topk,
                        help="neighbours averaged per frame (default: %(default)s)")
    parser.add_argument("--pitch-shift", type=pitch_shift_argument, default=pitch_shift,
                        metavar="|".join(AUTO_SHIFTS) + "|SEMITONES|none",
                        help="auto: move the source's median pitch to the reference's (the paper); auto-semitone / "
                             "auto-octave: the same rounded to whole semitones / octaves (octaves keep a song's "
                             "key); a number: shift by that many semitones; none: keep the source pitch "
                             "(default: %(default)s)")
    parser.add_argument("--f0", choices=F0_EXTRACTORS, default=DEFAULT_F0,
                        help="pitch extractor (default: %(default)s, which the released vocoders were trained on)")
    parser.add_argument("--f0-file", type=Path, metavar="CSV",
                        help="use this F0 curve (time_s,f0_hz per line) for the source instead of extracting it "
                             "(one source file only)")
    parser.add_argument("--index-rate", type=number_type(0.0, 1.0), default=defaults.index_rate, metavar="R",
                        help="features = R * matched + (1 - R) * source, as RVC's index_rate "
                             "(default: %(default)s = matched only)")
    parser.add_argument("--protect", type=number_type(0.0, PROTECT_OFF), default=defaults.protect, metavar="P",
                        help="RVC's protect: unvoiced source frames keep (1 - P) of the source features "
                             "(default: %(default)s = off; 0 keeps them entirely)")
    parser.add_argument("--rms-mix", type=number_type(0.0, 1.0), default=defaults.rms_mix, metavar="M",
                        help="the output's loudness envelope follows the source's by M (default: %(default)s = off; "
                             "RVC's rms_mix_rate is 1 - M)")
    parser.add_argument("--match-layers", type=layers_type, default=defaults.match_layers, metavar="LAYERS",
                        help="match on the mean of these WavLM layers (e.g. 20-24, as NeuCoSVC) and vocode the "
                             "chosen frames' layer-6 features (default: match on layer 6, the reference)")
    parser.add_argument("--precision", choices=("float64", "float32"), default=defaults.precision,
                        help="arithmetic of matching and weight optimisation; float64 is the reference's "
                             "(default: %(default)s)")
    parser.add_argument("--respect-file-boundaries", action="store_true",
                        help="successor frames and smoothness neighbours stay inside each reference file "
                             "(the reference treats the reference files as one recording)")
    parser.add_argument("--block-seconds", type=number_type(0.0, what="a block length in seconds"),
                        default=DEFAULT_BLOCK_SECONDS, metavar="S",
                        help="F0 extraction and vocoding work in blocks of S seconds, so memory is bounded for any "
                             "length; the result is the same (0 = whole recordings at once) (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--pool-cache", type=Path, metavar="DIR",
                        help="cache each reference recording's encoded pool here (keyed by its audio bytes, the "
                             "encoder weights and the analysis settings), so a singer is encoded once")
    parser.add_argument("--loudness", type=number_type(-70.0, 0.0, what="a loudness in LUFS"), metavar="LUFS",
                        help="normalise each output to this integrated loudness (default: off, as the reference)")
    parser.add_argument("--repair-audio", action="store_true",
                        help="replace NaN/inf samples in inputs by 0 (with a warning) instead of refusing the file")


def match_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> MatchConfig:
    """The `MatchConfig` the parsed options describe (a usage error if they do not fit together)."""
    try:
        return MatchConfig(
            topk=args.topk,
            concat_weight=None if args.no_post_opt else args.post_opt,
            optimise_weights=not args.no_post_opt,
            pitch_shift=args.pitch_shift,
            precision=args.precision,
            respect_file_boundaries=args.respect_file_boundaries,
            index_rate=args.index_rate,
            protect=args.protect,
            rms_mix=args.rms_mix,
            match_layers=args.match_layers,
        )
    except ValueError as err:
        parser.error(str(err))




def run_batch(args: argparse.Namespace, parser: argparse.ArgumentParser,
              run: Callable[[argparse.Namespace, Batch], int], done_word: str) -> int:
    """What the batch commands (convert, cover) share around their `run`: the match settings and the
    device from the arguments (bad ones are usage errors), logging through the bars, and Ctrl-C or
    SIGTERM ending in one line that counts what is done (exit status 130)."""
    args.match_config = match_config(args, parser)
    try:
        args.device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device: {err}")
    with cli_logging(args.quiet):
        batch = Batch()
        try:
            with stop_on_sigterm():
                return run(args, batch)
        except KeyboardInterrupt:
            done = batch.converted + batch.skipped
            log.error("interrupted: %d of %d %s; rerun to continue", done, batch.total or done, done_word)
            return INTERRUPTED_STATUS


@contextmanager
def cli_logging(quiet: bool) -> Iterator[None]:
    """Log the package's messages to stderr as ``LEVEL: message``, through tqdm bars."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_log = logging.getLogger("knnsvc")
    previous_level = package_log.level
    package_log.addHandler(handler)
    package_log.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        with logging_redirect_tqdm(loggers=[package_log]):
            yield
    finally:
        package_log.removeHandler(handler)
        package_log.setLevel(previous_level)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C does (temporary files are removed on the way out)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)



class StageBars:
    """One tqdm bar per stage of a conversion (with ETA), as a `Progress` callback."""

    NAMES = {"reference": "encoding reference", "encode": "encoding", "match": "matching", "vocode": "vocoding"}
    UNITS = {"reference": "file"}

    def __init__(self, disabled: bool, label: str = "", position: int = 0) -> None:
        self.disabled = disabled
        self.label = label
        self.position = position
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.disabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            name = self.NAMES.get(stage, stage)
            self.bar = tqdm(total=total, desc=f"{self.label}: {name}" if self.label else name,
                            unit=self.UNITS.get(stage, "frame"), unit_scale=stage != "reference",
                            leave=False, dynamic_ncols=True, position=self.position)
        assert self.bar is not None
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None



def reference_files(reference: Path) -> list[Path]:
    """The recordings a REF argument names (one file, or the audio under a folder).

    Raises:
        ValueError: a folder without audio.
    """
    if reference.is_file():
        return [reference]
    files = find_audio(reference)
    if not files:
        raise ValueError(f"{reference}: no audio files ({', '.join(OUTPUT_SUFFIXES)}) in this folder")
    return files



def folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (or in the folder that will hold it), or None."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return "no existing parent folder"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


# ----------------------------------------------------------------------------------- reference
def reference_pool(
    converter: KnnSvc, reference: Path, files: list[Path], cache: Path | None, progress: Progress
) -> tuple[ReferencePool, int]:
    """A command's pool: a bad single reference file stops the run; in a folder it is left out
    (reported); the pool must be long enough and voiced where the pitch shift needs it.

    Raises:
        ValueError, AudioError: no usable reference (one line naming the file or folder).
    """

    def on_bad_file(err: AudioError) -> None:
        if len(files) == 1:
            raise err
        log.error("%s (left out of the reference)", err)

    pool_cache = PoolCache(cache, converter.pool_settings()) if cache is not None else None
    pool, left_out = build_reference_pool(converter, files, pool_cache, on_bad_file, progress)
    if pool is None:
        raise ValueError(f"{reference}: no usable reference recording in this folder")
    _check_pool(pool, reference, converter)
    return pool, left_out


def _check_pool(pool: ReferencePool, reference: Path, converter: KnnSvc) -> None:
    config = converter.config
    if pool.num_frames < config.n_candidates:
        raise ValueError(
            f"{reference}: the reference is too short ({pool.num_frames} frames = {pool.seconds:.2f} s); "
            f"at least {config.n_candidates} frames ({config.n_candidates * HOP_LENGTH / SAMPLE_RATE:.2f} s) are needed"
        )
    if needs_voicing(converter) and not bool((pool.f0_hz > 0).any()):
        raise ValueError(
            f"{reference}: the reference has no voiced frames, so its median pitch is undefined "
            "(use --pitch-shift 0 or none)"
        )


def load_converter(args: argparse.Namespace) -> KnnSvc:
    """The converter the parsed conversion options name (see `knnsvc.checkpoints.build_converter`)."""
    return checkpoints.build_converter(args.wavlm, args.vocoder, args.vocoder_config, args.match_config, args.f0,
                                       args.device, args.block_seconds, progress=not args.quiet)
