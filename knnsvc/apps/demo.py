"""`knnsvc-demo`: a web page (Gradio) for trying kNN-SVC on a recording and a target singer.

    knnsvc-demo [--port 7860] [--host 127.0.0.1] [--wavlm NAME|PATH] [--vocoder NAME|PATH]
                [--vocoder-config JSON] [--device auto|cpu|cuda|cuda:N] [--max-duration 600]
                [--pool-cache DIR]

The page takes a source (an uploaded file or a microphone recording) and one or more recordings of
the target singer, the vocoder (a release name, or the checkpoint given with --vocoder) and the
controls of `knnsvc-convert`: pitch shift (auto, auto-semitone, auto-octave, a number of semitones,
none), pitch extractor, post-opt m (or off), top-k, index rate, protect, rms mix, block length.
Convert shows the result in an audio player (16-bit WAV at the vocoder's rate: 16 kHz for the
released vocoders, 24 or 44.1 kHz for a vocoder trained at that rate; downloadable), the F0 contours
(source, shifted, and the output's own), the provenance of every output frame (which reference
file and time it came from), and one line with the applied shift and the time taken. The same
conversion is the API endpoint ``/convert`` (callable with `gradio_client`).

`DemoEngine` does the work and knows nothing of Gradio: models are loaded once per (checkpoint,
device) and kept, each request's converter is built from them by `knnsvc.checkpoints.build_converter`
and converts with `knnsvc.conversion.convert_file` (as the commands do); an upload longer than
``--max-duration`` (default 10 minutes) is refused before any work; each uploaded reference's pool
is cached by its content (`PoolCache`, in --pool-cache or a temporary folder that is removed at
exit); a problem with the input is a one-line `ValueError`, which the page shows as a message
(never a traceback). A missing extra (gradio, matplotlib) is reported before any model loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hifigan.generator import Vocoder, VocoderKind
from knnsvc import checkpoints
from knnsvc.apps.common import (
    FAILED_STATUS,
    MAX_DURATION_LIMIT_S,
    add_version_argument,
    cli_logging,
    device_type,
    missing_extra,
    name_or_path_type,
    number_type,
    path_type,
    stop_on_sigterm,
)
from knnsvc.audio import AUDIO_SUFFIXES, AudioError, AudioReader, load_audio
from knnsvc.checkpoints import RELEASES, CheckpointError
from knnsvc.config import (
    DEFAULT_BLOCK_SECONDS,
    DEFAULT_F0,
    DEFAULT_VOCODER,
    DEFAULT_WAVLM,
    HOP_LENGTH,
    MAX_BLOCK_SECONDS,
    MAX_SHIFT_SEMITONES,
    MIN_BLOCK_SECONDS,
    PROTECT_OFF,
    SAMPLE_RATE,
    WAVLM_LAYER,
    MatchConfig,
)
from knnsvc.conversion import Options, convert_file, needs_voicing
from knnsvc.encoder import WavLMEncoder
from knnsvc.pipeline import KnnSvc, Progress
from knnsvc.pitch import AUTO_SHIFTS, F0_EXTRACTORS, PitchShift, parse_pitch_shift
from knnsvc.plots import plot_f0_contours, plot_provenance
from knnsvc.pool import ReferencePool
from knnsvc.references import PoolCache, build_reference_pool, no_voiced_frames, too_short
from knnsvc.runtime import DEVICE_NAMES, first_line

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("knnsvc.demo")  # also when run as __main__

PAGE_TITLE = "kNN-SVC web demo"
"""The page's <title>."""

PITCH_MODES = (*AUTO_SHIFTS, "semitones", "none")
"""Choices of the pitch-shift control; "semitones" takes the slider's value."""

SEMITONE_RANGE = MAX_SHIFT_SEMITONES
"""The semitone slider spans ±this (four octaves), the range `knnsvc-convert --pitch-shift` accepts."""

DEFAULT_MAX_SECONDS = 600.0
"""Longest upload (source or reference) the page converts unless ``--max-duration`` says otherwise."""

OUTPUT_SUFFIX = ".wav"
OUTPUT_SUBTYPE = "PCM_16"
"""The converted audio is written by `knnsvc.conversion.convert_file` as 16-bit WAV at the vocoder's rate
(plays in every current browser)."""

NO_AUTOMATIC_SHIFT = "the automatic pitch shift is undefined: choose a number of semitones or none"
"""What follows "no voiced frames, so" when the reference or the source has no pitch to shift from."""

KEEP_RESULTS = 16
"""Result folders (WAV and plots) kept in the work folder; older ones are removed (the page has
copies of what it shows)."""

DEMO_EXTRA = '-e ".[demo]"'
DEMO_INSTALL = f"pip install {DEMO_EXTRA}"
"""Installs what the demo needs beyond the converter (gradio, matplotlib)."""

_DEFAULTS = MatchConfig()


@dataclass(frozen=True)
class Controls:
    """The settings of one conversion, as the page's controls give them (the CLI's options).

    Attributes:
        vocoder: release name or path of the vocoder checkpoint.
        pitch_mode: one of `PITCH_MODES`.
        semitones: the transposition when `pitch_mode` is "semitones".
        f0: pitch extractor (`knnsvc.pitch.F0_EXTRACTORS`).
        post_opt: reselection with summing-weight optimisation (False: mean of the top-k).
        concat_weight: post-opt m, the concatenation weight of the reselection (None: missing,
            refused with `post_opt`).
        topk: frames averaged per output frame (a whole number, as a slider gives it).
        index_rate, protect, rms_mix: RVC's controls (see `MatchConfig`).
        block_seconds: F0 and vocoder block length (0 = whole recordings, else within the CLI's range).
        output_f0: also extract the output's F0 for the plot (runs the pitch extractor again).
    """

    vocoder: str
    pitch_mode: str = str(_DEFAULTS.pitch_shift)
    semitones: float = 0.0
    f0: str = DEFAULT_F0
    post_opt: bool = True
    concat_weight: float | None = _DEFAULTS.concat_weight
    topk: float = _DEFAULTS.topk
    index_rate: float = _DEFAULTS.index_rate
    protect: float = _DEFAULTS.protect
    rms_mix: float = _DEFAULTS.rms_mix
    block_seconds: float = DEFAULT_BLOCK_SECONDS
    output_f0: bool = True

    def pitch_shift(self) -> PitchShift:
        """The `MatchConfig.pitch_shift` the mode (and the slider) select.

        Raises:
            ValueError: an unknown mode, or semitones out of range.
        """
        if self.pitch_mode == "semitones":
            return parse_pitch_shift(self.semitones)
        if self.pitch_mode == "none":
            return None
        if self.pitch_mode in AUTO_SHIFTS:
            return self.pitch_mode
        raise ValueError(f"pitch shift mode must be one of {', '.join(PITCH_MODES)}, got {self.pitch_mode!r}")

    def checked_block_seconds(self) -> float:
        """`block_seconds` as a float: 0, or within [`MIN_BLOCK_SECONDS`, `MAX_BLOCK_SECONDS`] as in the CLI.

        Raises:
            ValueError: anything else (named as on the page).
        """
        try:
            value = float(self.block_seconds)
        except (TypeError, ValueError):
            raise ValueError(f"block seconds must be a number, got {self.block_seconds!r}") from None
        if value != 0.0 and not MIN_BLOCK_SECONDS <= value <= MAX_BLOCK_SECONDS:
            raise ValueError(f"block seconds must be 0 (whole recordings) or in [{MIN_BLOCK_SECONDS:g}, "
                             f"{MAX_BLOCK_SECONDS:g}], got {self.block_seconds!r}")
        return value

    def match_config(self) -> MatchConfig:
        """The matching settings (ValueError for values out of range, named as on the page)."""
        topk = float(self.topk)
        if not topk.is_integer():
            raise ValueError(f"top-k must be a whole number, got {self.topk!r}")
        concat_weight = None
        if self.post_opt:
            if self.concat_weight is None:
                raise ValueError("post-opt m is missing")
            concat_weight = float(self.concat_weight)
        return MatchConfig(
            topk=int(topk),
            concat_weight=concat_weight,
            optimise_weights=bool(self.post_opt),
            pitch_shift=self.pitch_shift(),
            index_rate=float(self.index_rate),
            protect=float(self.protect),
            rms_mix=float(self.rms_mix),
        )


@dataclass(frozen=True)
class DemoResult:
    """What one conversion gives the page.

    Attributes:
        wav_path: the converted audio, 16-bit WAV at `sample_rate`, the vocoder's samples per frame
            (320 at 16 kHz, 480 at 24 kHz, 882 at 44.1 kHz) per source frame.
        f0_plot: PNG of the source, shifted and output F0 contours.
        provenance_plot: PNG of the reference file and time each output frame came from.
        summary: one line: the applied shift, the durations and the time taken.
        num_frames: T, the source's frames.
        semitones: the applied transposition (0 when the vocoder takes no pitch).
        sample_rate: the rate of `wav_path` (the vocoder's output rate).
    """

    wav_path: Path
    f0_plot: Path
    provenance_plot: Path
    summary: str
    num_frames: int
    semitones: float
    sample_rate: int = SAMPLE_RATE


@dataclass(frozen=True)
class _Vocoder:
    kind: VocoderKind
    generator: Vocoder


class DemoEngine:
    """The demo's conversions, without Gradio: models and reference pools loaded once and kept.

    The converter of each request is built by `knnsvc.checkpoints.build_converter` from the kept
    models (the commands' builder: depth rule and compatibility check), and each conversion is
    `knnsvc.conversion.convert_file` (the commands' conversion of a file).

    Args:
        wavlm: WavLM checkpoint (release name or path).
        vocoder: the default vocoder (release name or path).
        vocoder_config: HiFi-GAN config JSON for `vocoder` (the release names read their widths
            from their checkpoints).
        device: where the models run.
        work_dir: folder for results (the most recent `KEEP_RESULTS` are kept).
        pool_cache: folder of the per-file reference pool cache (default: ``work_dir/pools``).
        max_seconds: longest upload accepted, source or reference (None: no limit of the demo's own).
    """

    def __init__(
        self,
        wavlm: str,
        vocoder: str,
        vocoder_config: Path | None,
        device: torch.device,
        work_dir: Path,
        pool_cache: Path | None = None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
    ) -> None:
        self.wavlm = wavlm
        self.vocoder = vocoder
        self.vocoder_config = vocoder_config
        self.device = device
        self.work_dir = Path(work_dir)
        self.pool_cache = Path(pool_cache).expanduser() if pool_cache is not None else self.work_dir / "pools"
        self.max_seconds = max_seconds
        self._encoders: dict[tuple[str, str], WavLMEncoder] = {}
        self._vocoders: dict[tuple[str, str | None, str], _Vocoder] = {}
        self._pool_caches: dict[str, PoolCache] = {}
        self._results: deque[Path] = deque()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------- models
    def vocoder_choices(self) -> list[tuple[str, str]]:
        """(label, value) of every vocoder the page offers: the releases and the --vocoder one."""
        choices = [(f"{name}: {release.description}", name)
                   for name, release in RELEASES.items() if release.role == "vocoder"]
        if self.vocoder not in RELEASES:
            choices.insert(0, (f"{Path(self.vocoder).name} (--vocoder)", self.vocoder))
        return choices

    def encoder(self) -> WavLMEncoder:
        """The WavLM encoder (to the depth the page's settings use), loaded on first use.

        Raises:
            CheckpointError: the checkpoint cannot be found, fetched or used.
        """
        key = (self.wavlm, str(self.device))
        with self._lock:
            if key not in self._encoders:
                start = time.perf_counter()
                depth = checkpoints.encoder_depth(MatchConfig())
                wavlm = checkpoints.load_wavlm(self.wavlm, device=self.device, num_layers=depth)
                self._encoders[key] = WavLMEncoder(wavlm, layer=WAVLM_LAYER)
                log.info("loaded WavLM %s on %s in %.1f s", self.wavlm, self.device, time.perf_counter() - start)
            return self._encoders[key]

    def load_vocoder(self, vocoder: str) -> tuple[VocoderKind, Vocoder]:
        """(architecture, generator) of `vocoder`, loaded on first use; the --vocoder-config JSON
        applies to the --vocoder checkpoint only.

        Raises:
            CheckpointError: the checkpoint cannot be found, fetched or used.
        """
        config = self.vocoder_config if vocoder == self.vocoder else None
        key = (vocoder, None if config is None else str(config), str(self.device))
        with self._lock:
            if key not in self._vocoders:
                start = time.perf_counter()
                kind, generator = checkpoints.load_vocoder(vocoder, config, device=self.device)
                self._vocoders[key] = _Vocoder(kind, generator)
                log.info("loaded vocoder %s (%s) on %s in %.1f s", vocoder, kind.value, self.device,
                         time.perf_counter() - start)
            loaded = self._vocoders[key]
        return loaded.kind, loaded.generator

    def converter(self, controls: Controls) -> KnnSvc:
        """A converter with the loaded models and the settings of `controls`, built by
        `knnsvc.checkpoints.build_converter`.

        Raises:
            CheckpointError: a checkpoint cannot be used, or the vocoder does not fit the encoder.
            ValueError: a control out of range or an unknown pitch extractor.
            ImportError: the pitch extractor's package is not installed.
        """
        config = controls.match_config()
        block_seconds = controls.checked_block_seconds()
        built = self.load_vocoder(controls.vocoder)
        return checkpoints.build_converter(self.encoder(), built, None, config, controls.f0, self.device,
                                           block_seconds, names=(self.wavlm, controls.vocoder))

    # ----------------------------------------------------------------------------- conversion
    def check_upload(self, path: Path) -> None:
        """Refuse an upload longer than `max_seconds` before any work: at once from a header that can be
        trusted (PCM), else by decoding it, which stops as soon as the limit is passed (a tiny upload
        claiming a huge duration is refused in milliseconds).

        Raises:
            ValueError: one line naming the file by its name.
        """
        try:
            with AudioReader(path, self.max_seconds) as reader:
                if reader.frames is None and self.max_seconds is not None:
                    for _ in reader.blocks():
                        pass
        except AudioError as err:
            raise ValueError(f"{Path(err.path).name}: {err.problem}") from None

    def convert(
        self,
        source: Path | None,
        references: Sequence[Path],
        controls: Controls,
        progress: Progress | None = None,
    ) -> DemoResult:
        """Convert `source` to the voice of `references` (`knnsvc.conversion.convert_file`), and plot
        what happened.

        Raises:
            ValueError: a missing, unreadable, silent, too long or too short input, a source or
                reference without voiced frames for an automatic shift, a control out of range, or
                a checkpoint that cannot be used (one line, naming the file by its name).
            ImportError: the pitch extractor's package is not installed.
        """
        if source is None:
            raise ValueError("no source: upload or record what should be sung")
        if not references:
            raise ValueError("no reference: upload one or more recordings of the target singer")
        source = Path(source)
        for path in (source, *map(Path, references)):
            self.check_upload(path)
        converter = self.converter(controls)
        start = time.perf_counter()
        folder = self._result_folder()
        try:
            pool = self.reference_pool(converter, [Path(p) for p in references], progress)
            if needs_voicing(converter) and not bool((pool.f0_hz > 0).any()):
                raise ValueError("the reference has " + no_voiced_frames(NO_AUTOMATIC_SHIFT))
            converted = convert_file(converter, pool, source, folder / f"{source.stem}_converted{OUTPUT_SUFFIX}",
                                     Options(max_seconds=self.max_seconds, subtype=OUTPUT_SUBTYPE), progress)
        except AudioError as err:
            problem = err.problem
            if problem.startswith(no_voiced_frames()):
                problem = no_voiced_frames(NO_AUTOMATIC_SHIFT)
            raise ValueError(f"{Path(err.path).name}: {problem}") from None
        seconds = time.perf_counter() - start
        result = converted.result

        contours = {"source": result.source_f0_hz}
        if converter.kind.uses_pitch:
            contours["shifted"] = result.f0_hz
        if controls.output_f0:
            wav_out = load_audio(converted.output)
            contours["converted"] = converter.f0(wav_out, converter.block_seconds or None)[: result.num_frames]
        semitones = result.semitones  # 0 for a vocoder that takes no pitch
        f0_plot = plot_f0_contours(folder / "f0.png", contours, title=f"F0, shift {semitones:+.2f} semitones")
        provenance_plot = plot_provenance(folder / "provenance.png", result.indices_wavlm, result.weights_wavlm,
                                          pool.starts, pool.names)
        summary = self._summary(converter, semitones, result.shift_ratio, converted.seconds, pool, seconds)
        log.info("%s", summary)
        return DemoResult(converted.output, f0_plot, provenance_plot, summary, result.num_frames, semitones,
                          converter.sample_rate)

    def reference_pool(
        self, converter: KnnSvc, files: Sequence[Path], progress: Progress | None = None
    ) -> ReferencePool:
        """The pool of the uploaded recordings, each read from the cache when it was seen before.

        Raises:
            AudioError: a recording cannot be used.
            ValueError: the recordings are shorter together than the candidates per frame.
        """

        def refuse(err: AudioError) -> None:
            raise err

        settings = converter.pool_settings()
        key = json.dumps(settings, sort_keys=True, default=str)
        with self._lock:
            if key not in self._pool_caches:
                self._pool_caches[key] = PoolCache(self.pool_cache, settings)
            cache = self._pool_caches[key]
        pool, _ = build_reference_pool(converter, files, cache, refuse, progress, max_seconds=self.max_seconds)
        if pool is None:
            raise ValueError("no reference: upload one or more recordings of the target singer")
        needed = converter.config.n_candidates
        if pool.num_frames < needed:
            raise ValueError(
                "the reference is " + too_short(pool.seconds, needed=needed * HOP_LENGTH / SAMPLE_RATE,
                                                 frames=pool.num_frames)
            )
        return pool

    def _result_folder(self) -> Path:
        """A new folder for one conversion's files; the oldest beyond `KEEP_RESULTS` is removed."""
        results = self.work_dir / "results"
        results.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="result-", dir=results))
        with self._lock:
            self._results.append(folder)
            while len(self._results) > KEEP_RESULTS:
                shutil.rmtree(self._results.popleft(), ignore_errors=True)
        return folder

    @staticmethod
    def _summary(converter: KnnSvc, semitones: float, ratio: float, audio_seconds: float, pool: ReferencePool,
                 seconds: float) -> str:
        if converter.kind.uses_pitch:
            shift = f"pitch shift {semitones:+.2f} semitones (x{ratio:.4f})"
        else:
            shift = f"pitch shift none (the {converter.kind.value} vocoder takes no pitch)"
        files = f"{len(pool.names)} reference file{'s' if len(pool.names) != 1 else ''}"
        return (f"{shift}; {audio_seconds:.2f} s of audio converted in {seconds:.2f} s "
                f"({files}, {pool.seconds:.1f} s)")


# ----------------------------------------------------------------------------------- the page
def build_app(engine: DemoEngine) -> gr.Blocks:
    """The Gradio page around `engine`; its Convert button is also the API endpoint ``/convert``.

    Raises:
        ImportError: gradio is not installed (the message gives the install command).
    """
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(f"the web demo needs gradio: {DEMO_INSTALL}") from err

    def convert(
        source: str | None,
        references: list[str] | None,
        vocoder: str,
        pitch_mode: str,
        semitones: float,
        f0: str,
        post_opt: bool,
        concat_weight: float,
        topk: float,
        index_rate: float,
        protect: float,
        rms_mix: float,
        block_seconds: float,
        output_f0: bool,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio injects its tracker through this default)
    ) -> tuple[str, str, str, str]:
        controls = Controls(vocoder=vocoder, pitch_mode=pitch_mode, semitones=semitones, f0=f0, post_opt=post_opt,
                            concat_weight=concat_weight, topk=topk, index_rate=index_rate, protect=protect,
                            rms_mix=rms_mix, block_seconds=block_seconds, output_f0=output_f0)
        try:
            result = engine.convert(Path(source) if source else None, [Path(p) for p in references or []],
                                    controls, _gradio_progress(progress))
        except (ValueError, ImportError) as err:  # bad input or settings: CheckpointError, AudioError too
            log.warning("conversion refused: %s", first_line(err))
            raise gr.Error(first_line(err), duration=None, print_exception=False) from None
        except Exception as err:  # a web page shows a message, never a traceback; the log has it
            log.exception("conversion failed")
            raise gr.Error(f"conversion failed: {first_line(err)} (the server log has the details)",
                           duration=None, print_exception=False) from None
        return str(result.wav_path), str(result.f0_plot), str(result.provenance_plot), result.summary

    defaults = Controls(vocoder=engine.vocoder)
    with gr.Blocks(title=PAGE_TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("# kNN-SVC singing voice conversion\n"
                    "Sing the **source** in the voice of the **target singer**: zero-shot, no training. "
                    "More reference audio covers the target voice better.", elem_id="heading")
        with gr.Row():
            with gr.Column():
                source = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Source (what is sung)",
                                  elem_id="source")
                references = gr.File(file_count="multiple", file_types=list(AUDIO_SUFFIXES),
                                     label="Target singer's recordings (one or more)", elem_id="references")
                vocoder = gr.Dropdown(engine.vocoder_choices(), value=engine.vocoder, label="Vocoder",
                                      elem_id="vocoder")
                with gr.Row():
                    pitch_mode = gr.Radio(list(PITCH_MODES), value=defaults.pitch_mode, label="Pitch shift",
                                          info="auto: the source's median pitch onto the reference's",
                                          elem_id="pitch-mode")
                    semitones = gr.Slider(-SEMITONE_RANGE, SEMITONE_RANGE, value=defaults.semitones, step=1,
                                          label="Semitones", visible=False, elem_id="semitones")
                f0 = gr.Dropdown(list(F0_EXTRACTORS), value=defaults.f0, label="Pitch extractor", elem_id="f0")
                with gr.Row():
                    post_opt = gr.Checkbox(value=defaults.post_opt, label="post-opt (reselection + weights)",
                                           elem_id="post-opt")
                    concat_weight = gr.Slider(0.0, 1.0, value=defaults.concat_weight, step=0.05,
                                              label="post-opt m", elem_id="post-opt-m")
                topk = gr.Slider(1, _DEFAULTS.n_candidates, value=defaults.topk, step=1, label="top-k",
                                 elem_id="topk")
                index_rate = gr.Slider(0.0, 1.0, value=defaults.index_rate, step=0.05, label="index rate",
                                       info="1 = matched features only", elem_id="index-rate")
                protect = gr.Slider(0.0, PROTECT_OFF, value=defaults.protect, step=0.01, label="protect",
                                    info=f"{PROTECT_OFF:g} = off", elem_id="protect")
                rms_mix = gr.Slider(0.0, 1.0, value=defaults.rms_mix, step=0.05, label="rms mix",
                                    info="0 = off", elem_id="rms-mix")
                block_seconds = gr.Number(value=defaults.block_seconds, minimum=0, maximum=MAX_BLOCK_SECONDS,
                                          label="block seconds",
                                          info="0 = whole recordings", elem_id="block-seconds")
                output_f0 = gr.Checkbox(value=defaults.output_f0, label="plot the output's F0 "
                                        "(runs the pitch extractor on it)", elem_id="output-f0")
                button = gr.Button("Convert", variant="primary", elem_id="convert")
            with gr.Column():
                result = gr.Audio(type="filepath", label="Converted", interactive=False, buttons=["download"],
                                  waveform_options=gr.WaveformOptions(show_recording_waveform=False),
                                  elem_id="result")  # the browser's own <audio> player
                summary = gr.Textbox(label="Result", interactive=False, elem_id="summary")
                f0_plot = gr.Image(type="filepath", format="png", label="F0 contours", interactive=False,
                                   elem_id="f0-plot")
                provenance_plot = gr.Image(type="filepath", format="png", label="Provenance of each output frame",
                                           interactive=False, elem_id="provenance-plot")
        pitch_mode.change(lambda mode: gr.Slider(visible=mode == "semitones"), pitch_mode, semitones,
                          api_visibility="private")
        post_opt.change(lambda on: gr.Slider(interactive=on), post_opt, concat_weight, api_visibility="private")
        button.click(
            convert,
            [source, references, vocoder, pitch_mode, semitones, f0, post_opt, concat_weight, topk, index_rate,
             protect, rms_mix, block_seconds, output_f0],
            [result, f0_plot, provenance_plot, summary],
            api_name="convert",
        )
    return app


def _gradio_progress(progress: gr.Progress) -> Progress:
    """The pipeline's ``(stage, done, total)`` callback shown on Gradio's progress bar."""
    names = {"reference": "encoding the reference", "encode": "encoding the source", "match": "matching",
             "vocode": "vocoding"}

    def report(stage: str, done: int, total: int) -> None:
        progress((done, total), desc=names.get(stage, stage))

    return report


# ----------------------------------------------------------------------------------- entry point
def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The command line; checkpoint, device and duration options are parsed as in `knnsvc-convert`."""
    parser = argparse.ArgumentParser(
        prog="knnsvc-demo",
        description="Web page for kNN-SVC: upload or record a source, upload a target singer, convert.",
        epilog="Checkpoint names: " + ", ".join(RELEASES) + " (see knnsvc-convert --list-checkpoints).",
    )
    parser.add_argument("--port", type=_port, default=7860, help="port to serve on (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on; 0.0.0.0 for every interface (default: %(default)s)")
    parser.add_argument("--wavlm", type=name_or_path_type, default=DEFAULT_WAVLM,
                        help="WavLM checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder", type=name_or_path_type, default=DEFAULT_VOCODER,
                        help="default vocoder: release name or file path; the page offers it and the releases "
                             "(default: %(default)s)")
    parser.add_argument("--vocoder-config", type=path_type, metavar="JSON",
                        help="HiFi-GAN config (official config_v1_wavlm.json format) for the --vocoder checkpoint")
    parser.add_argument("--device", type=device_type, default="auto",
                        help=f"{DEVICE_NAMES} (default: auto = cuda if available, else cpu)")
    parser.add_argument("--max-duration", type=number_type(1.0, MAX_DURATION_LIMIT_S, "a duration in seconds"),
                        default=DEFAULT_MAX_SECONDS, metavar="SECONDS",
                        help="refuse any upload (source or reference) longer than this (default: %(default)g s)")
    parser.add_argument("--pool-cache", type=path_type, metavar="DIR",
                        help="keep each reference recording's encoded pool here, across runs (default: a "
                             "temporary folder removed at exit)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    add_version_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the page until interrupted; returns the exit status (0; 1 when it cannot start: a missing
    extra, a checkpoint that cannot be used, a taken port; 2 usage errors, before anything loads)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.vocoder_config is not None and not args.vocoder_config.is_file():
        parser.error(f"--vocoder-config {args.vocoder_config}: file not found")
    with cli_logging(args.quiet):
        for module in ("gradio", "matplotlib"):  # before any model loads or downloads
            problem = missing_extra(module, DEMO_EXTRA)
            if problem:
                log.error("the web demo: %s", problem)
                return FAILED_STATUS
        with tempfile.TemporaryDirectory(prefix="knnsvc-demo-") as work_dir:
            engine = DemoEngine(args.wavlm, args.vocoder, args.vocoder_config, args.device, Path(work_dir),
                                args.pool_cache, args.max_duration)
            try:
                app = build_app(engine)
                engine.converter(Controls(vocoder=args.vocoder))  # the default models: a bad checkpoint stops here
            except (CheckpointError, ImportError, ValueError) as err:
                log.error("%s", first_line(err))
                return FAILED_STATUS
            with stop_on_sigterm():
                return _serve(app, args.host, args.port, [work_dir])


def _serve(app: gr.Blocks, host: str, port: int, allowed_paths: list[str]) -> int:
    """Run the server until Ctrl-C or SIGTERM (0); 1 when it cannot start (e.g. the port is taken)."""
    try:
        _, url, _ = app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                               allowed_paths=allowed_paths, footer_links=["api"])
    except OSError as err:
        log.error("cannot serve on %s:%d: %s", host, port, first_line(err))
        return 1
    log.info("serving the kNN-SVC demo on %s (Ctrl-C stops it)", url)
    try:
        while app.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
