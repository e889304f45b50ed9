"""`knnsvc.separation` on tiny random HTDemucs models, offline: the streamed separation, the weights
file (and the tiny one shipped for the offline cover route), songs read through `knnsvc.audio`."""

from __future__ import annotations

import ast
import inspect
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("demucs_infer")

from demucs_infer.apply import apply_model  # noqa: E402
from demucs_infer.htdemucs import HTDemucs  # noqa: E402

from knnsvc import separation  # noqa: E402
from knnsvc.audio import AudioError  # noqa: E402
from knnsvc.separation import (  # noqa: E402
    HTDEMUCS_KWARGS,
    SOURCES,
    TINY_HTDEMUCS_KWARGS,
    SeparationError,
    StemWriter,
    VocalSeparator,
    load_separation_model,
    random_separation_model,
    save_tiny_separator,
    scan_song,
    song_info,
    stem_loudness,
    write_remix,
)
from tests.conftest import GOLDEN, sung_vowel  # noqa: E402

TINY_GOLDEN = GOLDEN / "htdemucs_tiny.th"

STREAM_TOLERANCE = 1e-6
"""Streamed separation vs `apply_model` on the whole signal: the same windows, weights and sums in
the same order; only float32 rounding may differ, where the convolutions see a window that is a
slice of a longer buffer (observed: 3e-8 on stems peaking at 0.19, i.e. 1.6e-7 of the peak)."""


@pytest.fixture(scope="module")
def tiny_separator(tmp_path_factory) -> Path:
    return save_tiny_separator(tmp_path_factory.mktemp("separator") / "tiny_htdemucs.th", seed=0)


# --------------------------------------------------------------------------- the model and its file
def test_release_is_the_one_demucs_infer_downloads():
    from demucs_infer.checkpoint_catalog import get_checkpoint_artifact, get_model_recipe

    [component] = get_model_recipe("htdemucs").components
    artifact = get_checkpoint_artifact(component)
    assert artifact.urls[0] == separation.HTDEMUCS_URL
    assert artifact.sha256 == separation.HTDEMUCS_SHA256
    model = HTDemucs(**HTDEMUCS_KWARGS)
    assert sum(p.numel() for p in model.parameters()) == 41_984_456  # htdemucs's size
    assert int(model.samplerate * model.segment) == 343_980  # 7.8 s windows


@pytest.mark.parametrize("window_multiple", [0.6, 1.0, 3.4])
def test_streamed_separation_equals_apply_model_on_the_whole_signal(window_multiple):
    model = random_separation_model(seed=1, **TINY_HTDEMUCS_KWARGS)
    separator = VocalSeparator(model)
    length = round(window_multiple * separator.window) + 17
    mix = torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    blocks = [mix[:, i:i + 10_007] for i in range(0, length, 10_007)]
    pieces = list(separator.stream(blocks))
    streamed = torch.cat(pieces, dim=-1)
    whole = apply_model(model, mix[None], shifts=0, split=True, overlap=0.25)[0]
    assert streamed.shape == whole.shape == (len(SOURCES), 2, length)
    assert all(p.shape[:2] == (4, 2) for p in pieces)
    assert float((streamed - whole).abs().max()) <= STREAM_TOLERANCE * float(whole.abs().max())
    if window_multiple > 1:
        assert len(pieces) > 2  # yielded as the windows finish, not at the end


def test_weights_file_loads_with_weights_only_and_other_pickles_are_refused(tiny_separator, tmp_path):
    model = load_separation_model(tiny_separator)
    assert isinstance(model, HTDemucs) and model.sources == SOURCES and not model.training
    expected = random_separation_model(seed=0, **TINY_HTDEMUCS_KWARGS).state_dict()
    assert all(torch.equal(v, expected[k].half().float()) for k, v in model.state_dict().items())

    package = torch.load(tiny_separator, weights_only=False)
    assert package["klass"] is HTDemucs and set(package) == {"klass", "args", "kwargs", "state"}
    package["extra"] = Path("anything")  # a pickled object beyond HTDemucs and Fraction
    torch.save(package, tmp_path / "extra.th")
    with pytest.raises(SeparationError, match=r"refused to load.*pathlib"):
        load_separation_model(tmp_path / "extra.th")
    torch.save({"state": {}}, tmp_path / "foreign.th")
    with pytest.raises(SeparationError, match="not an HTDemucs model"):
        load_separation_model(tmp_path / "foreign.th")
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(SeparationError, match="not a readable PyTorch checkpoint"):
        load_separation_model(tmp_path / "junk.th")


def test_tiny_file_is_pickled_under_the_released_class_name(tiny_separator):
    raw = tiny_separator.read_bytes()
    import zipfile

    with zipfile.ZipFile(tiny_separator) as archive:
        pickle_bytes = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"demucs.htdemucs" in pickle_bytes and b"demucs_infer" not in pickle_bytes
    assert HTDemucs.__module__ == "demucs_infer.htdemucs"  # the class is left as it was
    assert len(raw) < 2**20


def test_shipped_tiny_separator_is_the_seeded_one_and_runs(tmp_path):
    assert TINY_GOLDEN.stat().st_size < 2 * 2**20
    shipped = load_separation_model(TINY_GOLDEN)
    fresh = load_separation_model(save_tiny_separator(tmp_path / "again.th", seed=0))
    assert shipped.state_dict().keys() == fresh.state_dict().keys()
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in shipped.state_dict().items())
    assert shipped.segment == Fraction(1) and shipped.samplerate == 44100
    separator = VocalSeparator(shipped)
    mix = torch.randn(2, 50_000, generator=torch.Generator().manual_seed(3))
    stems = torch.cat(list(separator.stream([mix])), dim=-1)
    assert stems.shape == (4, 2, 50_000) and torch.isfinite(stems).all()


def test_cover_runs_offline_with_the_shipped_tiny_separator(tmp_path, capsys):
    from knnsvc.apps import cover
    from tests.apps.test_convert import tiny_args

    rate = 44_100
    t = np.arange(round(1.2 * rate)) / rate
    vocal = 0.5 * sung_vowel(1.2, 220.0, sample_rate=rate, seed=0).numpy()[: t.size]
    song = np.stack([vocal + 0.04 * np.sin(2 * np.pi * 110 * t), vocal], axis=1).astype(np.float32)
    sf.write(tmp_path / "song.wav", song, rate, subtype="PCM_16")
    ref = tmp_path / "ref.wav"
    sf.write(ref, sung_vowel(1.0, 196.0, seed=2).numpy(), 16_000)
    out = tmp_path / "out"
    status = cover.main([str(tmp_path / "song.wav"), str(ref), *tiny_args("-o", str(out), "--separator",
                                                                           str(TINY_GOLDEN), "--pitch-shift", "0")])
    assert status == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["vocals.wav", "accompaniment.wav", "vocals_converted.wav", "remix.wav"])
    info = sf.info(out / "remix.wav")
    assert (info.samplerate, info.channels, info.frames) == (rate, 2, len(song))


# --------------------------------------------------------------------------- songs through knnsvc.audio
def test_separation_uses_only_the_public_audio_layer():
    tree = ast.parse(inspect.getsource(separation))
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names]
    assert not [(m, n) for m, n in imported if m and m.startswith("knnsvc") and n.startswith("_")]
    assert not [m for m, _ in imported if m in ("soundfile", "soxr")]  # decoding and resampling: knnsvc.audio
    assert issubclass(StemWriter, separation.AudioWriter)


def _lying_flac(path: Path, seconds: float, rate: int = 44_100, channels: int = 2) -> np.ndarray:
    """A FLAC song whose header claims 2^36 - 1 frames (18 days); returns what it really holds."""
    rng = np.random.default_rng(0)
    sf.write(path, (0.2 * rng.standard_normal((round(seconds * rate), channels))).astype(np.float32), rate,
             subtype="PCM_16")
    held = sf.read(path, dtype="float32", always_2d=True)[0]
    raw = bytearray(path.read_bytes())
    field = int.from_bytes(raw[18:26], "big")
    raw[18:26] = (field | (2**36 - 1)).to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    return held


def test_song_header_is_checked_and_a_lying_length_is_counted(tmp_path):
    held = _lying_flac(tmp_path / "song.flac", 0.8)
    info = song_info(tmp_path / "song.flac")
    assert (info.sample_rate, info.channels, info.frames) == (44_100, 2, len(held))
    levels = scan_song(info)
    assert levels.frames == len(held)
    with pytest.raises(AudioError, match=r"longer than the limit of 0\.5 s; raise it with --max-duration"):
        song_info(tmp_path / "song.flac", max_seconds=0.5)

    forged = tmp_path / "forged.wav"
    fmt = struct.pack("<HHIIHH", 1, 2, 2_147_483_647, 0, 4, 16)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 96_000) + bytes(96_000)
    forged.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(AudioError, match="sample rate of 2147483647 Hz, outside the supported 1000-768000 Hz"):
        song_info(forged)


def test_scan_song_reports_out_of_range_and_silent_songs_in_one_wording(tmp_path):
    data = np.full((4410, 2), 0.1)
    data[5, 1] = 1e300
    sf.write(tmp_path / "huge.wav", data, 44_100, subtype="DOUBLE")
    with pytest.raises(AudioError, match=r"contains 1 samples out of range \(\|x\| up to 1e\+300\) of 8820; "
                                         "re-export it, or use --repair-audio to replace them by 0$"):
        scan_song(song_info(tmp_path / "huge.wav"))
    assert scan_song(song_info(tmp_path / "huge.wav"), nonfinite="repair").peak == pytest.approx(0.1)
    sf.write(tmp_path / "quiet.wav", np.zeros((4410, 2)), 44_100)
    with pytest.raises(AudioError, match=r"quiet\.wav: the recording is silent \(peak below -80 dBFS\)$"):
        scan_song(song_info(tmp_path / "quiet.wav"))


def test_remix_puts_a_mono_vocal_into_every_channel_at_the_songs_rate(tmp_path):
    rate = 44_100
    accompaniment = np.stack([np.full(rate, 0.25), np.full(rate, -0.25)], axis=1).astype(np.float32)
    with StemWriter(tmp_path / "accompaniment.wav", rate, 2, "FLOAT") as writer:
        writer.write(accompaniment)
    vocal = np.full(8_000, 0.5, dtype=np.float32)  # 0.5 s at 16 kHz: the rest of the second is silence
    sf.write(tmp_path / "vocal.wav", vocal, 16_000, subtype="FLOAT")
    gain = write_remix(tmp_path / "accompaniment.wav", tmp_path / "vocal.wav", tmp_path / "remix.flac")
    assert gain == 1.0
    remix, remix_rate = sf.read(tmp_path / "remix.flac", dtype="float32", always_2d=True)
    assert remix_rate == rate and remix.shape == (rate, 2)
    middle = slice(rate // 8, rate * 3 // 8)  # away from the resampler's edges
    np.testing.assert_allclose(remix[middle], accompaniment[middle] + 0.5, atol=1e-3)
    np.testing.assert_allclose(remix[-rate // 4:], accompaniment[-rate // 4:], atol=1e-3)
    import pyloudnorm

    expected = pyloudnorm.Meter(rate).integrated_loudness(remix.mean(axis=1, dtype=np.float64))
    assert abs(stem_loudness(tmp_path / "remix.flac") - expected) < 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accompaniment.wav", "remix.flac", "vocal.wav"]
