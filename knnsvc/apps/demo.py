"""`knnsvc-demo`: a web page (Gradio) for trying kNN-SVC on a recording and a target singer.

    knnsvc-demo [--port 7860] [--host 127.0.0.1] [--wavlm NAME|PATH] [--vocoder NAME|PATH]
                [--vocoder-config JSON] [--device auto|cpu|cuda|cuda:N] [--pool-cache DIR]

The page takes a source (an uploaded file or a microphone recording) and one or more recordings of
the target singer, the vocoder (a release name, or the checkpoint given with --vocoder) and the
controls of `knnsvc-convert`: pitch shift (auto, auto-semitone, auto-octave, a number of semitones,
none), pitch extractor, post-opt m (or off), top-k, index rate, protect, rms mix, block length.
Convert shows the result in an audio player (16-bit WAV, 16 kHz, downloadable), the F0 contours
(source, shifted, and the output's own), the provenance of every output frame (which reference
file and time it came from), and one line with the applied shift and the time taken. The same
conversion is the API endpoint ``/convert`` (callable with `gradio_client`).

`DemoEngine` does the work and knows nothing of Gradio: models are loaded once per (checkpoint,
device) and kept; each uploaded reference's pool is cached by its content (`PoolCache`, in
--pool-cache or a temporary folder that is removed at exit); a problem with the input is a
one-line `ValueError`, which the page shows as a message (never a traceback).
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
from knnsvc import __version__, checkpoints
from knnsvc.apps.common import cli_logging, stop_on_sigterm
from knnsvc.audio import AUDIO_SUFFIXES, AudioError, AudioWriter
from knnsvc.checkpoints import RELEASES, CheckpointError
from knnsvc.config import HOP_LENGTH, SAMPLE_RATE, WAVLM_LAYER
from knnsvc.encoder import WavLMEncoder
from knnsvc.plots import plot_f0_contours, plot_provenance
from knnsvc.pipeline import DEFAULT_BLOCK_SECONDS, PROTECT_OFF, KnnSvc, MatchConfig, Progress
from knnsvc.pitch import AUTO_SHIFTS, F0_EXTRACTORS, PitchShift, get_f0_extractor, parse_pitch_shift
from knnsvc.pool import ReferencePool
from knnsvc.references import PoolCache, build_reference_pool, usable_recording
from knnsvc.runtime import first_line, resolve_device

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("knnsvc.demo")  # also when run as __main__

PAGE_TITLE = "kNN-SVC web demo"
"""The page's <title>."""

PITCH_MODES = (*AUTO_SHIFTS, "semitones", "none")
"""Choices of the pitch-shift control; "semitones" takes the slider's value."""

SEMITONE_RANGE = 24
"""The semitone slider spans ±this (two octaves)."""

KEEP_RESULTS = 16
"""Result folders (WAV and plots) kept in the work folder; older ones are removed (the page has
copies of what it shows)."""

DEMO_INSTALL = 'pip install -e ".[demo]"'
"""Installs what the demo needs beyond the converter."""

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
        block_seconds: F0 and vocoder block length (0 = whole recordings).
        output_f0: also extract the output's F0 for the plot (runs the pitch extractor again).
    """

    vocoder: str
    pitch_mode: str = str(_DEFAULTS.pitch_shift)
    semitones: float = 0.0
    f0: str = F0_EXTRACTORS[0]
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
        wav_path: the converted audio, 16-bit PCM WAV at 16 kHz, 320 samples per source frame.
        f0_plot: PNG of the source, shifted and output F0 contours.
        provenance_plot: PNG of the reference file and time each output frame came from.
        summary: one line: the applied shift, the durations and the time taken.
        num_frames: T, the source's frames.
        semitones: the applied transposition (0 when the vocoder takes no pitch).
    """

    wav_path: Path
    f0_plot: Path
    provenance_plot: Path
    summary: str
    num_frames: int
    semitones: float


@dataclass(frozen=True)
class _Vocoder:
    kind: VocoderKind
    generator: Vocoder


class DemoEngine:
    """The demo's conversions, without Gradio: models and reference pools loaded once and kept.

    Args:
        wavlm: WavLM checkpoint (release name or path).
        vocoder: the default vocoder (release name or path).
        vocoder_config: HiFi-GAN config JSON for `vocoder` (the release names read their widths
            from their checkpoints).
        device: where the models run.
        work_dir: folder for results (the most recent `KEEP_RESULTS` are kept).
        pool_cache: folder of the per-file reference pool cache (default: ``work_dir/pools``).
    """

    def __init__(
        self,
        wavlm: str,
        vocoder: str,
        vocoder_config: Path | None,
        device: torch.device,
        work_dir: Path,
        pool_cache: Path | None = None,
    ) -> None:
        self.wavlm = wavlm
        self.vocoder = vocoder
        self.vocoder_config = vocoder_config
        self.device = device
        self.work_dir = Path(work_dir)
        self.pool_cache = Path(pool_cache).expanduser() if pool_cache is not None else self.work_dir / "pools"
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
        """The WavLM encoder (to layer 6), loaded on first use.

        Raises:
            CheckpointError: the checkpoint cannot be found, fetched or used.
        """
        key = (self.wavlm, str(self.device))
        with self._lock:
            if key not in self._encoders:
                start = time.perf_counter()
                wavlm = checkpoints.load_wavlm(self.wavlm, device=self.device, num_layers=WAVLM_LAYER)
                self._encoders[key] = WavLMEncoder(wavlm, layer=WAVLM_LAYER)
                log.info("loaded WavLM %s on %s in %.1f s", self.wavlm, self.device, time.perf_counter() - start)
            return self._encoders[key]

    def load_vocoder(self, vocoder: str) -> tuple[VocoderKind, Vocoder]:
        """(architecture, generator) of `vocoder`, loaded on first use; the --vocoder-config JSON
        applies to the --vocoder checkpoint only.

        Raises:
            CheckpointError: the checkpoint cannot be found, fetched or used, or does not fit the
                encoder.
        """
        config = self.vocoder_config if vocoder == self.vocoder else None
        key = (vocoder, None if config is None else str(config), str(self.device))
        encoder = self.encoder()
        with self._lock:
            if key not in self._vocoders:
                start = time.perf_counter()
                kind, generator = checkpoints.load_vocoder(vocoder, config, device=self.device)
                checkpoints.check_compatible(encoder.wavlm, generator, self.wavlm, vocoder)
                self._vocoders[key] = _Vocoder(kind, generator)
                log.info("loaded vocoder %s (%s) on %s in %.1f s", vocoder, kind.value, self.device,
                         time.perf_counter() - start)
            loaded = self._vocoders[key]
        return loaded.kind, loaded.generator

    def converter(self, controls: Controls) -> KnnSvc:
        """A converter with the loaded models and the settings of `controls`.

        Raises:
            CheckpointError: see `load_vocoder`.
            ValueError: a control out of range or an unknown pitch extractor.
            ImportError: the pitch extractor's package is not installed.
        """
        config = controls.match_config()
        f0 = get_f0_extractor(controls.f0, self.device)
        kind, generator = self.load_vocoder(controls.vocoder)
        return KnnSvc(self.encoder(), generator, kind, config=config, block_seconds=float(controls.block_seconds),
                      f0=f0)

    # ----------------------------------------------------------------------------- conversion
    def convert(
        self,
        source: Path | None,
        references: Sequence[Path],
        controls: Controls,
        progress: Progress | None = None,
    ) -> DemoResult:
        """Convert `source` to the voice of `references`, and plot what happened.

        Raises:
            ValueError: a missing, unreadable, silent or too short input, a source or reference
                without voiced frames for an automatic shift, a control out of range, or a
                checkpoint that cannot be used (one line, naming the file by its name).
            ImportError: the pitch extractor's package is not installed.
        """
        if source is None:
            raise ValueError("no source: upload or record what should be sung")
        if not references:
            raise ValueError("no reference: upload one or more recordings of the target singer")
        converter = self.converter(controls)
        start = time.perf_counter()
        try:
            wav_16k = usable_recording(Path(source), converter)
            pool = self.reference_pool(converter, [Path(p) for p in references], progress)
        except AudioError as err:
            raise ValueError(f"{err.path.name}: {err.problem}") from None
        automatic = isinstance(converter.config.pitch_shift, str) and converter.kind.uses_pitch
        if automatic and not bool((pool.f0_hz > 0).any()):
            raise ValueError("the reference has no voiced frame, so the automatic pitch shift is undefined: "
                             "choose a number of semitones or none")
        features = converter.analyse(wav_16k, progress)
        try:
            if automatic and not bool((features.f0_hz > 0).any()):
                raise ValueError(f"{Path(source).name}: no voiced frame, so the automatic pitch shift is undefined: "
                                 "choose a number of semitones or none")
            result = converter.match(features, pool, progress)
            folder = self._result_folder()
            wav_path = folder / f"{Path(source).stem}_converted.wav"
            blocks = []
            with AudioWriter(wav_path, subtype="PCM_16") as writer:
                for block in converter.vocode_blocks(result, progress):
                    writer.write(block)
                    blocks.append(block)
        finally:
            features.close()
        seconds = time.perf_counter() - start
        wav_out = torch.cat(blocks) if blocks else torch.zeros(0)

        contours = {"source": result.source_f0_hz}
        if converter.kind.uses_pitch:
            contours["shifted"] = result.f0_hz
        if controls.output_f0:
            contours["converted"] = converter.f0(wav_out, converter.block_seconds or None)[: result.num_frames]
        semitones = result.semitones  # 0 for a vocoder that takes no pitch
        f0_plot = plot_f0_contours(folder / "f0.png", contours, title=f"F0, shift {semitones:+.2f} semitones")
        provenance_plot = plot_provenance(folder / "provenance.png", result.indices_wavlm, result.weights_wavlm,
                                          pool.starts, pool.names)
        summary = self._summary(converter, semitones, result.shift_ratio, wav_out.numel(), pool, seconds)
        log.info("%s", summary)
        return DemoResult(wav_path, f0_plot, provenance_plot, summary, result.num_frames, semitones)

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
        pool, _ = build_reference_pool(converter, files, cache, refuse, progress)
        if pool is None:
            raise ValueError("no reference: upload one or more recordings of the target singer")
        needed = converter.config.n_candidates
        if pool.num_frames < needed:
            raise ValueError(
                f"the reference is too short: {pool.seconds:.2f} s ({pool.num_frames} frames); at least "
                f"{needed * HOP_LENGTH / SAMPLE_RATE:.2f} s ({needed} frames) are needed"
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
    def _summary(converter: KnnSvc, semitones: float, ratio: float, n_samples: int, pool: ReferencePool,
                 seconds: float) -> str:
        if converter.kind.uses_pitch:
            shift = f"pitch shift {semitones:+.2f} semitones (x{ratio:.4f})"
        else:
            shift = f"pitch shift none (the {converter.kind.value} vocoder takes no pitch)"
        files = f"{len(pool.names)} reference file{'s' if len(pool.names) != 1 else ''}"
        return (f"{shift}; {n_samples / SAMPLE_RATE:.2f} s of audio converted in {seconds:.2f} s "
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
                block_seconds = gr.Number(value=defaults.block_seconds, minimum=0, label="block seconds",
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
    """The command line; checkpoint and device options are named as in `knnsvc-convert`."""
    parser = argparse.ArgumentParser(
        prog="knnsvc-demo",
        description="Web page for kNN-SVC: upload or record a source, upload a target singer, convert.",
        epilog="Checkpoint names: " + ", ".join(RELEASES) + " (see knnsvc-convert --list-checkpoints).",
    )
    parser.add_argument("--port", type=_port, default=7860, help="port to serve on (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on; 0.0.0.0 for every interface (default: %(default)s)")
    parser.add_argument("--wavlm", default=checkpoints.DEFAULT_WAVLM,
                        help="WavLM checkpoint: release name or file path (default: %(default)s)")
    parser.add_argument("--vocoder", default=checkpoints.DEFAULT_VOCODER,
                        help="default vocoder: release name or file path; the page offers it and the releases "
                             "(default: %(default)s)")
    parser.add_argument("--vocoder-config", type=Path, metavar="JSON",
                        help="HiFi-GAN config (official config_v1_wavlm.json format) for the --vocoder checkpoint")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--pool-cache", type=Path, metavar="DIR",
                        help="keep each reference recording's encoded pool here, across runs (default: a "
                             "temporary folder removed at exit)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"knnsvc {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the page until interrupted; returns the exit status (0, 1 when it cannot start, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device: {err}")
    with cli_logging(args.quiet), tempfile.TemporaryDirectory(prefix="knnsvc-demo-") as work_dir:
        engine = DemoEngine(args.wavlm, args.vocoder, args.vocoder_config, device, Path(work_dir), args.pool_cache)
        try:
            engine.load_vocoder(args.vocoder)  # the default models, so that a bad checkpoint stops here
            app = build_app(engine)
        except (CheckpointError, ImportError) as err:
            log.error("%s", first_line(err))
            return 1
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
