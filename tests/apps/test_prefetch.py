"""A batch's look-ahead (`knnsvc.conversion.Prefetch`): while one file is vocoded the next is read and
its F0 computed; the outputs are the same with or without it, at most one file is ahead, a bad or
crashed file is one line at its turn, and Ctrl-C leaves no partial file, thread or worker process."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc import checkpoints, conversion, pitch
from knnsvc.apps import convert
from knnsvc.pipeline import KnnSvc
from tests.apps.test_convert import HARMONIC, SR, TINY_CONFIG, WAVLM, error_lines, sung_vowel, tiny_args

WAIT_S = 60.0
"""How long an instrumented step waits for the look-ahead before the test fails (never reached when it works)."""

SECONDS = (1.0, 1.2, 1.4, 1.6)
"""The batch's durations: distinct lengths tell the files apart inside the pipeline."""


def make_batch(folder: Path, seconds: tuple[float, ...] = SECONDS) -> dict[str, Path]:
    """Sources a.wav, b.wav, ... of the given durations and a 2 s reference, under `folder`."""
    paths = {"src": folder / "in", "ref": folder / "singer" / "ref.wav", "out": folder / "out"}
    paths["src"].mkdir(parents=True)
    paths["ref"].parent.mkdir(parents=True)
    for index, length in enumerate(seconds):
        sf.write(paths["src"] / f"{'abcdefgh'[index]}.wav", sung_vowel(length, 220.0 + 15 * index, seed=index), SR)
    sf.write(paths["ref"], sung_vowel(2.0, 196.0, seed=9), SR)
    return paths


def run_cli(paths: dict[str, Path], out: Path, *extra: str) -> int:
    return convert.main([str(paths["src"]), str(paths["ref"]), "-o", str(out), *tiny_args(*extra)])


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def samples_of(seconds: float) -> int:
    return round(seconds * SR)


class Recorder:
    """Events of a run in order: ("f0", file) when a source's F0 starts, ("f0 stopped", file) when it
    gave up, ("vocode", n) / ("vocoded", n) around the n-th vocoding (1-based), ("read", file) and
    ("analyse", file)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, seconds: tuple[float, ...] = SECONDS) -> None:
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.f0_started = {index: threading.Event() for index in range(1, len(seconds) + 1)}
        file_of = {samples_of(length): index for index, length in enumerate(seconds, start=1)}
        self.file_of = file_of
        recorder = self
        timed_f0, vocode_blocks, analyse = KnnSvc._timed_f0, KnnSvc.vocode_blocks, KnnSvc.analyse
        read_source = conversion.read_source

        def recorded_f0(self, wav_16k, stop):
            index = file_of.get(wav_16k.numel())
            if index is None:  # the reference
                return timed_f0(self, wav_16k, stop)
            recorder.add("f0", index)
            recorder.f0_started[index].set()
            try:
                return timed_f0(self, wav_16k, stop)
            except pitch.F0Stopped:
                recorder.add("f0 stopped", index)
                raise

        def recorded_vocode(self, result, progress=None):
            recorder.vocodings += 1
            number = recorder.vocodings
            recorder.add("vocode", number)
            recorder.before_vocode(number)
            yield from vocode_blocks(self, result, progress)
            recorder.add("vocoded", number)

        def recorded_analyse(self, wav_16k, progress=None, **kwargs):
            recorder.add("analyse", file_of.get(wav_16k.numel(), 0))
            return analyse(self, wav_16k, progress, **kwargs)

        def recorded_read(converter, source, options):
            wav_16k = read_source(converter, source, options)
            recorder.add("read", file_of.get(wav_16k.numel(), 0))
            recorder.waveforms[file_of.get(wav_16k.numel(), 0)] = weakref.ref(wav_16k)
            return wav_16k

        self.vocodings = 0
        self.waveforms: dict[int, weakref.ref] = {}
        monkeypatch.setattr(KnnSvc, "_timed_f0", recorded_f0)
        monkeypatch.setattr(KnnSvc, "vocode_blocks", recorded_vocode)
        monkeypatch.setattr(KnnSvc, "analyse", recorded_analyse)
        monkeypatch.setattr(conversion, "read_source", recorded_read)

    def add(self, what: str, index: int) -> None:
        with self.lock:
            self.events.append((what, index))

    def before_vocode(self, number: int) -> None:
        """Called as the `number`-th vocoding starts (override in a test)."""

    def position(self, event: tuple[str, int]) -> int:
        return self.events.index(event)

    def waveforms_alive(self) -> list[int]:
        """The files whose 16 kHz waveform (as read) is still held somewhere."""
        gc.collect()
        return sorted(index for index, held in self.waveforms.items() if held() is not None)


# --------------------------------------------------------------------------- same outputs
def test_analysis_with_f0_started_ahead_is_the_same(golden):
    converter = checkpoints.build_converter(WAVLM, HARMONIC, TINY_CONFIG, f0="harvest", block_seconds=1.0,
                                            progress=False, workers=1)
    wav_16k = golden["src_wav"]
    now = converter.analyse(wav_16k)
    ahead = converter.analyse(wav_16k, f0=converter.start_f0(wav_16k))
    assert torch.equal(now.f0_hz, ahead.f0_hz)
    assert torch.equal(torch.as_tensor(now.feats[:]), torch.as_tensor(ahead.feats[:]))
    assert now.energy is not None and ahead.energy is not None and torch.equal(now.energy, ahead.energy)
    bad = wav_16k.clone()
    bad[5] = float("nan")
    job = converter.start_f0(wav_16k)
    with pytest.raises(ValueError, match="NaN"):
        converter.analyse(bad, f0=job)
    assert job.stop.is_set()  # a failed analysis stops the F0 it was given


def test_outputs_are_byte_identical_with_and_without_prefetch_and_any_workers(tmp_path):
    paths = make_batch(tmp_path, SECONDS[:3])
    runs = {
        "prefetch, 1 worker": ("--workers", "1"),
        "prefetch, 2 workers": ("--workers", "2"),
        "no prefetch, 1 worker": ("--workers", "1", "--no-prefetch"),
        "no prefetch, 2 workers": ("--workers", "2", "--no-prefetch"),
    }
    written = {}
    for name, flags in runs.items():
        assert run_cli(paths, tmp_path / name, *flags) == 0, name
        written[name] = outputs(tmp_path / name)
    expected = written.pop("no prefetch, 1 worker")
    assert sorted(expected) == ["a.wav", "b.wav", "c.wav"]
    for name, files in written.items():
        assert files == expected, name


# --------------------------------------------------------------------------- it overlaps
def test_next_files_f0_runs_while_the_current_file_is_vocoded(tmp_path, monkeypatch):
    paths = make_batch(tmp_path, SECONDS[:3])
    recorder = Recorder(monkeypatch, SECONDS[:3])

    def before_vocode(number: int) -> None:
        # the next file's F0 starts while this one is vocoded: vocoding waits for it (a batch without
        # look-ahead would never start it, and the test fails after WAIT_S)
        if number < 3:
            assert recorder.f0_started[number + 1].wait(WAIT_S), f"file {number + 1}'s F0 did not start ahead"

    recorder.before_vocode = before_vocode  # type: ignore[method-assign]
    assert run_cli(paths, paths["out"], "--workers", "1") == 0
    for number in (1, 2):
        assert recorder.position(("f0", number + 1)) < recorder.position(("vocoded", number))
        assert recorder.position(("read", number + 1)) < recorder.position(("vocoded", number))
    assert sorted(outputs(paths["out"])) == ["a.wav", "b.wav", "c.wav"]


def test_without_prefetch_the_next_file_waits_for_its_turn(tmp_path, monkeypatch):
    paths = make_batch(tmp_path, SECONDS[:3])
    recorder = Recorder(monkeypatch, SECONDS[:3])
    assert run_cli(paths, paths["out"], "--workers", "1", "--no-prefetch") == 0
    for number in (1, 2):
        assert recorder.position(("read", number + 1)) > recorder.position(("vocoded", number))
        assert recorder.position(("f0", number + 1)) > recorder.position(("vocoded", number))


def test_at_most_one_file_is_ahead(tmp_path, monkeypatch):
    paths = make_batch(tmp_path)
    recorder = Recorder(monkeypatch)
    alive_while_vocoding = {}

    def before_vocode(number: int) -> None:
        alive_while_vocoding[number] = recorder.waveforms_alive()

    recorder.before_vocode = before_vocode  # type: ignore[method-assign]
    assert run_cli(paths, paths["out"], "--workers", "1") == 0
    for number, alive in alive_while_vocoding.items():
        # while a file is vocoded no waveform is held but the next one's (once read ahead): not its own
        assert set(alive) <= {number + 1}, alive_while_vocoding
    reads = [index for what, index in recorder.events if what == "read"]
    assert reads == [1, 2, 3, 4]  # each file read once, in order
    for index in reads:
        at = recorder.position(("read", index))
        analysed = sum(1 for what, file in recorder.events[:at] if what == "analyse" and file > 0)
        # when a file is read, every file read before it has been analysed: besides the file being
        # matched and vocoded, only this one is held ahead (its waveform and F0)
        assert analysed == index - 1, recorder.events


# --------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("problem", ["unreadable", "too short"])
def test_a_bad_second_file_is_one_line_at_its_turn_and_the_others_convert(tmp_path, monkeypatch, capsys, problem):
    paths = make_batch(tmp_path, SECONDS[:3])
    bad = paths["src"] / "b.wav"
    if problem == "unreadable":
        bad.write_bytes(b"RIFF....WAVEfmt not really audio")
    else:
        sf.write(bad, sung_vowel(1.0, 220.0)[:200], SR)
    errors = {}
    for name, flags in {"prefetch": (), "no prefetch": ("--no-prefetch",)}.items():
        recorder = Recorder(monkeypatch, SECONDS[:3])
        capsys.readouterr()
        assert run_cli(paths, tmp_path / name, "--workers", "1", *flags) == 1
        errors[name] = error_lines(capsys.readouterr().err)
        assert sorted(outputs(tmp_path / name)) == ["a.wav", "c.wav"], name
        assert [index for what, index in recorder.events if what == "vocoded"] == [1, 2], name
        monkeypatch.undo()
    assert errors["prefetch"] == errors["no prefetch"]  # the same line, at the same point of the batch
    assert len(errors["prefetch"]) == 2, errors  # the file's line and the closing count
    assert errors["prefetch"][0].startswith(f"ERROR: {bad}"), errors
    assert errors["prefetch"][1].startswith("ERROR: 1 problem(s); 2 of 3 file(s) converted"), errors


def test_a_files_read_warning_comes_at_its_turn(tmp_path, monkeypatch, capsys):
    paths = make_batch(tmp_path, SECONDS[:3])
    damaged = sung_vowel(SECONDS[1], 235.0, seed=1)
    damaged[100:104] = np.nan
    sf.write(paths["src"] / "b.wav", damaged, SR, subtype="FLOAT")
    recorder = Recorder(monkeypatch, SECONDS[:3])

    class Logged(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                recorder.add(record.getMessage(), 0)

    handler = Logged()
    logging.getLogger("knnsvc").addHandler(handler)
    try:
        assert run_cli(paths, paths["out"], "--workers", "1", "--repair-audio") == 0
    finally:
        logging.getLogger("knnsvc").removeHandler(handler)
    warning = f"{paths['src'] / 'b.wav'}: replaced 4 non-finite samples (NaN or inf) of 19200 by 0"
    logged = [what for what, _ in recorder.events if what.startswith(str(paths["src"]))]
    assert logged == [warning], recorder.events
    # read while a.wav was vocoded, but logged at b.wav's turn, as without look-ahead
    assert recorder.position(("read", 2)) < recorder.position(("vocoded", 1)) < recorder.position((warning, 0))
    assert sorted(outputs(paths["out"])) == ["a.wav", "b.wav", "c.wav"]


# --------------------------------------------------------------------------- workers and Ctrl-C
LONG = (1.0, 30.0, 1.2)
"""A batch whose second file's F0 is still running (6 blocks of 5 s) when the first one is vocoded."""


def busy_workers() -> list[int]:
    """Process ids of the harvest workers analysing a block now."""
    return [worker.process.pid for pool in list(pitch._POOLS.values()) for worker in list(pool._workers)
            if worker.job is not None]


def wait_for_busy_workers() -> list[int]:
    done = threading.Event()
    pids: list[int] = []
    while not done.wait(0.02):
        pids = busy_workers()
        if pids:
            done.set()
    return pids


def alive(pid: int) -> bool:
    """Whether `pid` is a process (a zombie counts: it was not reaped)."""
    return Path(f"/proc/{pid}").exists()


def prefetch_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(("knnsvc-prefetch", "knnsvc-f0"))]


def test_ctrl_c_while_the_next_file_is_ahead_ends_every_worker_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    paths = make_batch(tmp_path, LONG)
    recorder = Recorder(monkeypatch, LONG)
    seen: list[int] = []

    def before_vocode(number: int) -> None:
        assert recorder.f0_started[2].wait(WAIT_S)
        seen.extend(wait_for_busy_workers())  # the second file's blocks are being analysed
        raise KeyboardInterrupt  # Ctrl-C while the first file is vocoded

    recorder.before_vocode = before_vocode  # type: ignore[method-assign]
    assert run_cli(paths, paths["out"], "--workers", "2", "--block-seconds", "5") == 130
    assert seen, "no F0 worker was busy with the next file"
    assert ("f0 stopped", 2) in recorder.events  # the look-ahead's F0 was stopped, not finished
    assert not [pid for pid in seen if alive(pid)], "an F0 worker outlived the run"
    assert not busy_workers()
    assert prefetch_threads() == []
    assert not paths["out"].exists() or outputs(paths["out"]) == {}  # no output, no temporary
    assert error_lines(capsys.readouterr().err)[-1].startswith("ERROR: interrupted: 0 of 3 converted")


def test_a_worker_killed_during_the_look_ahead_is_one_line_and_the_batch_goes_on(tmp_path, monkeypatch, capsys):
    paths = make_batch(tmp_path, LONG)
    recorder = Recorder(monkeypatch, LONG)

    def before_vocode(number: int) -> None:
        if number == 1:
            assert recorder.f0_started[2].wait(WAIT_S)
            os.kill(wait_for_busy_workers()[0], signal.SIGKILL)  # e.g. the OS's out-of-memory killer

    recorder.before_vocode = before_vocode  # type: ignore[method-assign]
    assert run_cli(paths, paths["out"], "--workers", "2", "--block-seconds", "5") == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"ERROR: {paths['src'] / 'b.wav'}: F0 worker died (signal 9, SIGKILL)"), errors
    assert sorted(outputs(paths["out"])) == ["a.wav", "c.wav"]
    assert prefetch_threads() == []
