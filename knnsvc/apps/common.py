"""What every command shares: the conversion options and their parsers, the converter and the
reference pool from them, the input/output contract, the batch runner, logging through progress
bars, and Ctrl-C/SIGTERM.

Applications (convert, cover, stream, demo, score) import this module and the library, never
each other. The contract they keep, written once here:

- Options: one parser per option (`number_type`, `integer_type`, `layers_type`, `block_seconds_type`,
  `device_type`, `path_type`, `name_or_path_type`), so the same option has the same range
  everywhere; any bad value or combination is a usage error: one ``error:`` line, exit status
  `USAGE_STATUS` (2), before any file is read or model loaded (`check_conversion_arguments`).
  An empty path is a usage error, never the current folder.
- Inputs (`input_problem`, `reference_files`): missing, a FIFO/device/socket (refused without being
  opened), or a folder where a file is needed: one line naming it, exit status 1.
- Outputs (`output_problem`, `Inputs`): never an input (same path, symbolic or hard link), never an
  existing folder or other non-regular file, names up to 255 bytes; an existing output is a
  WARNING and a skip (exit 0) unless --overwrite; written atomically beside the target; a rerun
  removes only the temporaries of the outputs it plans (`clean_stale_temporaries`).
- Extras (`missing_extra`) are checked before any model loads or downloads.
- Exit statuses: `OK_STATUS` 0 (all done or already there), `FAILED_STATUS` 1 (a file, an output or
  a model could not be used: one line each, the rest of a batch goes on), `USAGE_STATUS` 2,
  `INTERRUPTED_STATUS` 130 (Ctrl-C or SIGTERM: one line, no partial file).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from knnsvc import __version__, audio, checkpoints
from knnsvc.audio import OUTPUT_SUFFIXES, AudioError, find_audio
from knnsvc.config import (
    DEFAULT_BLOCK_SECONDS,
    DEFAULT_F0,
    HOP_LENGTH,
    MAX_BLOCK_SECONDS,
    MIN_BLOCK_SECONDS,
    PROTECT_OFF,
    SAMPLE_RATE,
    MatchConfig,
)
from knnsvc.conversion import F0FileError, Options, accepts, needs_voicing
from knnsvc.files import NAME_MAX_BYTES, remove_stale_temporaries
from knnsvc.pipeline import KnnSvc, Progress
from knnsvc.pitch import AUTO_SHIFTS, F0_EXTRACTORS, get_f0_extractor, pitch_shift_argument
from knnsvc.pool import ReferencePool
from knnsvc.references import PoolCache, build_reference_pool, no_voiced_frames, too_short, usable_recording
from knnsvc.runtime import DEVICE_NAMES, NETWORK_PRECISIONS, first_line, resolve_device
from knnsvc.shards import MAX_SHARDS, Manifest, shard_path, shard_problem

log = logging.getLogger("knnsvc.apps")

T = TypeVar("T")


OK_STATUS = 0
"""Exit status of a run that made every output (or found it already there)."""
FAILED_STATUS = 1
"""Exit status of a run where an input, an output or a model could not be used (one line each)."""
USAGE_STATUS = 2
"""Exit status of a command line that cannot be run (argparse's), decided before any model loads."""
INTERRUPTED_STATUS = 130
"""Exit status of a run stopped by Ctrl-C or SIGTERM."""

MAX_DURATION_LIMIT_S = 864_000.0
"""The largest --max-duration accepted (ten days of audio)."""

MAX_WORKERS = 256
"""The largest --workers accepted."""


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


MAX_LAYER = 1000
"""The highest layer number --match-layers accepts (a guard against "0-999999999"; the encoder's
own depth is checked when the converter is built)."""


def layers_type(text: str) -> list[int]:
    """"20-24" or "12,18,24" (or a mix) -> sorted distinct layer numbers in [0, `MAX_LAYER`]."""
    layers: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if first < 0 or last < first or last > MAX_LAYER:
                raise argparse.ArgumentTypeError(
                    f"expected layers like 20-24 or 12,18,24 (increasing ranges within 0-{MAX_LAYER}), got {text!r}")
            layers.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layers like 20-24 or 12,18,24, got {text!r}") from None
    return sorted(layers)


def integer_type(low: int | None = None, high: int | None = None, what: str = "a whole number"):
    """An argparse type: an int within [low, high] (either bound may be open)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}, got {text!r}")
        return value

    return parse


def block_seconds_type(text: str) -> float:
    """An argparse type for --block-seconds: 0 (whole recordings) or a length within
    [`MIN_BLOCK_SECONDS`, `MAX_BLOCK_SECONDS`]."""
    value = number_type(0.0, what="a block length in seconds")(text)
    if value != 0.0 and not MIN_BLOCK_SECONDS <= value <= MAX_BLOCK_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected 0 (whole recordings) or a block length in [{MIN_BLOCK_SECONDS:g}, {MAX_BLOCK_SECONDS:g}] "
            f"seconds, got {text!r}")
    return value


def device_type(text: str):
    """An argparse type for --device: auto, cpu, cuda or cuda:N, resolved (`knnsvc.runtime.resolve_device`);
    any other name, or CUDA where there is none, is a usage error of one line."""
    try:
        return resolve_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(first_line(err)) from None


def path_type(text: str) -> Path:
    """An argparse type for a path: an empty one (e.g. an unset shell variable) is a usage error, never
    the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?); name a file or folder")
    return Path(text)


def name_or_path_type(text: str) -> str:
    """An argparse type for a checkpoint: a release name or a file path, never empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a release name or a file path")
    return text


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``knnsvc <version>`` and exit 0 (every command has it)."""
    parser.add_argument("--version", action="version", version=f"knnsvc {__version__}")


def add_conversion_arguments(parser: argparse.ArgumentParser, pitch_shift: object = None,
                             streaming: bool = False) -> None:
    """The model, matching, control, input and output options every conversion command shares.

    Args:
        pitch_shift: the command's default pitch shift (None: `MatchConfig`'s, "auto").
        streaming: the command converts in streaming blocks of its own, so ``--block-seconds`` does not
            apply: its default is None and `check_conversion_arguments` refuses any value.
    """
    defaults = MatchConfig()
    if pitch_shift is None:
        pitch_shift = defaults.pitch_shift
    parser.add_argument("--wavlm", type=name_or_path_type, default=checkpoints.DEFAULT_WAVLM,
                        help="WavLM checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder", type=name_or_path_type, default=checkpoints.DEFAULT_VOCODER,
                        help="vocoder checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder-config", type=path_type, metavar="JSON",
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
    parser.add_argument("--f0-file", type=path_type, metavar="CSV",
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
    if streaming:
        parser.add_argument("--block-seconds", type=block_seconds_type, default=None, metavar="S",
                            help="not applicable: streaming works in blocks of --block-ms (refused)")
    else:
        parser.add_argument("--block-seconds", type=block_seconds_type, default=DEFAULT_BLOCK_SECONDS, metavar="S",
                            help="F0 extraction and vocoding work in blocks of S seconds, so memory is bounded for "
                                 f"any length; the result is the same (0 = whole recordings at once, else "
                                 f"{MIN_BLOCK_SECONDS:g}-{MAX_BLOCK_SECONDS:g}) (default: %(default)s)")
    parser.add_argument("--device", type=device_type, default="auto",
                        help=f"{DEVICE_NAMES} (default: auto = cuda if available, else cpu)")
    parser.add_argument("--network-precision", choices=tuple(NETWORK_PRECISIONS), default="float32",
                        help="what WavLM and the vocoder compute in: float32 (the reference) or bfloat16/float16 "
                             "under autocast (faster on GPUs and CPUs with bf16 units; the output moves slightly: "
                             "benchmarks/bench_gpu.py prints by how much) (default: %(default)s)")
    parser.add_argument("--workers", type=integer_type(1, MAX_WORKERS, "a number of worker processes"), default=None,
                        metavar="N", help="processes extracting F0 in parallel (default: the extractor's own)")
    parser.add_argument("--max-duration", type=number_type(1.0, MAX_DURATION_LIMIT_S, "a duration in seconds"),
                        default=None, metavar="SECONDS",
                        help="refuse any input recording longer than this once decoded (default: "
                             f"{_default_max_seconds()})")
    parser.add_argument("--pool-cache", type=path_type, metavar="DIR",
                        help="cache each reference recording's encoded pool here (keyed by its audio bytes, the "
                             "encoder weights and the analysis settings), so a singer is encoded once")
    parser.add_argument("--loudness", type=number_type(-70.0, 0.0, what="a loudness in LUFS"), metavar="LUFS",
                        help="normalise each output to this integrated loudness (default: off, as the reference)")
    parser.add_argument("--repair-audio", action="store_true",
                        help="replace NaN/inf samples in inputs by 0 (with a warning) instead of refusing the file")
    if not streaming:
        add_shard_arguments(parser)


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """``--num-shards N --shard-index I`` (this run does positions I, I + N, ... of the sorted batch;
    see `knnsvc.shards`) and ``--manifest PATH`` (what each item became, for ``knnsvc-merge``)."""
    parser.add_argument("--num-shards", type=integer_type(1, MAX_SHARDS, "a number of shards"), default=None,
                        metavar="N", help="split the batch into N shards (run one process per shard, e.g. a SLURM "
                                          "job array) and do only shard --shard-index")
    parser.add_argument("--shard-index", type=integer_type(0, MAX_SHARDS - 1, "a shard index"), default=None,
                        metavar="I", help="the shard this run does, 0 to N-1 (with --num-shards)")
    parser.add_argument("--manifest", type=path_type, default=None, metavar="PATH",
                        help="record each input's output, status and seconds in this JSON file (a shard writes "
                             "<stem>.shard-I-of-N.json beside it; join them with knnsvc-merge)")


def _default_max_seconds() -> str:
    limit = getattr(audio, "MAX_SECONDS", None)
    return f"{limit:g} s" if isinstance(limit, (int, float)) else "no limit"


def check_conversion_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The usage checks of `add_conversion_arguments` that need more than one option or a look at a
    small file, before any model loads: sets ``args.match_config`` (see `match_config`); a
    ``--vocoder-config`` must hold a JSON object; ``--block-seconds`` is refused where it does not apply.
    Each problem is `parser.error` (one line, exit status 2)."""
    args.match_config = match_config(args, parser)
    if args.vocoder_config is not None and args.vocoder_config.is_file():
        try:
            with open(args.vocoder_config, encoding="utf-8") as handle:
                config = json.load(handle)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            parser.error(f"--vocoder-config {args.vocoder_config}: not a readable JSON file ({first_line(err)})")
        if not isinstance(config, dict):
            parser.error(f"--vocoder-config {args.vocoder_config}: expected a JSON object of HiFi-GAN settings, "
                         f"got a JSON {type(config).__name__}")
    elif args.vocoder_config is not None:
        problem = input_problem(args.vocoder_config, "file")
        if problem:
            parser.error(f"--vocoder-config {problem}")
    graphs = [flag for flag, value in (("--wavlm", args.wavlm), ("--vocoder", args.vocoder))
              if str(value).lower().endswith(".onnx")]
    if graphs and args.network_precision != "float32":
        parser.error(f"--network-precision {args.network_precision}: an exported graph ({' and '.join(graphs)}) runs "
                     "in the precision it was exported in (knnsvc-export --quantize int8)")
    if args.vocoder_config is not None and "--vocoder" in graphs:
        parser.error("--vocoder-config: an exported vocoder graph is described by its sidecar; leave it out")
    if args.workers is not None and not (accepts(checkpoints.build_converter, "workers")
                                         and accepts(get_f0_extractor, "workers")):
        parser.error("--workers: this version extracts F0 in one process only")
    if args.max_duration is not None and not (accepts(usable_recording, "max_seconds")
                                              and accepts(audio.load_audio, "max_seconds")):
        parser.error("--max-duration: this version's audio reader has no duration cap")
    check_shard_arguments(args, parser)


def check_shard_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--num-shards`` and ``--shard-index`` come together and fit (0 <= I < N); ``--manifest`` names a
    file that can be written; a command whose inputs are not one sorted batch of files refuses them.
    Each problem is `parser.error` (one line, exit status 2)."""
    num_shards, shard_index = getattr(args, "num_shards", None), getattr(args, "shard_index", None)
    manifest = getattr(args, "manifest", None)
    if num_shards is None and shard_index is None and manifest is None:
        return
    if not hasattr(args, "source"):  # knnsvc-cover: its items are songs with several outputs each
        used = next(flag for flag, value in (("--num-shards", num_shards), ("--shard-index", shard_index),
                                             ("--manifest", manifest)) if value is not None)
        parser.error(f"{used}: {parser.prog} does not split its batch; shard knnsvc-convert runs instead")
    if (num_shards is None) != (shard_index is None):
        parser.error("--num-shards and --shard-index go together (shard I of N, 0 <= I < N)"
                     if num_shards is not None else "--shard-index needs --num-shards N")
    if num_shards is not None and shard_index is not None:
        problem = shard_problem(num_shards, shard_index)
        if problem:
            parser.error(f"--shard-index {shard_index}: {problem}")
    if manifest is not None:
        target = shard_path(manifest, num_shards or 1, shard_index or 0)
        if target.is_dir():
            parser.error(f"--manifest {manifest}: {target} is a folder; name the JSON file to write")
        if target.exists() and not target.is_file():
            parser.error(f"--manifest {manifest}: {target} is not a regular file")
        problem = folder_problem(target.parent)
        if problem:
            parser.error(f"--manifest {manifest}: {problem}")


SHARD_IGNORED_SETTINGS = frozenset({
    "num_shards", "shard_index", "manifest", "quiet", "overwrite", "workers", "pool_cache", "list_checkpoints",
    "match_config", "version", "no_prefetch",
})
"""Options that do not change what a batch writes (left out of a manifest's settings fingerprint)."""


@dataclass
class ShardRun:
    """What the batch loop (`run_each`) of a sharded or manifest-keeping run needs from its options."""

    num_shards: int
    shard_index: int
    manifest: Path | None
    keep_existing: bool
    settings: dict


_SHARD_RUN: ContextVar[ShardRun | None] = ContextVar("knnsvc_shard_run", default=None)


def shard_run(args: argparse.Namespace) -> ShardRun | None:
    """The `ShardRun` the parsed options ask for (None: an ordinary run without a manifest)."""
    num_shards, manifest = getattr(args, "num_shards", None), getattr(args, "manifest", None)
    if num_shards is None and manifest is None:
        return None
    settings = {key: value for key, value in sorted(vars(args).items()) if key not in SHARD_IGNORED_SETTINGS}
    return ShardRun(num_shards or 1, getattr(args, "shard_index", None) or 0,
                    None if manifest is None else shard_path(manifest, num_shards or 1, args.shard_index or 0),
                    keep_existing=not args.overwrite, settings=settings)


def conversion_options(args: argparse.Namespace) -> Options:
    """The per-file `knnsvc.conversion.Options` the parsed options describe."""
    return Options(loudness=args.loudness, f0_file=args.f0_file, repair_audio=args.repair_audio,
                   max_seconds=args.max_duration)


_OPTION_OF_FIELD = {"topk": "--topk", "concat_weight": "--post-opt", "precision": "--precision",
                    "index_rate": "--index-rate", "protect": "--protect", "rms_mix": "--rms-mix",
                    "match_layers": "--match-layers", "pitch": "--pitch-shift"}


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
        message = first_line(err)
        field = message.split(" ", 1)[0]
        option = _OPTION_OF_FIELD.get(field)
        parser.error(f"{option}: {message}" if option else message)




def run_batch(args: argparse.Namespace, parser: argparse.ArgumentParser,
              run: Callable[[argparse.Namespace, Batch], int], done_word: str) -> int:
    """What the batch commands (convert, cover) share around their `run`: the usage checks
    (`check_conversion_arguments`, exit 2 before any model loads), logging through the bars, and
    Ctrl-C or SIGTERM ending in one line that counts what is done (exit status 130)."""
    check_conversion_arguments(args, parser)
    shards = shard_run(args)
    if shards is not None:
        # the batch loop sees every planned item and decides itself which are this shard's and which
        # are already there (`run_each`), so the command's own screening must not skip any
        args = argparse.Namespace(**{**vars(args), "overwrite": True})
    token = _SHARD_RUN.set(shards)
    with cli_logging(args.quiet):
        batch = Batch()
        try:
            with stop_on_sigterm():
                return run(args, batch)
        except KeyboardInterrupt:
            done = batch.converted + batch.skipped
            log.error("interrupted: %d of %d %s; rerun to continue", done, batch.total or done, done_word)
            return INTERRUPTED_STATUS
        finally:
            _SHARD_RUN.reset(token)


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



# ----------------------------------------------------------------------------------- inputs and outputs
def input_problem(path: Path, kind: str = "file or folder") -> str | None:
    """Why `path` cannot be read as an input of `kind` ("file", "folder" or "file or folder"), as one
    line naming it, or None. Nothing is opened: a FIFO, device or socket is refused, never read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{path}: no such file or folder"
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror or first_line(err)})"
    if stat.S_ISDIR(mode):
        return f"{path}: is a folder; a file is needed" if kind == "file" else None
    if not stat.S_ISREG(mode):
        return f"{path}: is not a regular file or folder (a FIFO, device or socket); it is not read"
    if kind == "folder":
        return f"{path}: is a file; a folder is needed"
    return None


def reference_files(reference: Path) -> list[Path]:
    """The recordings a REF argument names (one file, or the audio under a folder).

    Raises:
        ValueError: one line: missing, not a file or folder (FIFO, device), or a folder without audio.
    """
    problem = input_problem(reference)
    if problem:
        raise ValueError(problem)
    if reference.is_file():
        return [reference]
    files = find_audio(reference)
    if not files:
        raise ValueError(f"{reference}: no audio files ({', '.join(OUTPUT_SUFFIXES)}) in this folder")
    return files


class Inputs:
    """The files a run reads (sources, references, curves, checkpoints), to tell whether a path would
    replace one of them: the same path after symbolic links, or the same file (a hard link)."""

    def __init__(self, paths: Iterable[Path | str | None] = ()) -> None:
        self.paths: set[Path] = set()
        self.files: set[tuple[int, int]] = set()
        self.add(*paths)

    def add(self, *paths: Path | str | None) -> None:
        """Add the existing regular files among `paths` (names and None are ignored)."""
        for path in paths:
            if path is None:
                continue
            path = Path(path)
            try:
                info = path.stat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                self.paths.add(path.resolve())
                self.files.add((info.st_dev, info.st_ino))

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, Path):
            return False
        if path.resolve() in self.paths:
            return True
        try:
            info = path.stat()
        except OSError:
            return False
        return (info.st_dev, info.st_ino) in self.files


def conversion_inputs(args: argparse.Namespace, sources: Iterable[Path], references: Iterable[Path]) -> Inputs:
    """Every file a conversion command reads: sources, references and the files its options name."""
    inputs = Inputs([*sources, *references])
    inputs.add(args.f0_file, args.vocoder_config, args.wavlm, args.vocoder, getattr(args, "separator", None))
    return inputs


def name_problem(path: Path) -> str | None:
    """One line if a part of `path` is longer than the file system allows (`NAME_MAX_BYTES`), else None
    (checked before anything looks the path up, which would fail with ENAMETOOLONG)."""
    for part in path.parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
            return f"{path}: the name {part[:40]!r}... is longer than {NAME_MAX_BYTES} bytes"
    return None


def output_problem(path: Path, inputs: Inputs) -> str | None:
    """Why `path` can never be an output, as one line naming it, or None: a name longer than the file
    system allows (255 bytes), an existing folder or other non-regular file, or an input of the run.
    (An existing regular file is no problem here: the caller skips it, or replaces it with --overwrite.)"""
    problem = name_problem(path)
    if problem:
        return problem
    if path in inputs:
        return f"output {path} would replace an input file; choose another -o"
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return f"output {path} is an existing folder; choose another -o"
    if not stat.S_ISREG(mode):
        return f"output {path} exists and is not a regular file (a FIFO, device or socket); choose another -o"
    return None


def clean_stale_temporaries(outputs: Iterable[Path]) -> None:
    """Remove the temporaries an interrupted run left for the `outputs` this run plans (and nothing
    else: see `knnsvc.files.remove_stale_temporaries`), logging each one."""
    for stale in remove_stale_temporaries(outputs):
        log.info("removed %s, left by an interrupted run", stale)


def missing_extra(module: str, install: str) -> str | None:
    """One line naming the package to install if `module` cannot be imported, else None (checked
    without importing it, before any model loads or downloads)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"this needs the {module} package: pip install {install}"


def failure_line(path: Path, err: BaseException) -> str:
    """The one line reporting that the file `path` failed with `err`: the error's own line when it
    names its file (an `AudioError`, an F0 curve's CSV and line, a message starting with `path`),
    else ``<path>: <first line>``."""
    message = first_line(err)
    if isinstance(err, (AudioError, F0FileError)) or message.startswith(str(path)):
        return message
    return f"{path}: {message}"


def run_each(items: Sequence[T], batch: Batch, quiet: bool, unit: str, path: Callable[[T], Path],
             work: Callable[[T, StageBars], str], written: Callable[[T], Path], bars: type[StageBars] = StageBars,
             done_word: str = "converted", extra_failures: int = 0,
             upcoming: Callable[[T | None], None] | None = None) -> int:
    """The batch loop every file command shares: one item after another under a bar over the items
    and one bar per stage; a failure is one line for that item (`failure_line`) and the next item
    goes on; the closing line counts the problems. Returns the exit status (0 or 1).

    In a run with ``--num-shards``/``--manifest`` (see `run_batch`), `items` is the whole sorted batch:
    this loop does only the shard's positions (`knnsvc.shards`), skips those whose output is already
    there (unless --overwrite), and records every one of them in the shard's manifest as it goes.

    Args:
        path: the input an item is reported by; work: does one item, returns a short report;
        written: what an item wrote, for the log; extra_failures: problems found before the loop;
        upcoming: told, before each item's `work`, which item the loop will do after it (None: none),
            so that `work` can prepare it ahead (`knnsvc.conversion.Prefetch`).
    """
    shards = _SHARD_RUN.get()
    manifest: Manifest | None = None
    previous: dict[int, dict] = {}
    positions = list(range(len(items)))
    if shards is not None:
        positions = positions[shards.shard_index::shards.num_shards]
        batch.total = len(positions)
        if shards.manifest is not None:
            manifest = Manifest(shards.manifest, "convert", shards.settings, shards.num_shards, shards.shard_index,
                                total=len(items))
            previous = manifest.previous_entries()
            manifest.save()
        if shards.num_shards > 1:
            log.info("shard %d of %d: %d of the batch's %d %s(s)", shards.shard_index, shards.num_shards,
                     len(positions), len(items), unit)
    def already_there(item: T) -> bool:
        return shards is not None and shards.keep_existing and written(item).exists()

    rows = tqdm(positions, desc=f"{unit}s", unit=unit, disable=quiet or len(positions) < 2 or None,
                dynamic_ncols=True, position=0)
    for order, position in enumerate(rows):
        item = items[position]
        entry: dict[str, object] = {"input": str(path(item)), "output": str(written(item))}
        if already_there(item):
            log.warning("%s: skipped, %s already exists (use --overwrite to replace it)", path(item), written(item))
            batch.skipped += 1
            earlier = previous.get(position, {})
            if earlier.get("status") == "converted" and earlier.get("output") == entry["output"]:
                entry = earlier  # done by an earlier run of this shard (before a pre-emption)
            else:
                entry.update(status="skipped", message="already there", seconds=0.0)
            if manifest is not None:
                manifest.record(position, **entry)
            continue
        if upcoming is not None:
            upcoming(next((items[later] for later in positions[order + 1:] if not already_there(items[later])), None))
        stage_bars = bars(disabled=quiet, label=path(item).name, position=1)
        start = time.perf_counter()
        try:
            report = work(item, stage_bars)
        except (ValueError, RuntimeError, OSError) as err:
            batch.failed += 1
            line = failure_line(path(item), err)
            log.error("%s", line)
            log.debug("%s failed", path(item), exc_info=True)
            entry.update(status="failed", message=line)
        else:
            batch.converted += 1
            log.info("wrote %s (%s)", written(item), report)
            entry.update(status="converted", message=report)
        finally:
            stage_bars.close()
        if manifest is not None:
            manifest.record(position, **entry, seconds=round(time.perf_counter() - start, 3))
    rows.close()
    if batch.failed and batch.total + extra_failures > 1:
        log.error("%d problem(s); %d of %d %s(s) %s%s", batch.failed, batch.converted, batch.total, unit, done_word,
                  f", {batch.skipped} already there" if batch.skipped else "")
    if manifest is not None:
        log.info("manifest: %s", manifest.path)
    return 1 if batch.failed else 0


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
    converter: KnnSvc, reference: Path, files: list[Path], cache: Path | None, progress: Progress,
    max_seconds: float | None = None,
) -> tuple[ReferencePool, int]:
    """A command's pool: a bad single reference file stops the run; in a folder it is left out
    (reported); the pool must be long enough and voiced where the pitch shift needs it.

    Args:
        max_seconds: refuse recordings longer than this once decoded (None: the audio layer's default).

    Returns:
        The pool and the number of recordings left out of it.

    Raises:
        ValueError, AudioError: no usable reference (one line naming the file or folder).
    """

    def on_bad_file(err: AudioError) -> None:
        if len(files) == 1:
            raise err
        log.error("%s (left out of the reference)", err)

    pool_cache = PoolCache(cache, converter.pool_settings()) if cache is not None else None
    limits = {} if max_seconds is None else {"max_seconds": max_seconds}
    pool, left_out = build_reference_pool(converter, files, pool_cache, on_bad_file, progress, **limits)
    if pool is None:
        raise ValueError(f"{reference}: no usable reference recording in this folder")
    _check_pool(pool, reference, converter)
    return pool, left_out


def _check_pool(pool: ReferencePool, reference: Path, converter: KnnSvc) -> None:
    config = converter.config
    if pool.num_frames < config.n_candidates:
        raise ValueError(
            f"{reference}: the reference is "
            + too_short(pool.seconds, needed=config.n_candidates * HOP_LENGTH / SAMPLE_RATE, frames=pool.num_frames)
        )
    if needs_voicing(converter) and not bool((pool.f0_hz > 0).any()):
        raise ValueError(
            f"{reference}: the reference has "
            + no_voiced_frames("its median pitch is undefined (use --pitch-shift 0 or none)")
        )


def load_converter(args: argparse.Namespace) -> KnnSvc:
    """The converter the parsed conversion options name (see `knnsvc.checkpoints.build_converter`);
    ``--workers`` reaches it where the builder takes ``workers``."""
    block_seconds = args.block_seconds if args.block_seconds is not None else DEFAULT_BLOCK_SECONDS
    extra: dict = {}
    if getattr(args, "workers", None) is not None:
        extra["workers"] = args.workers
    if getattr(args, "network_precision", "float32") != "float32":
        extra["network_precision"] = args.network_precision
    return checkpoints.build_converter(args.wavlm, args.vocoder, args.vocoder_config, args.match_config, args.f0,
                                       args.device, block_seconds, progress=not args.quiet, **extra)
