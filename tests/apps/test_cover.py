"""`knnsvc-cover` end to end on tiny random models, offline: the outputs and every bad-input path (the
separation itself, its release and its weights file: tests/test_separation.py)."""

from __future__ import annotations

import socket
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

pytest.importorskip("demucs_infer")

from knnsvc import separation
from knnsvc.apps import cover
from knnsvc.separation import SOURCES, VocalSeparator, stem_loudness
from tests.apps.test_convert import error_lines, tiny_args
from tests.conftest import GOLDEN, sung_vowel

TINY_SEPARATOR = GOLDEN / "htdemucs_tiny.th"
"""`knnsvc.separation.save_tiny_separator(path, seed=0)`: a 28k-parameter HTDemucs with 1 s windows, the
code paths of the real one at milliseconds a window (its separation is meaningless)."""

OUTPUT_NAMES = ("vocals.wav", "accompaniment.wav", "vocals_converted.wav", "remix.wav")
COMPLETE = sorted([*OUTPUT_NAMES, cover.SONG_RECORD])
"""A finished song folder: the outputs and the record of the song they belong to."""


class StubSeparator(nn.Module):
    """A 'separator' whose vocal stem is `vocal_gain` times the mix (the rest goes to 'other')."""

    samplerate = 44100
    audio_channels = 2
    sources = SOURCES
    segment = Fraction(1)

    def __init__(self, vocal_gain: float) -> None:
        super().__init__()
        self.vocal_gain = vocal_gain

    def forward(self, mix: torch.Tensor) -> torch.Tensor:  # (B, C, W) -> (B, S, C, W)
        vocals = self.vocal_gain * mix
        return torch.stack([torch.zeros_like(mix), torch.zeros_like(mix), mix - vocals, vocals], dim=1)


@pytest.fixture
def stub(monkeypatch):
    """Use a StubSeparator (set its vocal gain with ``stub(gain)``) instead of the weights file."""

    def use(vocal_gain: float) -> None:
        monkeypatch.setattr(cover, "separator_weights", lambda path, progress: Path("stub"))
        monkeypatch.setattr(cover, "load_separation_model", lambda path, device: StubSeparator(vocal_gain))

    return use


def make_song(path: Path, seconds: float = 2.0, rate: int = 44100, channels: int = 2, gain: float = 1.0,
              seed: int = 0) -> np.ndarray:
    """A sung vowel over a bass line and noise, times `gain`, written as 16-bit PCM; returns it as
    read back, (L, C)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    vocal = 0.5 * sung_vowel(seconds, 220.0, sample_rate=rate, seed=seed).numpy()[:n]
    backing = 0.04 * np.sin(2 * np.pi * 110 * t) + 0.01 * rng.standard_normal(n)
    song = gain * np.stack([vocal + backing, vocal + 0.7 * backing][:channels], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, song, rate, subtype="PCM_16")
    return sf.read(path, dtype="float32", always_2d=True)[0]


@pytest.fixture
def ref(tmp_path) -> Path:
    """A 1 s reference singer (50 frames, above the 32 candidates)."""
    path = tmp_path / "singer" / "ref.wav"
    path.parent.mkdir()
    sf.write(path, sung_vowel(1.0, 196.0, seed=2).numpy(), 16000)
    return path


def run_cover(song: Path, ref: Path, *extra: str) -> int:
    return cover.main([str(song), str(ref), *tiny_args(*extra)])


# --------------------------------------------------------------------------- separation stage
def test_offline_download_error_is_one_line_naming_url_and_destination(tmp_path, ref, monkeypatch, capsys):
    with socket.socket() as probe:  # a local port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/955717e8-8726e21a.th"
    monkeypatch.setattr(separation, "HTDEMUCS_URL", url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    make_song(tmp_path / "song.wav", seconds=0.5)
    assert run_cover(tmp_path / "song.wav", ref, "-o", str(tmp_path / "out")) == 1
    [line] = error_lines(capsys.readouterr().err)
    destination = tmp_path / "torch" / "hub" / "checkpoints" / "955717e8-8726e21a.th"
    assert url in line and str(destination) in line and "save it there" in line and "--separator" in line
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 2), (44100, 1), (48000, 1)])
def test_cover_writes_remix_and_stems_at_the_songs_rate_and_layout(ref, tmp_path, rate, channels):
    song = make_song(tmp_path / "song.wav", seconds=1.5, rate=rate, channels=channels)
    out = tmp_path / "out"
    assert run_cover(tmp_path / "song.wav", ref, "-o", str(out), "--separator", str(TINY_SEPARATOR),
                     "--pitch-shift", "0") == 0
    assert sorted(p.name for p in out.iterdir()) == COMPLETE
    for name in ("vocals.wav", "accompaniment.wav", "remix.wav"):
        info = sf.info(out / name)
        assert (info.samplerate, info.channels, info.frames) == (rate, channels, len(song)), name
    vocals = sf.read(out / "vocals.wav", dtype="float32", always_2d=True)[0]
    accompaniment = sf.read(out / "accompaniment.wav", dtype="float32", always_2d=True)[0]
    np.testing.assert_allclose(vocals + accompaniment, song, atol=1e-6)
    assert np.abs(vocals).max() > 1e-3  # the random model still lets something through
    converted = sf.info(out / "vocals_converted.wav")
    assert (converted.samplerate, converted.channels) == (16000, 1)
    remix = sf.read(out / "remix.wav", always_2d=True)[0]
    assert np.isfinite(remix).all() and np.abs(remix).max() <= 1.0


def test_auto_octave_cover_follows_the_vocal_stems_loudness(stub, ref, tmp_path, monkeypatch):
    stub(1.0)  # vocals = the whole (voiced) song
    args = cover.build_parser().parse_args(["song.wav", "ref.wav"])
    assert args.pitch_shift == "auto-octave"  # covers keep the key; convert's default stays "auto"
    make_song(tmp_path / "song.wav", seconds=1.5, gain=0.05)  # the random vocoder's output is mostly bass:
    monkeypatch.chdir(tmp_path)  # quiet enough that its gain to the stem's loudness needs no peak limiting
    assert run_cover(Path("song.wav"), ref) == 0
    out = tmp_path / "song_cover_ref"  # the default output folder
    assert sorted(p.name for p in out.iterdir()) == COMPLETE
    stem, converted = stem_loudness(out / "vocals.wav"), stem_loudness(out / "vocals_converted.wav")
    assert -50 < stem < -30
    assert abs(converted - stem) <= 0.5


def test_skips_complete_folders_continues_partial_ones_and_overwrites_on_request(stub, ref, tmp_path, capsys):
    stub(1.0)
    make_song(tmp_path / "song.wav", seconds=1.0)
    out = tmp_path / "out"
    args = ["-o", str(out), "--pitch-shift", "0"]
    assert run_cover(tmp_path / "song.wav", ref, *args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert set(stamps) == set(COMPLETE)
    capsys.readouterr()

    assert run_cover(tmp_path / "song.wav", ref, *args) == 0  # complete: skipped
    err = capsys.readouterr().err
    assert error_lines(err) == [] and "skipped" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    (out / "remix.wav").unlink()  # an interrupted run: only the remix is made again
    assert run_cover(tmp_path / "song.wav", ref, *args, "--format", "flac") == 0
    assert sf.info(out / "remix.flac").frames == sf.info(out / "vocals.wav").frames
    assert all((out / name).stat().st_mtime_ns == stamps[name] for name in OUTPUT_NAMES[:3])

    (out / "remix.flac").unlink()
    assert run_cover(tmp_path / "song.wav", ref, *args, "--overwrite") == 0
    assert all((out / name).stat().st_mtime_ns != stamps[name] for name in OUTPUT_NAMES)
    assert sorted(p.name for p in out.iterdir()) == COMPLETE  # no temporary leftovers


def test_a_partial_folder_is_continued_only_for_the_song_it_belongs_to(stub, ref, tmp_path, capsys):
    stub(1.0)
    make_song(tmp_path / "song.wav", seconds=1.0, seed=0)
    make_song(tmp_path / "other" / "song.wav", seconds=1.0, seed=5)  # same name and size, other audio
    out = tmp_path / "out"
    args = ["-o", str(out), "--pitch-shift", "0"]
    assert run_cover(tmp_path / "song.wav", ref, *args) == 0
    (out / "remix.wav").unlink()  # interrupted before the remix
    stems = {name: (out / name).read_bytes() for name in OUTPUT_NAMES[:3]}
    capsys.readouterr()

    assert run_cover(tmp_path / "other" / "song.wav", ref, *args) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "of another song" in line and "--overwrite" in line and str(out) in line
    assert not (out / "remix.wav").exists()
    assert all((out / name).read_bytes() == data for name, data in stems.items())

    (out / cover.SONG_RECORD).unlink()  # no record: cannot tell whose stems these are
    assert run_cover(tmp_path / "song.wav", ref, *args) == 1
    assert "without a record" in error_lines(capsys.readouterr().err)[0]

    assert run_cover(tmp_path / "other" / "song.wav", ref, *args, "--overwrite") == 0  # redone for this song
    assert sorted(p.name for p in out.iterdir()) == COMPLETE
    assert (out / "vocals.wav").read_bytes() != stems["vocals.wav"]
    assert cover.song_mismatch(out, tmp_path / "other" / "song.wav") is None
    assert "of another song" in cover.song_mismatch(out, tmp_path / "song.wav")


def test_song_identity_reads_only_the_head_and_tail(tmp_path):
    big = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 3 * cover.IDENTITY_BYTES, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    before = cover.song_identity(big)
    data[cover.IDENTITY_BYTES + 5] ^= 1  # the middle: not hashed
    big.write_bytes(bytes(data))
    assert cover.song_identity(big)["head_tail_sha256"] == before["head_tail_sha256"]
    data[-1] ^= 1  # the last MiB
    big.write_bytes(bytes(data))
    assert cover.song_identity(big)["head_tail_sha256"] != before["head_tail_sha256"]


# --------------------------------------------------------------------------- bad input
def test_song_without_vocals_is_one_line(stub, ref, tmp_path, capsys):
    stub(0.0)  # the separated vocal stem is silent
    make_song(tmp_path / "song.wav", seconds=1.0)
    assert run_cover(tmp_path / "song.wav", ref, "-o", str(tmp_path / "out")) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"ERROR: {tmp_path / 'song.wav'}: no vocals found") and "LUFS" in line
    assert not (tmp_path / "out" / "vocals_converted.wav").exists()

    stub(1.0)  # loud enough, but the converter finds not one voiced frame (an all-unvoiced F0 curve)
    (tmp_path / "unvoiced.csv").write_text("0,0\n1,0\n")
    assert run_cover(tmp_path / "song.wav", ref, "-o", str(tmp_path / "out2"), "--f0-file",
                     str(tmp_path / "unvoiced.csv")) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"ERROR: {tmp_path / 'song.wav'}: no vocals found") and "voiced" in line


def test_folder_of_songs_goes_on_after_bad_ones(stub, ref, tmp_path, capsys):
    stub(1.0)
    songs = tmp_path / "songs"
    make_song(songs / "a.wav", seconds=1.0)
    make_song(songs / "sub" / "b.flac", seconds=1.0, rate=48000, channels=1)
    sf.write(songs / "silent.wav", np.zeros((22050, 2), dtype=np.float32), 44100)
    sf.write(songs / "surround.wav", np.full((22050, 3), 0.1, dtype=np.float32), 44100)
    (songs / "notaudio.wav").write_bytes(b"RIFF nonsense")
    out = tmp_path / "covers"
    assert run_cover(songs, ref, "-o", str(out), "--pitch-shift", "0") == 1
    lines = error_lines(capsys.readouterr().err)
    problems = {name: [line for line in lines if f"{name}.wav:" in line] for name in ("notaudio", "silent", "surround")}
    assert all(len(found) == 1 for found in problems.values()), lines
    assert "silent" in problems["silent"][0] and "3 channels" in problems["surround"][0]
    assert sorted(p.name for p in (out / "a").iterdir()) == COMPLETE
    assert sf.info(out / "sub" / "b" / "remix.wav").samplerate == 48000


def test_outputs_that_would_not_fit_are_refused_before_any_work(stub, ref, tmp_path, monkeypatch, capsys):
    stub(1.0)
    make_song(tmp_path / "song.wav", seconds=1.0)
    monkeypatch.setattr("knnsvc.audio._free_bytes", lambda folder: 1000)
    monkeypatch.setattr(cover, "scan_song", lambda *a: pytest.fail("the song was read before the disk check"))
    assert run_cover(tmp_path / "song.wav", ref, "-o", str(tmp_path / "out")) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "not enough free disk space" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_interrupt_leaves_no_partial_files(stub, ref, tmp_path, monkeypatch, capsys):
    stub(1.0)
    make_song(tmp_path / "song.wav", seconds=3.0)
    calls = []

    def interrupted(self, window):
        calls.append(1)
        if len(calls) == 2:  # mid-song, with both stems half written
            raise KeyboardInterrupt
        return self.model(window[None])[0]

    monkeypatch.setattr(VocalSeparator, "_run", interrupted)
    assert run_cover(tmp_path / "song.wav", ref, "-o", str(tmp_path / "out")) == 130  # the documented exit status
    [line] = error_lines(capsys.readouterr().err)
    assert "interrupted" in line and "rerun" in line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
