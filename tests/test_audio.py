import errno
import logging
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knnsvc import audio
from knnsvc.audio import (
    AUDIO_SUFFIXES,
    OUTPUT_SUFFIXES,
    AudioError,
    AudioWriter,
    LoudnessMeter,
    check_disk_space,
    check_finite,
    find_audio,
    is_silent,
    load_audio,
    loudness_normalise,
    output_bytes,
    peak_limit,
    save_audio,
)
from knnsvc.files import TEMP_SUFFIX, is_temporary


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
    cases = [(tmp_path / "missing.wav", "file not found"), (not_audio, "not a readable audio file"),
             (empty, "no samples")]
    for path, problem in cases:
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


# --- blocked loading -------------------------------------------------------------------------

def _one_shot(path, sample_rate=16_000):
    """What load_audio computed before it read in blocks: the whole file, mixed, resampled."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate, quality="VHQ")


@pytest.mark.parametrize("rate,channels", [(16_000, 1), (44_100, 2), (48_000, 1), (48_000, 2)])
@pytest.mark.parametrize("block_seconds", [audio.BLOCK_SECONDS, 0.37])
def test_blocked_loading_equals_one_shot(tmp_path, monkeypatch, rate, channels, block_seconds):
    rng = np.random.default_rng(rate + channels)
    seconds = 4.6  # longer than the default block: at least two blocks either way
    data = (0.3 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, data, rate, subtype="PCM_24")
    monkeypatch.setattr(audio, "BLOCK_SECONDS", block_seconds)
    wav = load_audio(path)
    expected = _one_shot(path)
    assert wav.dtype == torch.float32 and wav.numel() == expected.size
    np.testing.assert_array_equal(wav.numpy(), expected)  # bit for bit, length included


def test_loading_grows_its_buffer_when_the_header_has_no_length(tmp_path, monkeypatch):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(2.0, 44_100), 44_100)
    expected = soxr.resample(sf.read(path, dtype="float32")[0], 44_100, 16_000, quality="VHQ")
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.25)
    monkeypatch.setattr(sf.SoundFile, "frames", property(lambda self: 0))
    np.testing.assert_array_equal(load_audio(path).numpy(), expected)


# --- non-finite samples ----------------------------------------------------------------------

def _damaged_file(tmp_path):
    data = np.stack([_tone(1.0, 44_100), _tone(1.0, 44_100, 220.0)], axis=1)
    data[100, 0] = np.nan
    data[200, 1] = np.inf
    data[30_000, :] = -np.inf
    path = tmp_path / "damaged.wav"
    sf.write(path, data, 44_100, subtype="FLOAT")
    return path, data


def test_nonfinite_samples_are_rejected_with_their_count(tmp_path):
    path, _ = _damaged_file(tmp_path)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    message = str(err.value)
    assert str(path) in message and "contains 4 non-finite samples (NaN or inf)" in message
    assert "\n" not in message


def test_nonfinite_samples_can_be_repaired_with_one_warning(tmp_path, caplog):
    path, data = _damaged_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="knnsvc.audio"):
        wav = load_audio(path, nonfinite="repair")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert str(path) in caplog.text and "4 non-finite samples" in caplog.text
    repaired = np.where(np.isfinite(data), data, 0.0).mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(wav.numpy(), soxr.resample(repaired, 44_100, 16_000, quality="VHQ"))
    with pytest.raises(ValueError, match="nonfinite"):
        load_audio(path, nonfinite="ignore")


def test_check_finite_names_what_and_counts():
    check_finite(torch.zeros(4), "source")
    check_finite(np.zeros(4), "source")
    with pytest.raises(ValueError, match=r"^vocoder output: 2 non-finite samples \(NaN or inf\) of 4$"):
        check_finite(torch.tensor([0.0, float("nan"), float("inf"), 1.0]), "vocoder output")
    with pytest.raises(ValueError, match=r"^f0: 1 non-finite"):
        check_finite(np.array([np.nan, 1.0]), "f0")


def test_check_finite_counts_across_its_slices():
    """`check_finite` counts `FINITE_CHECK_ROWS` rows at a time: every NaN and inf is counted,
    on both sides of a slice boundary, in tensors, arrays and multichannel (frames, channels) blocks."""
    rows = audio.FINITE_CHECK_ROWS
    wav = torch.zeros(2 * rows + 3)
    wav[[0, rows - 1, rows, 2 * rows + 2]] = torch.tensor([float("nan"), float("inf"), float("-inf"), float("nan")])
    with pytest.raises(ValueError, match=rf"^source: 4 non-finite samples \(NaN or inf\) of {2 * rows + 3}$"):
        check_finite(wav, "source")
    with pytest.raises(ValueError, match=rf"^source: 4 non-finite samples \(NaN or inf\) of {2 * rows + 3}$"):
        check_finite(wav.numpy(), "source")
    frames = np.zeros((rows + 2, 2), dtype=np.float32)
    frames[rows - 1, 1] = frames[rows, 0] = frames[rows + 1] = np.inf
    with pytest.raises(ValueError, match=rf"^block: 4 non-finite samples \(NaN or inf\) of {2 * rows + 4}$"):
        check_finite(frames, "block")
    with pytest.raises(ValueError, match=rf"^block: 4 non-finite samples \(NaN or inf\) of {2 * rows + 4}$"):
        check_finite(torch.from_numpy(frames), "block")
    check_finite(torch.tensor(0.5), "scalar")
    with pytest.raises(ValueError, match=r"^scalar: 1 non-finite samples \(NaN or inf\) of 1$"):
        check_finite(np.float32(np.nan), "scalar")


@pytest.mark.parametrize("values", [[-3.0, 1.5, 0.0], [0.2, -2.5, 2.5], [-0.5, 0.75], [1e-5, -1e-5], [-1e-3, 1e-5],
                                    [0.0, float("nan"), 4.0], [float("-inf"), 0.5]])
def test_peak_from_min_and_max_is_the_largest_magnitude(values):
    """`is_silent` and `peak_limit` take the peak as max(-min, max): the same answers as the
    largest magnitude of the whole waveform, a negative peak included."""
    wav = torch.tensor(values)
    peak = float(wav.abs().max())
    assert is_silent(wav) == (peak < audio.SILENCE_PEAK)
    limited = peak_limit(wav)
    expected = wav / peak if peak > 1.0 else wav
    assert torch.equal(limited.isnan(), expected.isnan())
    assert torch.equal(limited.nan_to_num(), expected.nan_to_num())
    assert peak_limit(torch.zeros(0)).shape == (0,) and is_silent(torch.zeros(0))


# --- formats ---------------------------------------------------------------------------------

_EXPECTED_FORMATS = {
    ".wav": ("WAV", "PCM_32"), ".flac": ("FLAC", "PCM_24"), ".aiff": ("AIFF", "PCM_24"),
    ".aif": ("AIFF", "PCM_24"), ".ogg": ("OGG", "VORBIS"), ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


def test_this_machine_reads_and_writes_every_listed_suffix():
    assert set(AUDIO_SUFFIXES) == set(OUTPUT_SUFFIXES) == set(_EXPECTED_FORMATS)


@pytest.mark.parametrize("suffix", OUTPUT_SUFFIXES)
def test_every_suffix_round_trips(tmp_path, suffix):
    t = np.arange(16_000) / 16_000
    wav = torch.from_numpy((0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t)).astype(np.float32))
    out = save_audio(tmp_path / f"tone{suffix.upper()}", wav)
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate) == (*_EXPECTED_FORMATS[suffix], 16_000)
    assert find_audio(tmp_path) == [out]
    assert out.stat().st_size <= output_bytes(wav.numel(), out)
    back = load_audio(out)
    assert back.numel() == wav.numel()
    if info.subtype.startswith("PCM"):
        np.testing.assert_allclose(back.numpy(), wav.numpy(), atol=2.0**-22)
    else:  # lossy: same tone at the same level
        spectrum = np.abs(np.fft.rfft(back.numpy()))
        assert np.argmax(spectrum) * 16_000 / back.numel() == 440.0
        assert abs(float(back.pow(2).mean().sqrt() / wav.pow(2).mean().sqrt()) - 1.0) < 0.02


def test_formats_that_cannot_be_written_are_refused_before_any_file_exists(tmp_path):
    with pytest.raises(AudioError, match="cannot write OGG OPUS at 44100 Hz .*8000, 12000, 16000, 24000"):
        AudioWriter(tmp_path / "out.opus", sample_rate=44_100)
    with pytest.raises(AudioError, match=r"cannot write '\.xyz' files \(writable: \.wav, \.flac"):
        save_audio(tmp_path / "out.xyz", torch.zeros(10))
    with pytest.raises(AudioError, match="FLAC files cannot hold subtype 'FLOAT'"):
        AudioWriter(tmp_path / "out.flac", subtype="float")
    assert list(tmp_path.iterdir()) == []


# --- folder scans ----------------------------------------------------------------------------

def test_find_audio_skips_hidden_temporary_and_excluded_files(tmp_path):
    names = ["a.wav", "sub/b.OPUS", "sub/c.aif", ".hidden.wav", ".cache/d.wav", "out/e.wav", "out/deep/f.flac",
             "sub/.g.wav.1234abcd.tmp.wav", "notes.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with AudioWriter(tmp_path / "sub" / "h.wav") as writer:
        writer.write(np.zeros(10, dtype=np.float32))
        (temporary,) = [p for p in (tmp_path / "sub").iterdir() if is_temporary(p)]
        assert temporary.name.startswith(".h.wav.") and temporary.name.endswith(TEMP_SUFFIX)
        found = find_audio(tmp_path, exclude=[tmp_path / "sub" / ".." / "out"])  # excluded: another spelling
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.wav", "sub/b.OPUS", "sub/c.aif"]
    assert "out/e.wav" in [p.relative_to(tmp_path).as_posix() for p in find_audio(tmp_path)]
    assert find_audio(tmp_path / "out", exclude=[tmp_path / "out"]) == []


# --- the incremental writer ------------------------------------------------------------------

def _song(seconds, rate=16_000, seed=0):
    """Phrases of a harmonic tone with pauses: something with gated and ungated blocks."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * 220 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.3) * (0.2 + 0.15 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * tone * envelope).astype(np.float32)


def _blocks(wav, sizes):
    cuts = np.cumsum(sizes)
    return np.split(wav, cuts[cuts < wav.size])


def test_writer_writes_blocks_in_order(tmp_path):
    wav = _song(3.0)
    out = tmp_path / "out.wav"
    with AudioWriter(out) as writer:
        for block in _blocks(wav, [1, 999, 16_000, 7]):
            writer.write(torch.from_numpy(block))
        assert not out.exists()
    assert writer.samples_written == wav.size
    data, rate = sf.read(out, dtype="float32")
    assert rate == 16_000 and sf.info(out).subtype == "PCM_32"
    np.testing.assert_allclose(data, wav, atol=2.0**-30)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


@pytest.mark.parametrize("loudness", [None, -16.0])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_writer_leaves_nothing_on_any_exception(tmp_path, loudness, error):
    out = tmp_path / "out.flac"
    with pytest.raises(error):
        with AudioWriter(out, loudness_lufs=loudness) as writer:
            writer.write(_song(1.0))
            assert any(is_temporary(p) for p in tmp_path.iterdir())
            raise error()
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous")
    with pytest.raises(error):
        with AudioWriter(out, loudness_lufs=loudness) as writer:
            writer.write(_song(1.0))
            raise error()
    assert [p.name for p in tmp_path.iterdir()] == ["out.flac"] and out.read_bytes() == b"previous"


def test_writer_refuses_nonfinite_blocks(tmp_path):
    with pytest.raises(ValueError, match=r"out\.wav: block at sample 10: 1 non-finite samples"):
        with AudioWriter(tmp_path / "out.wav") as writer:
            writer.write(np.zeros(10, dtype=np.float32))
            writer.write(np.array([0.0, np.nan], dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_writer_clips_and_reports_it_once(tmp_path, caplog):
    out = tmp_path / "out.wav"
    with caplog.at_level(logging.WARNING, logger="knnsvc.audio"):
        with AudioWriter(out) as writer:
            writer.write(np.array([0.5, 1.5, -0.25], dtype=np.float32))
            writer.write(torch.tensor([-2.0, 1.0, 0.0]))
    np.testing.assert_allclose(sf.read(out)[0], [0.5, 1.0, -0.25, -1.0, 1.0, 0.0], atol=1e-9)
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING
    assert str(out) in caplog.text and "2 of 6 samples" in caplog.text and "2.000" in caplog.text


def test_full_disk_gives_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sf.SoundFile, "write", no_space)
    with pytest.raises(AudioError) as err:
        with AudioWriter(tmp_path / "out.wav") as writer:
            writer.write(_song(0.5))
    assert str(err.value) == f"{tmp_path / 'out.wav'}: no space left on the device; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_full_disk_seen_by_libsndfile_while_normalising(tmp_path, monkeypatch):
    """libsndfile reports a failed write() as a bare system error: the free space tells."""
    def system_error(self, data):
        raise sf.LibsndfileError(2)

    monkeypatch.setattr(sf.SoundFile, "write", system_error)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(AudioError, match="no space left on the device"):
        with AudioWriter(tmp_path / "out.wav", loudness_lufs=-16.0) as writer:
            writer.write(_song(1.0))
    assert list(tmp_path.iterdir()) == []


def test_disk_space_pre_check(tmp_path, monkeypatch):
    assert output_bytes(16_000, tmp_path / "x.wav") == 4 * 16_000 + 64 * 1024
    assert output_bytes(16_000, tmp_path / "x.wav", loudness=True) == 8 * 16_000 + 64 * 1024
    assert output_bytes(16_000, tmp_path / "x.flac") == 3 * 16_000 + 64 * 1024
    assert output_bytes(16_000 * 60, tmp_path / "x.ogg") == 128_000 // 8 * 60 + 64 * 1024
    check_disk_space(tmp_path / "new" / "folder" / "x.wav", 1024)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(AudioError, match=r"x\.wav: not enough free disk space: about 2\.0 MiB needed, 1\.0 MiB free$"):
        check_disk_space(tmp_path / "x.wav", 2**21)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_writer_reaches_the_loudness_target_in_blocks(tmp_path, suffix):
    import pyloudnorm

    wav = 0.1 * _song(4.0)
    out = tmp_path / f"out{suffix}"
    with AudioWriter(out, loudness_lufs=-16.0) as writer:
        for block in _blocks(wav, [3_000] * 100):
            writer.write(block)
    data, _ = sf.read(out)
    assert abs(pyloudnorm.Meter(16_000).integrated_loudness(data) + 16.0) < 0.1
    assert np.abs(data).max() <= 1.0
    expected = peak_limit(loudness_normalise(torch.from_numpy(wav), -16.0)).numpy()
    np.testing.assert_allclose(data, expected, atol=2.0**-22)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_writer_limits_the_peak_when_the_gain_would_clip(tmp_path):
    import pyloudnorm

    wav = _song(3.0)
    wav[8_000] = 0.99  # a transient that -6 LUFS would push far above full scale
    out = tmp_path / "out.wav"
    with AudioWriter(out, loudness_lufs=-6.0) as writer:
        writer.write(wav)
    data, _ = sf.read(out)
    assert abs(np.abs(data).max() - 1.0) < 1e-9 and np.argmax(np.abs(data)) == 8_000
    np.testing.assert_allclose(data, wav / 0.99, atol=2.0**-22)
    assert pyloudnorm.Meter(16_000).integrated_loudness(data) < -6.0


# --- loudness --------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [16_000, 44_100])
@pytest.mark.parametrize("seconds", [0.4, 1.06, 3.37])
def test_meter_equals_pyloudnorm_for_any_split(rate, seconds):
    import pyloudnorm

    rng = np.random.default_rng(int(seconds * 100))
    n = int(seconds * rate)
    wav = rng.standard_normal(n) * np.linspace(0.01, 0.5, n) * (np.arange(n) % (rate // 2) > rate // 8)
    expected = pyloudnorm.Meter(rate).integrated_loudness(wav)
    splits = [[n], [1000] * n, [1, 2, 3, 6399] * n, np.diff(np.sort(rng.integers(0, n, 40)), prepend=0)]
    for sizes in splits:
        meter = LoudnessMeter(rate)
        for block in _blocks(wav, sizes):
            meter.add(block)
        assert meter.num_samples == n
        assert abs(meter.integrated_lufs() - expected) < 1e-6


def test_meter_gives_minus_infinity_for_silent_or_too_short_audio():
    import pyloudnorm

    meter = LoudnessMeter(16_000)
    meter.add(np.zeros(16_000))
    assert meter.integrated_lufs() == -np.inf == pyloudnorm.Meter(16_000).integrated_loudness(np.zeros(16_000))
    short = LoudnessMeter(16_000)
    short.add(torch.from_numpy(_tone(0.39, 16_000)))
    assert short.integrated_lufs() == -np.inf


def test_too_short_audio_keeps_its_level_with_a_warning(caplog):
    wav = torch.from_numpy(_tone(0.3, 16_000))
    with caplog.at_level(logging.WARNING, logger="knnsvc.audio"):
        assert loudness_normalise(wav, -16.0) is wav
    assert "too short to measure loudness" in caplog.text
    assert loudness_normalise(torch.zeros(16_000), -16.0).abs().max() == 0


# --- headers checked before anything is allocated ------------------------------------------------

def _wav_bytes(rate, channels, bits, tag, data_claim, body):
    """A WAV file with the header fields as given (however absurd) and `body` as its data."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate & 0xFFFFFFFF, (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_claim) + body
    return b"RIFF" + struct.pack("<I", len(riff)) + riff


def _extended(rate):
    """`rate` as the 80-bit IEEE extended float of an AIFF header."""
    if rate == 0:
        return bytes(10)
    exponent = rate.bit_length() - 1
    return struct.pack(">HQ", 16383 + exponent, rate << (63 - exponent))


def _aiff_bytes(rate, channels, bits, frames_claim, body):
    comm = struct.pack(">hIh", channels, frames_claim, bits) + _extended(rate)
    ssnd = struct.pack(">II", 0, 0) + body
    form = b"AIFF" + b"COMM" + struct.pack(">I", len(comm)) + comm + b"SSND" + struct.pack(">I", len(ssnd)) + ssnd
    return b"FORM" + struct.pack(">I", len(form)) + form


def _peak_bytes(function, *args, **kwargs):
    """(result or the exception raised, peak bytes traced by tracemalloc while `function` ran)."""
    tracemalloc.start()
    try:
        try:
            result = function(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - returned for the caller to check
            result = err
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("rate", [2_147_483_647, 1, 999, 768_001])
def test_a_header_rate_outside_the_supported_range_is_one_line_and_allocates_nothing(tmp_path, rate):
    path = tmp_path / "forged.wav"
    path.write_bytes(_wav_bytes(rate, 1, 16, 1, 96_000, bytes(96_000)))  # 96 KB
    err, peak = _peak_bytes(load_audio, path)
    assert isinstance(err, AudioError), err
    assert str(err) == (f"{path}: the header gives a sample rate of {rate} Hz, outside the supported "
                        "1000-768000 Hz (a damaged file?)")
    assert peak < 2**20


@pytest.mark.parametrize("rate", [audio.MIN_SAMPLE_RATE, audio.MAX_SAMPLE_RATE])
def test_the_ends_of_the_supported_rate_range_load(tmp_path, rate):
    path = tmp_path / "edge.wav"
    sf.write(path, _tone(0.25, rate, 100.0), rate)
    np.testing.assert_array_equal(load_audio(path).numpy(), _one_shot(path))


def _lying_flac(tmp_path, frames_claim, seconds=0.7, rate=44_100):
    """A FLAC file whose STREAMINFO claims `frames_claim` frames (36 bits; 0 = unknown, as streamed)."""
    rng = np.random.default_rng(1)
    data = (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
    path = tmp_path / "lying.flac"
    sf.write(path, data, rate, subtype="PCM_16")
    truth = tmp_path / "truth.wav"
    sf.write(truth, sf.read(path, dtype="float32")[0], rate, subtype="FLOAT")  # what the FLAC holds
    raw = bytearray(path.read_bytes())
    field = int.from_bytes(raw[18:26], "big")  # STREAMINFO: ... sample rate, channels, bits, 36-bit total
    raw[18:26] = ((field & ~(2**36 - 1)) | frames_claim).to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    return path, truth


@pytest.mark.parametrize("frames_claim", [2**36 - 1, 0])
def test_a_flac_header_is_not_trusted_the_file_is_decoded_to_its_real_end(tmp_path, monkeypatch, frames_claim):
    path, truth = _lying_flac(tmp_path, frames_claim)
    assert sf.info(path).frames > 2**35  # what the header makes libsndfile believe
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.3)  # several blocks, the last one short
    wav, peak = _peak_bytes(load_audio, path)
    np.testing.assert_array_equal(wav.numpy(), _one_shot(truth))  # all of it, bit for bit
    assert peak < 4 * 2**20  # not the 100 GiB the header asks for


def test_a_header_claiming_many_channels_gets_blocks_the_file_can_fill(tmp_path):
    path = tmp_path / "many.wav"
    path.write_bytes(_wav_bytes(768_000, 1000, 32, 3, 4000, np.full(1000, 0.25, "<f4").tobytes()))
    with audio.AudioReader(path) as reader:
        assert reader.channels == 1000 and reader.frames == 1
        assert reader.block_frames * reader.channels * 4 <= path.stat().st_size + 4000
        assert [b.shape for b in reader.blocks()] == [(1, 1000)]
    assert load_audio(path, sample_rate=768_000).tolist() == [0.25]


def test_duration_cap_from_a_pcm_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(3 * 8000, np.float32) + 0.1, 8000, subtype="PCM_16")
    monkeypatch.setattr(audio.AudioReader, "blocks", lambda self: pytest.fail("decoded past the header"))
    with pytest.raises(AudioError) as err:
        load_audio(path, max_seconds=2.5)
    assert str(err.value) == (f"{path}: 3.0 s long, longer than the limit of 2.5 s; raise it with "
                              "--max-duration")


def test_duration_cap_stops_decoding_a_compressed_file(tmp_path, monkeypatch):
    path, truth = _lying_flac(tmp_path, 0, seconds=3.0)  # no length in the header, as a streamed FLAC
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.25)
    read = []
    real_blocks = audio.AudioReader.blocks

    def counted(self):
        for block in real_blocks(self):
            read.append(len(block))
            yield block

    monkeypatch.setattr(audio.AudioReader, "blocks", counted)
    with pytest.raises(AudioError, match=r"lying\.flac: at least 1\.\d s long, longer than the limit of 1 s; "
                                         "raise it with --max-duration$"):
        load_audio(path, max_seconds=1.0)
    assert 44_100 <= sum(read) < 44_100 + 0.25 * 44_100 + 1  # stopped within one block of the cap
    read.clear()
    assert load_audio(path, max_seconds=None).numel() == _one_shot(truth).size  # the cap lifted
    assert load_audio(path).numel() == _one_shot(truth).size  # the default cap: 4 hours
    assert audio.MAX_SECONDS == 4 * 3600
    with pytest.raises(ValueError, match="max_seconds must be a positive number"):
        load_audio(path, max_seconds=0)


def test_float64_samples_beyond_float32_are_reported_as_out_of_range(tmp_path, caplog):
    data = _tone(0.5, 16_000).astype(np.float64)
    data[[10, 20]] = [1e300, -3e200]
    path = tmp_path / "huge.wav"
    sf.write(path, data, 16_000, subtype="DOUBLE")
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(err.value) == (f"{path}: contains 2 samples out of range (|x| up to 1e+300) of 8000; re-export "
                              "it, or load it with nonfinite='repair' to replace them by 0")
    with caplog.at_level(logging.WARNING, logger="knnsvc.audio"):
        wav = load_audio(path, nonfinite="repair")
    assert [r.getMessage() for r in caplog.records] == [f"{path}: replaced 2 samples out of range (|x| up to "
                                                         "1e+300) of 8000 by 0"]
    expected = np.where(np.abs(data) > 1e38, 0.0, data).astype(np.float32)
    np.testing.assert_array_equal(wav.numpy(), expected)


_SUBTYPES = {  # WAV format tag, bits per sample
    "PCM_U8": (1, 8), "PCM_16": (1, 16), "PCM_24": (1, 24), "PCM_32": (1, 32), "FLOAT": (3, 32),
    "DOUBLE": (3, 64), "ALAW": (6, 8), "ULAW": (7, 8),
}
_RATES = st.one_of(st.sampled_from([1, 999, 1000, 8000, 16_000, 44_100, 768_000, 768_001]), st.integers(0, 2**32 - 1))
_CHANNELS = st.one_of(st.integers(1, 4), st.integers(0, 1100))
_CLAIMS = st.one_of(st.none(), st.integers(0, 2**32 - 1))  # None: the body's true length


def _expected_or_none(path, sample_rate):
    """What the file holds, decoded by soundfile in one piece and resampled in one call, or None when
    it must be refused (unreadable, rate out of range, non-finite or out-of-range samples)."""
    try:
        info = sf.info(path)
        if not audio.MIN_SAMPLE_RATE <= info.samplerate <= audio.MAX_SAMPLE_RATE:
            return None
        dtype = "float64" if info.subtype == "DOUBLE" else "float32"
        data, rate = sf.read(path, dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    if data.size == 0 or not np.isfinite(data).all() or np.abs(data).max() > np.finfo(np.float32).max:
        return None
    mono = data.astype(np.float32).mean(axis=1)
    return mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate, quality="VHQ")


def _check_header_property(path, body_size):
    wav, peak = _peak_bytes(load_audio, path)
    if isinstance(wav, Exception):
        assert isinstance(wav, AudioError), repr(wav)  # one clear line, never MemoryError or another error
        assert "\n" not in str(wav) and str(path) in str(wav)
    expected = _expected_or_none(path, 16_000)
    if expected is None:
        assert isinstance(wav, AudioError)
    elif not isinstance(wav, AudioError):
        np.testing.assert_array_equal(wav.numpy(), expected)
    # Memory: at most 16 output samples a frame (1 kHz -> 16 kHz) of float32 for the frames the body can
    # hold, the blocks and the resampler's buffers; never what the header alone would ask for.
    size = path.stat().st_size
    assert peak <= 200 * size + 2 * 2**20, (peak, size)


@given(rate=_RATES, channels=_CHANNELS, subtype=st.sampled_from(sorted(_SUBTYPES)), data_claim=_CLAIMS,
       body=st.binary(max_size=3000))
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_wav_header_gives_its_audio_or_one_audio_error(tmp_path, rate, channels, subtype, data_claim, body):
    tag, bits = _SUBTYPES[subtype]
    path = tmp_path / "random.wav"
    claim = len(body) if data_claim is None else data_claim
    path.write_bytes(_wav_bytes(rate, channels, bits, tag, claim, body))
    _check_header_property(path, len(body))


@given(rate=_RATES, channels=_CHANNELS, bits=st.sampled_from([8, 16, 24, 32]), frames_claim=_CLAIMS,
       body=st.binary(max_size=3000))
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_aiff_header_gives_its_audio_or_one_audio_error(tmp_path, rate, channels, bits, frames_claim, body):
    path = tmp_path / "random.aiff"
    claim = len(body) // max(1, channels * bits // 8) if frames_claim is None else frames_claim
    path.write_bytes(_aiff_bytes(rate, channels, bits, claim, body))
    _check_header_property(path, len(body))


# --- one audio layer: C channels -----------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 2])
def test_streamed_resampler_equals_one_shot_for_c_channels(channels):
    rng = np.random.default_rng(channels)
    data = (0.3 * rng.standard_normal((44_100, channels))).astype(np.float32)
    resampler = audio.Resampler(44_100, 16_000, channels)
    out = np.concatenate([resampler(data[i:i + 7_001]) for i in range(0, len(data), 7_001)] + [resampler.flush()])
    np.testing.assert_array_equal(out, soxr.resample(data, 44_100, 16_000, quality="VHQ"))
    same = audio.Resampler(16_000, 16_000, channels)
    assert same(data[:10]) is not None and np.array_equal(same(data[:10]), data[:10]) and len(same.flush()) == 0


def test_reader_blocks_are_the_files_frames_in_order(tmp_path, monkeypatch):
    data = (0.1 * np.arange(2 * 5_000).reshape(5_000, 2) / 5_000).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, data, 8_000, subtype="FLOAT")
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.25)
    with audio.AudioReader(path) as reader:
        blocks = list(reader.blocks())
    assert [len(b) for b in blocks] == [2_000, 2_000, 1_000] and reader.frames_read == 5_000
    np.testing.assert_array_equal(np.concatenate(blocks), data)
    assert blocks[0].base is not blocks[1].base  # fresh arrays: a caller may keep them


def test_multichannel_writer_round_trips_and_leaves_nothing_on_error(tmp_path):
    data = np.stack([_tone(0.5, 16_000), -2.0 * _tone(0.5, 16_000)], axis=1)  # beyond ±1: kept in FLOAT
    out = tmp_path / "stems.wav"
    with AudioWriter(out, 16_000, "FLOAT", channels=2) as writer:
        writer.write(data[:3000])
        writer.write(torch.from_numpy(data[3000:]))
    assert writer.frames_written == len(data)
    back, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 16_000 and back.shape == data.shape
    np.testing.assert_array_equal(back, data)
    with pytest.raises(ValueError, match=r"other\.wav: expected blocks of shape \(n, 2\), got \(10,\)"):
        with AudioWriter(tmp_path / "other.wav", channels=2) as writer:
            writer.write(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="loudness_lufs is for mono output only"):
        AudioWriter(tmp_path / "x.wav", loudness_lufs=-16.0, channels=2)
    with pytest.raises(AudioError, match="cannot write OGG OPUS at 16000 Hz, 300 channels"):
        AudioWriter(tmp_path / "x.opus", channels=300)
    assert [p.name for p in tmp_path.iterdir()] == ["stems.wav"]


def test_recording_check_wording():
    assert audio.too_short(0.4, 0.64, frames=20) == "too short: 0.40 s (20 frames); at least 0.64 s"
    assert audio.too_short(0.01) == "too short: 0.01 s"
    assert audio.no_voiced_frames() == "no voiced frames"
    assert audio.no_voiced_frames("its pitch is undefined") == "no voiced frames, so its pitch is undefined"
    assert audio.silent() == "the recording is silent (peak below -80 dBFS)"
    assert audio.too_long(5.0, 4.0) == "5.0 s long, longer than the limit of 4 s; raise it with --max-duration"


def test_without_soundfiles_binding_honest_files_still_decode(tmp_path, monkeypatch):
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([_tone(1.3, 44_100), _tone(1.3, 44_100, 220.0)], axis=1), 44_100)
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.5)
    monkeypatch.setattr(audio, "_RAW_READ", False)
    np.testing.assert_array_equal(load_audio(path).numpy(), _one_shot(path))
