"""`knnsvc-stream` as a user runs it: the output and its JSON report, the progress bar, and every
way a file, an option or the disk can be wrong (one line each, no partial output)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from knnsvc.apps import stream
from knnsvc.apps.common import FAILED_STATUS, INTERRUPTED_STATUS, OK_STATUS, USAGE_STATUS
from knnsvc.conversion import accepts
from knnsvc.files import is_temporary
from knnsvc.streaming import StreamingConverter
from tests.apps.test_contract import STREAM_FAST
from tests.apps.test_convert import SR, error_lines, sung_vowel, tiny_args


@pytest.fixture
def files(tmp_path):
    paths = {"src": tmp_path / "src.wav", "ref": tmp_path / "ref.wav", "out": tmp_path / "out" / "x.wav"}
    sf.write(paths["src"], sung_vowel(0.7, 262.0, 1), SR)
    sf.write(paths["ref"], sung_vowel(1.0, 196.0, 2), SR)
    return paths


def argv(files, *extra: str, quiet: bool = True) -> list[str]:
    args = [str(files["src"]), str(files["ref"]), "-o", str(files["out"]), *tiny_args(*STREAM_FAST, *extra)]
    return args if quiet else [arg for arg in args if arg != "-q"]


def usage_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        stream.main(args)
    assert exit_info.value.code == USAGE_STATUS
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    return line


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_streams_a_file_with_a_progress_bar_and_prints_its_report(files, capsys):
    assert stream.main(argv(files, quiet=False)) == OK_STATUS
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["block_ms"] == 300.0 and report["lookahead_ms"] == 0.0 and report["blocks"] >= 2
    assert report["algorithmic_latency_ms"] == 300.0 + 0.0 + report["crossfade_ms"]
    assert re.search(r"streaming: .*/0\.7 s", captured.err)  # the bar, in seconds of input
    info = sf.info(files["out"])
    assert (info.samplerate, info.frames) == (SR, round(0.7 * SR) // 320 * 320)
    assert leftovers(files["out"].parent) == ["x.wav"]


def test_quiet_shows_no_bar(files, capsys):
    assert stream.main(argv(files)) == OK_STATUS
    assert "streaming" not in capsys.readouterr().err


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: sf.write(p, sung_vowel(0.01), SR), "too short"),
    (lambda p: sf.write(p, np.zeros(SR, np.float32), SR), "silent"),
    (lambda p: p.write_bytes(b"RIFF, but no audio"), "not a readable audio file"),
], ids=["10ms", "silent", "not-audio"])
def test_an_unusable_source_is_one_line_and_writes_nothing(files, capsys, make, problem):
    make(files["src"])
    assert stream.main(argv(files)) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert problem in line and str(files["src"]) in line
    assert leftovers(files["out"].parent) == []


def test_a_full_disk_is_one_line(files, monkeypatch, capsys):
    monkeypatch.setattr("knnsvc.audio._free_bytes", lambda folder: 1000)
    assert stream.main(argv(files)) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "not enough free disk space" in line and str(files["out"]) in line
    assert leftovers(files["out"].parent) == []


def test_a_failed_write_midway_is_one_line_and_leaves_no_partial_file(files, monkeypatch, capsys):
    from knnsvc.audio import AudioWriter

    calls = []
    original = AudioWriter.write

    def failing(self, block):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(self, block)

    monkeypatch.setattr(AudioWriter, "write", failing)
    assert stream.main(argv(files)) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "No space left on device" in line and str(files["out"]) in line
    assert leftovers(files["out"].parent) == []


def test_an_interrupt_ends_in_one_line_with_no_partial_file(files, monkeypatch, capsys):
    calls = []
    original = StreamingConverter.push

    def interrupted(self, samples):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, samples)

    monkeypatch.setattr(StreamingConverter, "push", interrupted)
    assert stream.main(argv(files)) == INTERRUPTED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "interrupted" in line and str(files["out"]) in line
    assert not any(is_temporary(p) for p in files["out"].parent.iterdir())
    assert not files["out"].exists()


@pytest.mark.parametrize(("extra", "named"), [
    (["-o", "out.txt"], "-o out.txt"),
    (["-o", "noext"], "-o noext"),
    (["--block-ms", "30"], "--block-ms"),
    (["--block-ms", "0"], "--block-ms"),
    (["--lookahead-ms", "-20"], "--lookahead-ms"),
    (["--crossfade-ms", "340"], "--crossfade-ms"),
    (["--crossfade-ms", "25"], "--crossfade-ms"),
    (["--sola-ms", "21"], "--sola-ms"),
    (["--context-s", "nan"], "--context-s"),
    (["--f0-context-s", "-1"], "--f0-context-s"),
    (["--block-seconds", "10"], "--block-seconds"),
    (["--block-seconds", "30"], "--block-seconds"),
])
def test_bad_stream_settings_are_usage_errors_before_any_model_loads(files, extra, named, monkeypatch, capsys):
    monkeypatch.setattr(stream, "load_converter", lambda args: pytest.fail("a model was loaded"))
    line = usage_error([*argv(files), *extra], capsys)
    assert named in line
    assert not files["out"].parent.exists()


@pytest.mark.parametrize("extra", [["-o", "x.wav"], ["--f0-file", "c.csv"], ["--loudness", "-20"], ["--repair-audio"],
                                   ["--overwrite"]])
def test_live_refuses_the_options_about_files(files, extra, capsys):
    line = usage_error([str(files["ref"]), "--live", *tiny_args(*extra)], capsys)
    assert extra[0] in line and "--live" in line


def test_live_without_sounddevice_is_one_line_before_any_model_loads(files, monkeypatch, capsys):
    from knnsvc.apps import common

    real = common.importlib.util.find_spec
    monkeypatch.setattr(common.importlib.util, "find_spec",
                        lambda name, *a: None if name == "sounddevice" else real(name, *a))
    monkeypatch.setattr(stream, "load_converter", lambda args: pytest.fail("a model was loaded"))
    assert stream.main([str(files["ref"]), "--live", *tiny_args()]) == FAILED_STATUS
    [line] = error_lines(capsys.readouterr().err)
    assert "pip install sounddevice" in line


def test_an_f0_curve_is_used_or_refused(files, tmp_path, capsys):
    curve = tmp_path / "curve.csv"
    curve.write_text("0,330\n0.7,330\n")
    args = argv(files, "--f0-file", str(curve), "--pitch-shift", "none")
    if not accepts(StreamingConverter, "f0_hz"):
        assert "--f0-file" in usage_error(args, capsys)
        return
    assert stream.main(args) == OK_STATUS
    with_curve = sf.read(files["out"])[0]
    os.remove(files["out"])
    assert stream.main(argv(files, "--pitch-shift", "none")) == OK_STATUS
    assert not np.array_equal(with_curve, sf.read(files["out"])[0])


def test_live_streams_the_microphone_to_the_speaker_and_watches_its_real_time_factor(files, monkeypatch, capsys):
    """--live: microphone blocks go through a live StreamingConverter (it warns when it falls behind)
    to the speaker at the stream's rate; Ctrl-C ends it with the report, exit 0."""
    import sys
    import types

    from knnsvc.apps import common

    played: list[np.ndarray] = []
    seen: dict = {}

    class Microphone:
        def __init__(self, samplerate, channels, blocksize, dtype, callback):
            seen["input_rate"], self.blocksize, self.callback = samplerate, blocksize, callback

        def __enter__(self):
            signal = np.asarray(sung_vowel(1.0, 230.0, 1), dtype=np.float32)
            for start in range(0, signal.size - self.blocksize + 1, self.blocksize):
                self.callback(signal[start:start + self.blocksize, None], self.blocksize, None, None)
            return self

        def __exit__(self, *exc):
            return False

    class Speaker(Microphone):
        def __init__(self, samplerate, channels, dtype):
            seen["output_rate"] = samplerate

        def __enter__(self):
            return self

        def write(self, samples: np.ndarray) -> None:
            played.append(samples)
            if len(played) == 4:
                raise KeyboardInterrupt

    fake = types.ModuleType("sounddevice")
    fake.InputStream, fake.OutputStream = Microphone, Speaker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    real = common.importlib.util.find_spec
    monkeypatch.setattr(common.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "sounddevice" else real(name, *a))
    push = StreamingConverter.push

    def watched(self, samples):
        seen["live"] = self.live
        return push(self, samples)

    monkeypatch.setattr(StreamingConverter, "push", watched)
    assert stream.main([str(files["ref"]), "--live", *tiny_args()]) == OK_STATUS
    assert seen == {"input_rate": SR, "output_rate": SR, "live": True}
    assert len(played) == 4 and all(block.ndim == 2 and np.abs(block).max() <= 1 for block in played)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["rtf_running"] > 0 and line["blocks"] >= 4
