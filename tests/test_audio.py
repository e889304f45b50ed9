import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc.audio import AudioError, find_audio, is_silent, load_audio, loudness_normalise, save_audio


def _tone(seconds, rate, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_44k_becomes_mono_16k_and_keeps_pitch(tmp_path):
    left = _tone(1.0, 44_100)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 44_100)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert abs(wav.numel() - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16_000 / wav.numel() - 440.0) < 2.0
    assert abs(float(wav.abs().max()) - 0.375) < 0.01  # mean of the channels


@pytest.mark.parametrize("suffix,fmt", [(".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3")])
def test_compressed_formats_load(tmp_path, suffix, fmt):
    path = tmp_path / f"tone{suffix}"
    sf.write(path, _tone(0.5, 22_050), 22_050, format=fmt)
    wav = load_audio(path)
    assert abs(wav.numel() - 8_000) < 1200  # mp3 adds encoder padding


def test_bad_files_give_one_line_errors(tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("hello")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16_000)
    for path, problem in [(tmp_path / "missing.wav", "file not found"), (not_audio, "not a readable audio file"), (empty, "no samples")]:
        with pytest.raises(AudioError) as err:
            load_audio(path)
        assert str(path) in str(err.value) and problem in str(err.value)
        assert "\n" not in str(err.value)


def test_save_is_atomic_peak_limited_and_round_trips(tmp_path):
    wav = torch.linspace(-2.0, 2.0, 1600)
    out = save_audio(tmp_path / "sub" / "out.wav", wav)
    data, rate = sf.read(out)
    assert rate == 16_000 and sf.info(out).subtype == "PCM_32"
    assert abs(np.abs(data).max() - 1.0) < 1e-6
    np.testing.assert_allclose(data, (wav / 2).numpy(), atol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["out.wav"]


def test_failed_save_leaves_no_file(tmp_path):
    with pytest.raises(ValueError):
        save_audio(tmp_path / "out.wav", torch.zeros(10), subtype="NOT_A_SUBTYPE")
    assert list(tmp_path.iterdir()) == []


def test_find_audio_is_recursive_sorted_and_filtered(tmp_path):
    for name in ["b/2.flac", "a/1.WAV", "c.txt", "a/0.mp3"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio(tmp_path)] == ["a/0.mp3", "a/1.WAV", "b/2.flac"]


def test_silence_and_loudness():
    assert is_silent(torch.zeros(100)) and not is_silent(torch.tensor([0.0, 0.1]))
    import pyloudnorm

    wav = torch.from_numpy(_tone(3.0, 16_000)) * 0.1
    louder = loudness_normalise(wav, -16.0)
    measured = pyloudnorm.Meter(16_000).integrated_loudness(louder.double().numpy())
    assert abs(measured + 16.0) < 0.1


def test_saved_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        out = save_audio(tmp_path / "out.flac", torch.zeros(1600))
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o644
    assert sf.info(out).format == "FLAC"
