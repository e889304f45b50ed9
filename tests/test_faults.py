"""Fault injection: caches that heal, no NaN passes, interruptions that resume, small traps.

Every case here was found by a fault-injection run of the CLI (tiny models, offline); each test
failed before the fix it guards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc.apps import convert
from knnsvc.apps.common import INTERRUPTED_STATUS
from knnsvc.audio import find_audio
from knnsvc.pipeline import KnnSvc, MatchConfig
from knnsvc.pool import ReferencePool
from tests.apps.test_convert import SR, error_lines, sung_vowel, tiny_args

ROOT = Path(__file__).parents[1]


@pytest.fixture
def song(tmp_path: Path) -> dict[str, Path]:
    """A 1 s source, a reference folder of two 1 s recordings, an output path."""
    paths = {"src": tmp_path / "src.wav", "refs": tmp_path / "singer", "out": tmp_path / "out" / "x.wav"}
    sf.write(paths["src"], sung_vowel(1.0, 262.0, 1), SR)
    paths["refs"].mkdir()
    for i, f0 in enumerate((196.0, 185.0)):
        sf.write(paths["refs"] / f"take{i}.wav", sung_vowel(1.0, f0, 2 + i), SR)
    return paths


@pytest.fixture
def encodes(monkeypatch) -> list[str]:
    """Names of the reference files encoded (cache misses)."""
    names: list[str] = []
    original = KnnSvc.reference_pool

    def counting(self, wav_16k, name="", **options):
        names.append(Path(name).name)
        return original(self, wav_16k, name, **options)

    monkeypatch.setattr(KnnSvc, "reference_pool", counting)
    return names


def run_cli(paths: dict[str, Path], *extra: str, output: Path | None = None) -> int:
    return convert.main([str(paths["src"]), str(paths["refs"]), "-o", str(output or paths["out"]),
                         *tiny_args("--no-post-opt", "--overwrite", *extra)])


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("WARNING")]


# ----------------------------------------------------------------------------------- pool cache
@pytest.mark.parametrize("damage", ["garbage", "bit-flip", pytest.param("empty", marks=pytest.mark.slow),
                                    pytest.param("foreign", marks=pytest.mark.slow),
                                    pytest.param("other-version", marks=pytest.mark.slow)])
def test_a_damaged_cache_entry_is_reported_once_and_rebuilt(song, tmp_path, encodes, capsys, damage):
    cache = tmp_path / "cache"
    assert run_cli(song, "--pool-cache", str(cache)) == 0
    reference_output = sf.read(song["out"])[0]
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 2 and encodes == ["take0.wav", "take1.wav"]
    victim = entries[0]
    if damage == "empty":
        victim.write_bytes(b"")
    elif damage == "garbage":
        victim.write_bytes(os.urandom(3000))
    elif damage == "foreign":
        torch.save({"generator": {"w": torch.zeros(3)}}, victim)
    elif damage == "bit-flip":  # one flipped bit inside the feature table
        data = bytearray(victim.read_bytes())
        payload = torch.load(victim, weights_only=True)
        needle = payload["feats"][3, :4].numpy().tobytes()
        at = bytes(data).index(needle)
        data[at + 2] ^= 0x10
        victim.write_bytes(bytes(data))
    else:  # a pool file of another format version
        payload = torch.load(victim, weights_only=True)
        payload["version"] = 1
        torch.save(payload, victim)
    capsys.readouterr()
    encodes.clear()

    assert run_cli(song, "--pool-cache", str(cache)) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and error_lines(err) == []
    [warning] = warnings_in(err)
    assert "rebuilding" in warning and str(victim) in warning
    assert len(encodes) == 1  # only the damaged entry was encoded again
    assert np.array_equal(sf.read(song["out"])[0], reference_output)
    ReferencePool.load(victim)  # healed: a valid entry again

    encodes.clear()
    assert run_cli(song, "--pool-cache", str(cache)) == 0
    assert encodes == [] and warnings_in(capsys.readouterr().err) == []


def _deny_writes(monkeypatch, folder: Path) -> None:
    """Make `folder` read-only, also for a user that ignores permissions (root)."""
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return
    real_access, real_open = os.access, os.open

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if Path(path).resolve().parent == folder.resolve() and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "open", open_)


@pytest.mark.parametrize("where", ["read-only folder", "a file"])
def test_an_unusable_cache_folder_is_reported_once_and_the_run_goes_on(song, tmp_path, capsys, monkeypatch, where):
    cache = tmp_path / "cache"
    if where == "a file":
        cache.write_text("not a folder")
    else:
        cache.mkdir()
        _deny_writes(monkeypatch, cache)
    try:
        assert run_cli(song, "--pool-cache", str(cache)) == 0
    finally:
        if cache.is_dir():
            cache.chmod(0o755)
    err = capsys.readouterr().err
    [warning] = warnings_in(err)
    assert str(cache) in warning and "without caching" in warning
    assert sf.info(song["out"]).frames == 50 * 320


def test_a_bad_file_in_the_reference_folder_does_not_stop_the_others_being_cached(song, tmp_path, encodes,
                                                                                    capsys):
    cache = tmp_path / "cache"
    (song["refs"] / "broken.flac").write_bytes(b"fLaC but not really")
    assert run_cli(song, "--pool-cache", str(cache)) == 1  # the broken file is a problem, reported
    assert sorted(encodes) == ["take0.wav", "take1.wav"] and len(list(cache.glob("*.pt"))) == 2
    encodes.clear()
    assert run_cli(song, "--pool-cache", str(cache)) == 1
    assert encodes == []  # the good recordings come from the cache
    errors = error_lines(capsys.readouterr().err)
    assert sum("broken.flac" in line and "left out of the reference" in line for line in errors) == 2


# ----------------------------------------------------------------------------------- NaN / inf
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("shift", ["auto", "none"])
def test_non_finite_source_samples_are_refused_with_their_count(song, capsys, value, shift):
    wav = sung_vowel(1.0, 262.0, 1)
    wav[1000:1100] = value
    sf.write(song["src"], wav, SR, subtype="FLOAT")
    assert run_cli(song, "--pitch-shift", shift) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert str(song["src"]) in line and "100 non-finite samples" in line
    assert not song["out"].exists()


def test_non_finite_samples_can_be_repaired_on_request(song, capsys):
    wav = sung_vowel(1.0, 262.0, 1)
    wav[1000:1100] = np.nan
    sf.write(song["src"], wav, SR, subtype="FLOAT")
    assert run_cli(song, "--repair-audio") == 0
    written = sf.read(song["out"])[0]
    assert np.isfinite(written).all() and written.shape == (50 * 320,)
    assert any("100 non-finite" in line for line in warnings_in(capsys.readouterr().err))


def test_a_reference_with_non_finite_samples_never_enters_the_pool(song, tmp_path, capsys):
    cache = tmp_path / "cache"
    wav = sung_vowel(1.0, 190.0, 5)
    wav[:50] = np.inf
    sf.write(song["refs"] / "nan.wav", wav, SR, subtype="FLOAT")
    assert run_cli(song, "--pool-cache", str(cache)) == 1
    errors = error_lines(capsys.readouterr().err)
    assert any("nan.wav" in line and "non-finite" in line and "left out" in line for line in errors)
    assert len(list(cache.glob("*.pt"))) == 2
    for entry in cache.glob("*.pt"):
        assert torch.isfinite(ReferencePool.load(entry).feats).all()


def test_library_functions_refuse_non_finite_input(golden_dir):
    from hifigan.generator import load_generator
    from knnsvc.encoder import WavLMEncoder
    from wavlm import load_wavlm

    encoder = WavLMEncoder(load_wavlm(torch.load(golden_dir / "wavlm_tiny.pt", weights_only=True)))
    kind, vocoder = load_generator(torch.load(golden_dir / "vocoder_harmonic_tiny.pt", weights_only=True))
    converter = KnnSvc(encoder, vocoder, kind)
    wav = torch.from_numpy(sung_vowel(1.0))
    wav[5] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        converter.analyse(wav)
    for bad in (dict(pitch_shift=float("nan")), dict(pitch_shift="inf"), dict(pitch_shift=1000),
                dict(concat_weight=-1.0), dict(concat_weight=float("nan")), dict(index_rate=2.0)):
        with pytest.raises(ValueError):
            MatchConfig(**bad)


# ----------------------------------------------------------------------------------- interruptions
def _batch(tmp_path: Path, n_files: int) -> tuple[Path, Path]:
    sources = tmp_path / "sources"
    sources.mkdir()
    for i in range(n_files):
        sf.write(sources / f"s{i}.wav", sung_vowel(2.0, 220.0 + 10 * i, 10 + i), SR)
    ref = tmp_path / "ref.wav"
    sf.write(ref, sung_vowel(1.5, 196.0, 2), SR)
    return sources, ref


def _start(sources: Path, ref: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "knnsvc.convert", str(sources), str(ref), "-o", str(out),
               *tiny_args("--no-post-opt")]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_outputs(process: subprocess.Popen, out: Path, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("*.wav"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the conversion made no progress"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_batch_ends_in_one_line_and_a_rerun_finishes_it(tmp_path, signum):
    sources, ref = _batch(tmp_path, 6)
    out = tmp_path / "out"
    process = _start(sources, ref, out)
    _wait_for_outputs(process, out, 1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == INTERRUPTED_STATUS
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(r"ERROR: interrupted: (\d) of 6 converted; rerun to continue", last)
    assert match, err
    done = sorted(p.name for p in out.iterdir())
    assert len(done) == int(match.group(1)) and all(not name.startswith(".") for name in done)  # no temporaries

    process = _start(sources, ref, out)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert error_lines(err) == []
    assert sum("skipped" in line for line in warnings_in(err)) == len(done)
    assert sorted(p.name for p in out.iterdir()) == [f"s{i}.wav" for i in range(6)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_stream_ends_within_seconds_in_one_line_with_no_partial_file(tmp_path, signum):
    source, ref = tmp_path / "long.wav", tmp_path / "ref.wav"
    sf.write(source, sung_vowel(20.0, 220.0, 3), SR)
    sf.write(ref, sung_vowel(1.5, 196.0, 2), SR)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "knnsvc.stream", str(source), str(ref), "-o", str(out / "x.wav"),
                                *tiny_args()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.iterdir())):  # streaming has begun: the temporary output exists
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the stream made no progress"
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert process.returncode == INTERRUPTED_STATUS and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"ERROR: interrupted; {out / 'x.wav'} not written"
    assert list(out.iterdir()) == []


def test_temporary_files_are_never_taken_for_inputs(tmp_path):
    folder = tmp_path / "songs"
    folder.mkdir()
    sf.write(folder / "a.wav", sung_vowel(0.5), SR)
    (folder / ".a.wav.0f3c9e21.partial").write_bytes(b"half a file")
    (folder / ".b.tmp.wav").write_bytes(b"an older run's temporary")
    assert find_audio(folder) == [folder / "a.wav"]


def test_a_stale_temporary_in_the_output_folder_is_cleaned_up(song, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".x.wav.deadbeef.partial"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert run_cli(song, output=out / "x.wav") == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.wav"]


# ----------------------------------------------------------------------------------- small traps
@pytest.mark.parametrize("suffix", [".opus", ".aiff"])
def test_every_readable_format_is_found_in_a_folder_scan(song, tmp_path, suffix):
    sources = tmp_path / "batch"
    sources.mkdir()
    format_of = {".opus": dict(format="OGG", subtype="OPUS"), ".aiff": dict(format="AIFF")}
    sf.write(sources / f"take{suffix}", sung_vowel(1.0, 262.0, 1), SR, **format_of[suffix])
    out = tmp_path / "converted"
    assert convert.main([str(sources), str(song["refs"]), "-o", str(out), *tiny_args("--no-post-opt")]) == 0
    assert [p.name for p in out.iterdir()] == ["take.wav"]


def test_an_aiff_output_is_a_file_in_that_format(song, tmp_path):
    out = tmp_path / "out.aiff"
    assert run_cli(song, output=out) == 0
    assert out.is_file() and sf.info(out).format == "AIFF"


def test_outputs_inside_the_source_folder_are_not_converted_again(song, tmp_path):
    sources = tmp_path / "batch"
    sources.mkdir()
    sf.write(sources / "a.wav", sung_vowel(1.0, 262.0, 1), SR)
    out = sources / "converted"
    args = [str(sources), str(song["refs"]), "-o", str(out), *tiny_args("--no-post-opt")]
    assert convert.main(args) == 0
    assert convert.main(args) == 0
    assert sorted(p.relative_to(sources).as_posix() for p in sources.rglob("*.wav")) == ["a.wav", "converted/a.wav"]


def test_a_read_only_output_folder_is_found_before_the_models_load(song, tmp_path, monkeypatch, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    _deny_writes(monkeypatch, out)

    def no_models(args):
        raise AssertionError("the models were loaded although nothing can be written")

    monkeypatch.setattr(convert, "load_converter", no_models)
    try:
        assert run_cli(song, output=out / "x.wav") == 1
    finally:
        out.chmod(0o755)
    [line] = error_lines(capsys.readouterr().err)
    assert str(out) in line and "not writable" in line


# ----------------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("command", ["convert", "stream"])
def test_an_output_on_a_full_disk_is_one_line_and_leaves_nothing(song, tiny_disk, capsys, command):
    from knnsvc.apps import stream

    (tiny_disk / "filler").write_bytes(b"\0" * 40_000)  # what is left cannot hold 1 s of 32-bit audio
    out = tiny_disk / "x.wav"
    main = convert.main if command == "convert" else stream.main
    assert main([str(song["src"]), str(song["refs"]), "-o", str(out), *tiny_args("--no-post-opt")]) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert str(out) in line and "disk space" in line
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_a_pool_cache_on_a_full_disk_is_one_warning_and_the_run_goes_on(song, tiny_disk, capsys):
    (tiny_disk / "filler").write_bytes(b"\0" * 60_000)
    cache = tiny_disk / "cache"
    assert run_cli(song, "--pool-cache", str(cache)) == 0
    err = capsys.readouterr().err
    assert error_lines(err) == []
    [warning] = warnings_in(err)
    assert str(cache) in warning and "without caching" in warning
    assert sf.info(song["out"]).frames == 50 * 320
    assert not any(p.name.endswith(".partial") for p in cache.rglob("*"))
