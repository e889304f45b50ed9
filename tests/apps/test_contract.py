"""The front-end contract every command keeps (knnsvc.apps.common), checked through convert, stream
and cover on the tiny golden checkpoints:

- every shared option reaches the conversion in every command that accepts it, or is refused there
  with one usage line naming it (the CLI matrix);
- nothing of the user's is replaced or deleted: an output is never an input, never a folder, an
  existing output is a warning and a skip, the clean-up removes only the planned outputs' temporaries;
- path arguments: empty, missing, FIFO, folder for a file, each one line; usage errors exit 2
  before any model loads; the same exit statuses everywhere; ``--version``;
- the option parsers, by property-based tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from knnsvc import __version__
from knnsvc.apps import common, convert, cover, stream
from knnsvc.apps.common import (
    FAILED_STATUS,
    INTERRUPTED_STATUS,
    OK_STATUS,
    USAGE_STATUS,
    block_seconds_type,
    device_type,
    integer_type,
    layers_type,
    number_type,
    path_type,
)
from knnsvc.config import MAX_BLOCK_SECONDS, MIN_BLOCK_SECONDS
from knnsvc.pitch import pitch_shift_argument
from tests.apps.test_convert import GOLDEN, SR, error_lines, sung_vowel, tiny_args

TINY_SEPARATOR = str(GOLDEN / "htdemucs_tiny.th")
COMMANDS = ("convert", "stream", "cover")
MAINS: dict[str, Callable[[list[str] | None], int]] = {"convert": convert.main, "stream": stream.main,
                                                        "cover": cover.main}
STREAM_FAST = ("--block-ms", "300", "--lookahead-ms", "0", "--context-s", "0.3", "--f0-context-s", "0.3")
"""Few, long blocks: the stream's matrix runs in seconds (the settings' meaning is tested in test_streaming)."""


# --------------------------------------------------------------------------- media and runs
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A 0.7 s sung source, a 1 s reference singer, a 0.7 s stereo song, an F0 curve."""
    folder = tmp_path_factory.mktemp("contract")
    paths = {"src": folder / "src.wav", "ref": folder / "singer" / "ref.wav", "song": folder / "song.wav",
             "curve": folder / "curve.csv", "graph": folder / "exported.onnx", "json": folder / "settings.json"}
    paths["ref"].parent.mkdir()
    paths["graph"].write_bytes(b"not a graph: refused by name before anything reads it")
    paths["json"].write_text("{}")
    sf.write(paths["src"], sung_vowel(0.7, 262.0, 1), SR)
    sf.write(paths["ref"], sung_vowel(1.0, 196.0, 2), SR)
    vocal = sung_vowel(0.7, 230.0, 3)
    sf.write(paths["song"], np.stack([vocal, 0.8 * vocal], axis=1), SR)
    paths["curve"].write_text("time_s,f0_hz\n0,330\n0.7,330\n")
    return paths


def command_line(command: str, media: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """A run of `command` on the media into `out` (a file for convert and stream, a folder for cover)."""
    if command == "cover":
        return [str(media["song"]), str(media["ref"]), "-o", str(out), "--separator", TINY_SEPARATOR,
                *tiny_args(*extra)]
    fast = STREAM_FAST if command == "stream" else ()
    return [str(media["src"]), str(media["ref"]), "-o", str(out), *tiny_args(*fast, *extra)]


def output_path(command: str, tmp_path: Path) -> Path:
    return tmp_path / ("cover" if command == "cover" else "out.wav")


def converted(command: str, out: Path) -> np.ndarray:
    """The converted voice a run wrote."""
    return sf.read(out / "vocals_converted.wav" if command == "cover" else out, dtype="float64")[0]


def needs_extras(command: str) -> None:
    if command == "cover":
        pytest.importorskip("demucs_infer")


@pytest.fixture(scope="module")
def baselines(media, tmp_path_factory) -> dict[str, np.ndarray]:
    """Each command's output with the default options (computed on first use)."""
    folder = tmp_path_factory.mktemp("baselines")

    class Lazy(dict):
        def __missing__(self, command: str) -> np.ndarray:
            out = output_path(command, folder / command)
            assert MAINS[command](command_line(command, media, out)) == OK_STATUS
            self[command] = converted(command, out)
            return self[command]

    return Lazy()


@pytest.fixture
def no_models(monkeypatch) -> None:
    """Fail the test if any command loads a model (or the separator)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for module in (convert, stream, cover):
        monkeypatch.setattr(module, "load_converter", refuse)
    monkeypatch.setattr(cover, "separator_weights", refuse)


def usage_line(capsys) -> str:
    """The one ``error:`` line argparse printed."""
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


def run_usage(command: str, argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        MAINS[command](argv)
    return int(exit_info.value.code)


# --------------------------------------------------------------------------- the CLI matrix
CHANGES = "changes"  # the option changes the converted voice
SAME = "same"  # the option leaves it exactly as it is (the runs are deterministic on the CPU)
RUNS = "runs"  # the option is honoured; its effect is measured by its own tests (here: nothing to change)

SHARED_OPTIONS: list[tuple[str, tuple[str, ...], str]] = [
    ("pitch-shift", ("--pitch-shift", "3"), CHANGES),
    ("pitch-shift-none", ("--pitch-shift", "none"), CHANGES),
    ("topk", ("--topk", "1"), CHANGES),
    ("post-opt", ("--post-opt", "0.5"), CHANGES),
    ("no-post-opt", ("--no-post-opt",), CHANGES),
    ("index-rate", ("--index-rate", "0.3"), CHANGES),
    ("rms-mix", ("--rms-mix", "1"), CHANGES),
    ("loudness", ("--loudness", "-40"), CHANGES),
    ("match-layers", ("--match-layers", "3-5"), CHANGES),
    ("f0", ("--f0", "dio"), CHANGES),
    ("f0-file", ("--f0-file", "{curve}"), CHANGES),
    ("protect", ("--protect", "0"), RUNS),
    ("precision", ("--precision", "float32"), RUNS),
    ("respect-file-boundaries", ("--respect-file-boundaries",), SAME),
    ("block-seconds", ("--block-seconds", "0"), SAME),
    ("device", ("--device", "cpu"), SAME),
    ("network-precision", ("--network-precision", "bfloat16"), CHANGES),
    ("workers", ("--workers", "1"), SAME),
    ("max-duration", ("--max-duration", "60"), SAME),
    ("pool-cache", ("--pool-cache", "{tmp}/cache"), SAME),
    ("repair-audio", ("--repair-audio",), SAME),
    ("num-shards", ("--num-shards", "1", "--shard-index", "0"), SAME),
    ("manifest", ("--manifest", "{tmp}/run.json"), SAME),
]
REFUSED = {("stream", "block-seconds"), ("stream", "num-shards"), ("stream", "manifest"), ("cover", "num-shards"),
           ("cover", "manifest")}
"""Options a command accepts only to refuse them with one usage line naming them."""
HONOUR_OR_REFUSE = {"workers", "max-duration", "f0-file"}
"""Options that depend on a newer engine: honoured where it is there, else one usage line naming them."""


def _matrix():
    for command in COMMANDS:
        for name, flags, effect in SHARED_OPTIONS:
            marks = [] if command == "convert" else [pytest.mark.slow]
            yield pytest.param(command, flags, effect, (command, name) in REFUSED, name in HONOUR_OR_REFUSE,
                               id=f"{command}-{name}", marks=marks)


@pytest.mark.parametrize(("command", "flags", "effect", "refused", "may_refuse"), list(_matrix()))
def test_every_shared_option_is_honoured_or_refused_by_every_command(
        command, flags, effect, refused, may_refuse, media, baselines, tmp_path, capsys):
    needs_extras(command)
    flags = [flag.format(curve=media["curve"], tmp=tmp_path) for flag in flags]
    out = output_path(command, tmp_path)
    argv = command_line(command, media, out, *flags)
    if refused:
        assert run_usage(command, argv) == USAGE_STATUS
        assert flags[0] in usage_line(capsys)
        assert not out.exists()
        return
    try:
        status = MAINS[command](argv)
    except SystemExit as exit_info:  # an option this version cannot honour yet: refused, never ignored
        assert may_refuse and exit_info.code == USAGE_STATUS
        assert flags[0] in usage_line(capsys)
        assert not out.exists()
        return
    assert status == OK_STATUS, capsys.readouterr().err
    written, expected = converted(command, out), baselines[command]
    if effect == SAME:
        assert np.array_equal(written, expected)
    elif effect == CHANGES:  # the tiny random vocoder hears features faintly: any change counts
        assert written.shape == expected.shape and not np.array_equal(written, expected)
    else:
        assert written.shape == expected.shape and np.isfinite(written).all()
    if flags[0] == "--pool-cache":
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    if flags[0] == "--manifest":
        entries = json.loads((tmp_path / "run.json").read_text())["entries"]
        assert [(entry["output"], entry["status"]) for entry in entries] == [(str(out), "converted")]
    if flags[0] == "--loudness":
        pyloudnorm = pytest.importorskip("pyloudnorm")
        assert abs(pyloudnorm.Meter(SR).integrated_loudness(written) - -40.0) < 1.0


# --------------------------------------------------------------------------- usage errors, before any model loads
BAD_USAGE: list[tuple[str, ...]] = [
    ("--block-seconds", "1e306"), ("--block-seconds", "0.001"), ("--block-seconds", "-1"),
    ("--block-seconds", "nan"), ("--device", "mps"), ("--device", "meta"), ("--device", "xpu"),
    ("--device", "gpu"), ("--device", "cuda:x"), ("--device", ""), ("--topk", "0"), ("--topk", "2.5"),
    ("--pitch-shift", "inf"), ("--max-duration", "0"), ("--max-duration", "inf"), ("--workers", "0"),
    ("--workers", "many"), ("--match-layers", "0-99999999"), ("--loudness", "1"), ("--f0-file", ""),
    ("--pool-cache", ""), ("--vocoder-config", ""), ("--wavlm", ""), ("-o", ""), ("--network-precision", "fp16"),
    ("--network-precision", "bfloat16", "--vocoder", "{graph}"), ("--vocoder-config", "{json}", "--vocoder", "{graph}"),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", BAD_USAGE, ids=" ".join)
def test_usage_errors_exit_2_with_one_line_before_any_model_loads(command, bad, media, tmp_path, no_models, capsys):
    bad = tuple(flag.format(graph=media["graph"], json=media["json"]) for flag in bad)
    argv = command_line(command, media, output_path(command, tmp_path), *bad)
    assert run_usage(command, argv) == USAGE_STATUS
    assert bad[0] in usage_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("command", COMMANDS)
def test_cuda_where_there_is_none_is_a_usage_error(command, media, tmp_path, no_models, capsys):
    argv = command_line(command, media, output_path(command, tmp_path), "--device", "cuda")
    assert run_usage(command, argv) == USAGE_STATUS
    assert "CUDA is not available" in usage_line(capsys)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("content", ["[1, 2]", "\"a string\"", "3", "{not json"])
def test_a_vocoder_config_that_is_not_a_json_object_is_a_usage_error(command, content, media, tmp_path, no_models,
                                                                      capsys):
    config = tmp_path / "config.json"
    config.write_text(content)
    argv = command_line(command, media, output_path(command, tmp_path), "--vocoder-config", str(config))
    assert run_usage(command, argv) == USAGE_STATUS
    assert str(config) in usage_line(capsys)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("position", [0, 1])
def test_an_empty_path_argument_is_a_usage_error_not_the_current_folder(command, position, media, tmp_path,
                                                                         no_models, monkeypatch, capsys):
    monkeypatch.chdir(media["ref"].parent)  # a folder of audio, which "" must not mean
    argv = command_line(command, media, output_path(command, tmp_path))
    argv[position] = ""
    assert run_usage(command, argv) == USAGE_STATUS
    assert "empty path" in usage_line(capsys)


@pytest.mark.parametrize("command", [*COMMANDS, "demo"])
def test_version(command, capsys):
    from knnsvc.apps import demo

    main = {**MAINS, "demo": demo.main}[command]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"knnsvc {__version__}"


# --------------------------------------------------------------------------- inputs: one line each
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("which", [0, 1])
def test_a_missing_input_is_one_line_before_any_model_loads(command, which, media, tmp_path, no_models, capsys):
    argv = command_line(command, media, output_path(command, tmp_path))
    argv[which] = str(tmp_path / "nowhere.wav")
    assert MAINS[command](argv) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert line == f"ERROR: {tmp_path / 'nowhere.wav'}: no such file or folder"


class FifoWatch:
    """A FIFO, and whether anything opened it for reading (which would block a real run forever)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only with a reader
            except OSError:
                time.sleep(0.01)
                continue
            self.opened = True
            os.close(fd)
            return

    def close(self) -> bool:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.opened


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("which", [0, 1])
def test_a_fifo_is_refused_with_one_line_and_never_opened(command, which, media, tmp_path, no_models, capsys):
    fifo = FifoWatch(tmp_path / "pipe.wav")
    argv = command_line(command, media, output_path(command, tmp_path))
    argv[which] = str(fifo.path)
    try:
        assert MAINS[command](argv) == FAILED_STATUS
    finally:
        assert not fifo.close(), "the FIFO was opened for reading"
    [line] = error_lines(capsys.readouterr().err)
    assert str(fifo.path) in line and "not a regular file or folder" in line and "no audio files" not in line


def test_a_fifo_inside_a_folder_is_never_opened_by_the_scan(media, tmp_path):
    folder = tmp_path / "songs"
    folder.mkdir()
    sf.write(folder / "a.wav", sung_vowel(0.2), SR)
    fifo = FifoWatch(folder / "b.wav")
    try:
        jobs = convert.plan_jobs(folder, media["ref"], tmp_path / "out")
        assert [job.source.name for job in jobs] == ["a.wav"]
        assert common.reference_files(folder) == [folder / "a.wav"]
    finally:
        assert not fifo.close()


def test_stream_says_a_folder_is_a_folder(media, tmp_path, no_models, capsys):
    argv = command_line("stream", media, tmp_path / "out.wav")
    argv[0] = str(media["ref"].parent)
    assert stream.main(argv) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert line == f"ERROR: {media['ref'].parent}: is a folder; a file is needed"


def test_the_source_folder_as_output_folder_is_named_as_such(media, tmp_path, no_models, capsys):
    folder = tmp_path / "songs"
    folder.mkdir()
    sf.write(folder / "a.wav", sung_vowel(0.2), SR)
    argv = [str(folder), str(media["ref"]), "-o", str(folder), *tiny_args("--overwrite")]
    assert convert.main(argv) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "is the source folder" in line and "no audio files" not in line


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_f0_file_is_one_line_naming_it(command, media, tmp_path, no_models, capsys):
    argv = command_line(command, media, output_path(command, tmp_path), "--f0-file", str(tmp_path / "no.csv"))
    try:
        status = MAINS[command](argv)
    except SystemExit as exit_info:  # a streaming engine without F0 curves refuses the option first
        assert command == "stream" and exit_info.code == USAGE_STATUS
        return
    assert status == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert line == f"ERROR: {tmp_path / 'no.csv'}: no such file or folder"


def test_an_f0_file_error_names_the_csv_and_its_line_not_the_source(media, tmp_path, capsys):
    curve = tmp_path / "bad.csv"
    curve.write_text("time_s,f0_hz\n0,200\n0.2,abc\n")
    argv = command_line("convert", media, tmp_path / "out.wav", "--f0-file", str(curve))
    assert convert.main(argv) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"ERROR: {curve}:3: ") and str(media["src"]) not in line
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_source_longer_than_max_duration_is_one_line(command, media, tmp_path, capsys):
    needs_extras(command)
    long_media = {**media, "src": tmp_path / "long.wav", "song": tmp_path / "long_song.wav"}
    sf.write(long_media["src"], sung_vowel(2.5, 262.0, 1), SR)
    sf.write(long_media["song"], np.stack([sung_vowel(2.5, 262.0, 1)] * 2, axis=1), SR)
    out = output_path(command, tmp_path / "out")
    try:
        status = MAINS[command](command_line(command, long_media, out, "--max-duration", "1"))
    except SystemExit as exit_info:  # an audio layer without a duration cap refuses the option
        assert exit_info.code == USAGE_STATUS
        return
    assert status == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "longer than the limit of 1 s" in line and "long" in line
    assert not out.exists() or not any(out.glob("*.wav"))


def test_cover_without_its_extra_is_one_line_before_any_model_loads(media, tmp_path, no_models, monkeypatch, capsys):
    real = common.importlib.util.find_spec
    monkeypatch.setattr(common.importlib.util, "find_spec",
                        lambda name, *a: None if name == "demucs_infer" else real(name, *a))
    assert cover.main(command_line("cover", media, tmp_path / "cover")) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "pip install 'knnsvc[cover]'" in line
    assert not (tmp_path / "cover").exists()


# --------------------------------------------------------------------------- outputs: nothing of the user's is lost
def _replacing_runs(media: dict[str, Path], tmp_path: Path) -> list[tuple[str, list[str], Path]]:
    """(command, argv, the input it names as output), every command, with --overwrite."""
    hard_link = tmp_path / "linked.wav"
    os.link(media["src"], hard_link)
    singer = media["ref"].parent
    return [
        ("convert", [str(media["src"]), str(media["ref"]), "-o", str(media["src"])], media["src"]),
        ("convert", [str(media["src"]), str(media["ref"]), "-o", str(media["ref"])], media["ref"]),
        ("convert", [str(media["src"]), str(media["ref"]), "-o", str(hard_link)], media["src"]),
        ("stream", [str(media["src"]), str(media["ref"]), "-o", str(media["src"])], media["src"]),
        ("stream", [str(media["src"]), str(media["ref"]), "-o", str(media["ref"])], media["ref"]),
        ("stream", [str(media["src"]), str(singer), "-o", str(media["ref"])], media["ref"]),
        ("stream", [str(media["src"]), str(media["ref"]), "-o", str(hard_link)], media["src"]),
        ("cover", [str(media["song"]), str(singer / "vocals.wav"), "-o", str(singer)], singer / "vocals.wav"),
        ("cover", [str(singer / "remix.wav"), str(media["ref"]), "-o", str(singer)], singer / "remix.wav"),
    ]


def test_no_command_replaces_an_input_even_with_overwrite(media, tmp_path, no_models, capsys):
    for name in ("vocals.wav", "remix.wav"):  # a singer folder with recordings named like cover outputs
        sf.write(media["ref"].parent / name, sung_vowel(1.0, 200.0, 5), SR)
    try:
        for command, argv, victim in _replacing_runs(media, tmp_path):
            before = victim.read_bytes()
            assert MAINS[command]([*argv, *tiny_args("--overwrite")]) == FAILED_STATUS, argv
            assert victim.read_bytes() == before
            [line] = error_lines(capsys.readouterr().err)
            assert "would replace an input" in line, (argv, line)
    finally:
        for name in ("vocals.wav", "remix.wav"):
            (media["ref"].parent / name).unlink()


@pytest.mark.parametrize("command", COMMANDS)
def test_an_existing_folder_is_never_an_output(command, media, tmp_path, no_models, capsys):
    if command == "convert":
        blocker = tmp_path / "out" / "src_to_ref.wav"  # -o out/ puts the output there
        out = tmp_path / "out"
    elif command == "stream":
        blocker = out = tmp_path / "out.wav"
    else:
        out = tmp_path / "cover"
        blocker = out / "vocals.wav"
    blocker.mkdir(parents=True)
    (blocker / "keep.txt").write_text("mine")
    argv = command_line(command, media, out, "--overwrite")
    assert MAINS[command](argv) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert f"{blocker} is an existing folder" in line
    assert (blocker / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_existing_output_is_a_warning_and_a_skip(command, media, tmp_path, no_models, capsys):
    out = output_path(command, tmp_path)
    if command == "cover":
        out.mkdir()
        for name in ("vocals.wav", "accompaniment.wav", "vocals_converted.wav", "remix.wav"):
            (out / name).write_bytes(b"done before")
    else:
        out.write_bytes(b"done before")
    assert MAINS[command](command_line(command, media, out)) == OK_STATUS
    err = capsys.readouterr().err
    assert error_lines(err) == []
    [line] = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert "skipped" in line and "--overwrite" in line
    assert all(p.read_bytes() == b"done before" for p in ([out] if out.is_file() else out.iterdir()))


def test_an_output_name_of_255_bytes_is_written(media, tmp_path):
    name = "ü" * 125 + "x.wav"  # 250 + 5 bytes
    assert len(name.encode()) == 255
    out = tmp_path / name
    assert convert.main(command_line("convert", media, out, "--no-post-opt")) == OK_STATUS
    assert sf.info(out).frames == len(sf.read(media["src"])[0]) // 320 * 320
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_name_longer_than_255_bytes_is_one_line(command, media, tmp_path, no_models, capsys):
    out = tmp_path / ("a" * 252 + ".wav")
    assert MAINS[command](command_line(command, media, out)) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "longer than 255 bytes" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_the_clean_up_removes_only_the_planned_outputs_temporaries(command, media, tmp_path, monkeypatch):
    out = output_path(command, tmp_path)
    folder = out if command == "cover" else out.parent
    planned = "vocals.wav" if command == "cover" else out.name
    (folder / "sibling").mkdir(parents=True, exist_ok=True)
    stale = folder / f".{planned}.0123abcd.partial"
    unrelated = [folder / "sibling" / f".{planned}.1234abcd.partial", folder / "sibling" / ".x.wav.1234abcd.partial",
                 folder / ".other.wav.1234abcd.partial"]
    for path in [stale, *unrelated]:
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 7200, time.time() - 7200))

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the clean-up is done when the models would load

    for module in (convert, stream, cover):
        monkeypatch.setattr(module, "load_converter", stop)
    monkeypatch.setattr(cover, "separator_weights", stop)
    assert MAINS[command](command_line(command, media, out)) == INTERRUPTED_STATUS
    assert not stale.exists()
    assert all(path.read_bytes() == b"x" for path in unrelated)


# --------------------------------------------------------------------------- property tests of the parsers
@settings(deadline=None, max_examples=300)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=12)),
       st.one_of(st.none(), st.floats(-1e6, 1e6)), st.one_of(st.none(), st.floats(-1e6, 1e6)))
def test_number_type_accepts_exactly_the_finite_numbers_within_its_bounds(text, low, high):
    try:
        value = float(text)
    except ValueError:
        value = None
    inside = value is not None and math.isfinite(value) and (low is None or value >= low) and (
        high is None or value <= high)
    try:
        parsed = number_type(low, high)(text)
    except argparse.ArgumentTypeError as err:
        assert not inside and str(err).count("\n") == 0
    else:
        assert inside and parsed == value


@settings(deadline=None, max_examples=300)
@given(st.text(alphabet="0123456789-, x", max_size=16))
def test_layers_type_gives_sorted_distinct_layers_or_one_usage_line(text):
    try:
        layers = layers_type(text)
    except argparse.ArgumentTypeError as err:
        assert "\n" not in str(err)
    else:
        assert layers == sorted(set(layers)) and layers and 0 <= layers[0] and layers[-1] <= common.MAX_LAYER


@settings(deadline=None, max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), min_size=1, max_size=4))
def test_layers_type_reads_what_it_documents(ranges):
    text = ",".join(f"{low}-{low + span}" if span else str(low) for low, span in ranges)
    assert layers_type(text) == sorted({layer for low, span in ranges for layer in range(low, low + span + 1)})


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=10)))
def test_block_seconds_are_0_or_within_the_documented_range(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    valid = value is not None and (value == 0 or MIN_BLOCK_SECONDS <= value <= MAX_BLOCK_SECONDS)
    try:
        parsed = block_seconds_type(text)
    except argparse.ArgumentTypeError:
        assert not valid
    else:
        assert valid and parsed == value


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.text(max_size=12), st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:7", "mps", "meta", "xpu",
                                                        "gpu", "auto", "cpu:0", "CUDA", "vulkan"])))
def test_device_type_gives_a_cpu_or_cuda_device_or_one_usage_line(text):
    try:
        device = device_type(text)
    except argparse.ArgumentTypeError as err:
        assert "\n" not in str(err) and str(err)
    else:
        assert device.type in ("cpu", "cuda")
        assert device.type == "cuda" or text.strip() in ("cpu", "cpu:0", "auto")


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=14),
                 st.sampled_from(["auto", "auto-semitone", "auto-octave", "none", "+3", "-48", "48.5", "0"])))
def test_pitch_shift_is_a_finite_shift_a_mode_or_one_usage_line(text):
    try:
        shift = pitch_shift_argument(text)
    except argparse.ArgumentTypeError as err:
        assert "\n" not in str(err)
    else:
        assert shift is None or isinstance(shift, str) or (math.isfinite(shift) and abs(shift) <= 48)


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=12), st.integers(-5, 5), st.integers(-5, 50))
def test_integer_type_accepts_exactly_the_whole_numbers_within_its_bounds(text, low, high):
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    try:
        parsed = integer_type(low, high)(text)
    except argparse.ArgumentTypeError:
        assert value is None or not low <= value <= high
    else:
        assert parsed == value and low <= parsed <= high


@settings(deadline=None, max_examples=100)
@given(st.text(max_size=8))
def test_path_type_never_takes_an_empty_path_for_the_current_folder(text):
    try:
        path = path_type(text)
    except argparse.ArgumentTypeError:
        assert not text.strip()
    else:
        assert text.strip() and path == Path(text)
