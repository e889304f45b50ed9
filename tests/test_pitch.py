import importlib.util
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knnsvc import pitch
from knnsvc.pitch import (
    F0_CURVE_MAX_HZ,
    F0_EXTRACTORS,
    F0Stopped,
    default_f0_workers,
    get_f0_extractor,
    harvest_f0,
    load_f0_curve,
    median_log_f0,
    resample_f0,
    save_f0_curve,
    shift_semitones,
    shift_to_reference,
)
from tests.conftest import sung_vowel

SR = 16_000

PACKAGES = {"fcpe": "torchfcpe", "swiftf0": "swift_f0"}

# Cents RMSE allowed against the true F0 of a steady sung vowel with 30-cent vibrato, from each
# method's resolution (not from a measured error):
# - harvest, dio: WORLD refines F0 from the fundamental's instantaneous frequency (Harvest
#   itself, Dio through StoneMask); averaging the vibrato over a three-period window errs by
#   30 * w^2 * W^2 / 24 cents, about 1 cent at 100 Hz (w = 2 pi 5 Hz, W = 30 ms); 5 allows leakage
#   from the second harmonic.
# - fcpe: half of one of its 360 pitch classes, which are log-spaced 32.7-1975.5 Hz (19.8 cents).
# - swiftf0: half of one of its 95 pitch steps, log-spaced 46.875-2093.75 Hz (70.0 cents).
CENTS_TOLERANCE = {
    "harvest": 5.0,
    "dio": 5.0,
    "fcpe": 1200 * math.log2(1975.5 / 32.7) / 359 / 2,
    "swiftf0": 1200 * math.log2(2093.75 / 46.875) / 94 / 2,
}


def extractor(name: str) -> pitch.F0Extractor:
    """The named extractor; skips when its optional package is not installed."""
    if name in PACKAGES and importlib.util.find_spec(PACKAGES[name]) is None:
        pytest.skip(f"{PACKAGES[name]} is not installed")
    return get_f0_extractor(name)


def cents(f0_hz: np.ndarray, reference_hz: np.ndarray) -> np.ndarray:
    return 1200 * np.log2(f0_hz / reference_hz)


def glide_hz(times: np.ndarray, octaves_per_second: float) -> np.ndarray:
    """A glide through 300 Hz at 1 s."""
    return 300.0 * 2 ** (octaves_per_second * (times - 1.0))


def glide_vowel(f0_hz: np.ndarray) -> torch.Tensor:
    """A harmonic-rich vowel following a per-sample F0 contour (peak 0.5)."""
    phase = 2 * np.pi * np.cumsum(f0_hz) / SR
    wav = np.zeros_like(phase)
    for k in range(1, 40):
        gain = np.exp(-(((k * f0_hz) - 700.0) / 400.0) ** 2) + 0.05 / k
        wav += np.where(k * f0_hz < 7600, gain * np.sin(k * phase), 0.0)
    return torch.from_numpy((0.5 * wav / np.abs(wav).max()).astype(np.float32))


def test_harvest_matches_golden(golden):
    for wav, f0 in ((golden["src_wav"], golden["src_f0"]), (golden["ref_wav"], golden["ref_f0"])):
        ours = harvest_f0(wav)
        assert ours.dtype == torch.float32
        assert ours.shape[0] == wav.shape[0] // 320 + 1
        torch.testing.assert_close(ours[: f0.shape[0]], f0, atol=1e-3, rtol=0)


def test_harvest_follows_a_sung_note():
    f0 = harvest_f0(sung_vowel(1.0, 220.0))
    voiced = f0[f0 > 0]
    assert voiced.numel() > 0.8 * f0.numel()
    assert abs(1200 * math.log2(float(voiced.median()) / 220.0)) < 20  # cents


def test_harvest_is_the_default_and_its_extractor_is_harvest_f0():
    assert F0_EXTRACTORS[0] == "harvest"
    assert set(F0_EXTRACTORS) == {"harvest", "dio", "fcpe", "swiftf0"}
    wav = sung_vowel(0.5, 180.0)
    assert torch.equal(get_f0_extractor("harvest")(wav), harvest_f0(wav))
    assert get_f0_extractor("HARVEST").name == "harvest"


@pytest.mark.parametrize("name", F0_EXTRACTORS)
@pytest.mark.parametrize("f0_hz", [100.0, 220.0, 440.0, 800.0])
def test_extractor_tracks_a_sung_vowel_on_the_frame_grid(name, f0_hz):
    wav = sung_vowel(1.0, f0_hz)[:15_900]  # not a whole number of frames
    f0 = extractor(name)(wav)
    assert f0.dtype == torch.float32 and f0.shape == (wav.shape[0] // 320 + 1,)
    f0 = f0.numpy()
    times = np.arange(f0.shape[0]) * 0.02
    true_hz = f0_hz * 2 ** (30 / 1200 * np.sin(2 * np.pi * 5 * times))  # sung_vowel's vibrato
    inner = (times >= 0.1) & (times <= 0.9)
    voiced = inner & (f0 > 0)
    assert voiced.sum() >= 0.9 * inner.sum()  # a steady vowel at -6 dBFS is voiced throughout
    error = cents(f0[voiced], true_hz[voiced])
    assert np.sqrt(np.mean(error**2)) < CENTS_TOLERANCE[name]


@pytest.mark.parametrize("name", F0_EXTRACTORS)
def test_extractor_frames_are_centred_on_multiples_of_20_ms(name):
    """On rising and falling glides (1200 cents/s) a time offset shows as opposite biases.

    Reading another hop onto the grid wrongly by half a native frame would shift the track by
    5 ms (fcpe) or 8 ms (swiftf0); the allowance is half the smaller.
    """
    track = extractor(name)
    bias = []
    for octaves_per_second in (1.0, -1.0):
        f0 = track(glide_vowel(glide_hz(np.arange(2 * SR) / SR, octaves_per_second))).numpy()
        frame_times = np.arange(f0.shape[0]) * 0.02
        voiced = (f0 > 0) & (frame_times > 0.2) & (frame_times < 1.8)
        assert voiced.sum() > 60
        bias.append(cents(f0[voiced], glide_hz(frame_times[voiced], octaves_per_second)).mean())
    lag_ms = (bias[0] - bias[1]) / 2 / 1.2
    assert abs(lag_ms) < 2.5


@pytest.mark.parametrize("name", F0_EXTRACTORS)
def test_silence_is_unvoiced(name):
    track = extractor(name)
    assert torch.equal(track(torch.zeros(SR)), torch.zeros(SR // 320 + 1))
    quiet = 1e-3 * torch.randn(SR, generator=torch.Generator().manual_seed(0))
    assert int((track(quiet) > 0).sum()) == 0


def notes_with_gaps() -> torch.Tensor:
    """4.5 s: three notes with silence between them, on a DC offset (what blocks must reproduce)."""
    parts = []
    for f0_hz, seed in ((150.0, 1), (330.0, 2), (520.0, 3)):
        parts += [sung_vowel(1.3, f0_hz, seed=seed), torch.zeros(SR // 4)]
    return torch.cat(parts)[: int(4.5 * SR)] + 0.003


def test_harvest_blocks_reproduce_the_whole_recording():
    """Harvest computes in float64 and the blocks' FFT sizes differ from the whole recording's:
    differences of float64 rounding (~1e-13) can only show as one float32 ulp after the cast."""
    wav = notes_with_gaps()
    whole = harvest_f0(wav).numpy()
    assert (whole > 0).mean() > 0.5
    blocks = harvest_f0(wav, block_seconds=1.5).numpy()  # three blocks
    np.testing.assert_array_equal(blocks > 0, whole > 0)
    np.testing.assert_array_max_ulp(blocks, whole, maxulp=1)


@pytest.mark.parametrize("name", ["dio", "fcpe", "swiftf0"])
def test_blocks_agree_with_the_whole_recording(name):
    """dio: as Harvest (the same mean-preserving tail; float64, then one float32 ulp at most).
    fcpe, swiftf0: identical up to float32 rounding, which moves a decoded F0 by far less than
    1 cent and, on this clean signal, flips no voicing decision."""
    track = extractor(name)
    wav = notes_with_gaps()
    whole = track(wav).numpy()
    blocks = track(wav, block_seconds=1.3).numpy()  # four blocks
    if name == "dio":
        np.testing.assert_array_max_ulp(blocks, whole, maxulp=1)
    np.testing.assert_array_equal(blocks > 0, whole > 0)
    both = whole > 0
    assert both.mean() > 0.5
    assert np.abs(cents(blocks[both], whole[both])).max() < 1.0


@pytest.mark.parametrize(("seed", "n"), [(2, 3_000_001), (0, 1_000_003), (1, 262_145), (0, 7)])
def test_the_blocked_mean_is_the_float64_copys_to_the_last_bit(seed, n):
    """The recording's mean (the WORLD blocks' DC tail) is summed from float32 samples one run at
    a time, and equals the mean of a whole float64 copy (seed 2: where a buffered cast does not)."""
    samples = (np.random.default_rng(seed).standard_normal(n) * 0.3 + 0.01).astype(np.float32)
    assert pitch._mean_float64(samples) == float(samples.astype(np.float64).mean())
    assert pitch._mean_float64(samples.astype(np.float64)) == float(samples.astype(np.float64).mean())


@pytest.mark.parametrize(("name", "block_seconds", "workers"), [
    ("harvest", 1.5, 1), ("dio", 1.3, 1), ("dio", 1.3, 2), ("dio", None, 2), ("swiftf0", 1.3, 1)])
def test_float32_input_gives_the_float64_copys_f0_bit_for_bit(name, block_seconds, workers):
    """A float32 waveform is converted to float64 block by block (no whole float64 copy): the F0
    is the one of its float64 copy, bit for bit, in-process and in worker processes."""
    if name in PACKAGES:
        track = extractor(name)
    else:
        track = get_f0_extractor(name, workers=workers)
    wav = notes_with_gaps()
    assert wav.dtype == torch.float32
    assert torch.equal(track(wav, block_seconds), track(wav.double(), block_seconds))


@pytest.mark.parametrize("block_seconds", [None, 1.3])
def test_fcpe_scales_loud_audio_block_by_block_as_the_whole(block_seconds):
    """fcpe divides audio above full scale by its peak one block at a time: the F0 of a loud
    float32 waveform is the F0 of the whole float64 waveform divided by its peak (peak 1)."""
    track = extractor("fcpe")
    loud = notes_with_gaps() * 3.0
    loud[1000] = -4.0  # a negative peak
    scaled = torch.from_numpy(loud.double().numpy() / 4.0)
    assert float(scaled.abs().max()) == 1.0
    assert torch.equal(track(loud, block_seconds), track(scaled, block_seconds))


@pytest.mark.parametrize("workers", [1, 2])
def test_empty_or_multichannel_audio_is_refused(workers):
    for wav in (torch.zeros(0), torch.zeros(2, 800)):
        with pytest.raises(ValueError, match="non-empty mono waveform"):
            get_f0_extractor("harvest", workers=workers)(wav)
    with pytest.raises(ValueError, match="non-empty mono waveform"):
        harvest_f0(torch.zeros(0))


def test_unknown_extractor_names_the_choices():
    with pytest.raises(ValueError, match="unknown F0 extractor 'crepe'.*harvest, dio, fcpe, swiftf0"):
        get_f0_extractor("crepe")


@pytest.mark.parametrize(("name", "command"), [
    ("swiftf0", 'pip install -e ".[pitch]"'),
    ("fcpe", 'pip install -e ".[pitch]" && pip install --no-deps torchfcpe==0.0.4'),
])
def test_missing_package_says_how_to_install_it(monkeypatch, name, command):
    monkeypatch.setitem(sys.modules, PACKAGES[name], None)
    with pytest.raises(ImportError, match=f"the {name} F0 extractor needs") as error:
        get_f0_extractor(name)
    assert command in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("torchaudio", ["absent", "broken"])
def test_torchfcpe_imports_without_torchaudio_and_the_stand_in_leaves(monkeypatch, tmp_path, torchaudio):
    """"broken": a torchaudio that fails at import, as the PyPI CUDA build does beside a CPU torch."""
    extractor("fcpe")
    if torchaudio == "broken":
        (tmp_path / "torchaudio").mkdir()
        (tmp_path / "torchaudio" / "__init__.py").write_text(
            'raise OSError("libc10_cuda.so: cannot open shared object file: No such file or directory")\n'
        )
        monkeypatch.syspath_prepend(str(tmp_path))
    if pitch._torchaudio_loads():
        pytest.skip("torchaudio loads here: torchfcpe uses it, no stand-in is needed")
    for module in [m for m in sys.modules if m == "torchfcpe" or m.startswith("torchfcpe.")]:
        monkeypatch.delitem(sys.modules, module)  # import afresh; restored afterwards
    monkeypatch.delenv("LRU_CACHE_CAPACITY", raising=False)
    torchfcpe = pitch._import_torchfcpe()
    assert torchfcpe.mel_extractor.Resample is pitch._ResampleUnavailable
    assert not [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]
    assert "LRU_CACHE_CAPACITY" not in os.environ  # torchfcpe sets it at import; knnsvc restores it
    with pytest.raises(RuntimeError, match="16 kHz"):
        torchfcpe.mel_extractor.Resample(44_100, 16_000)


def test_models_are_loaded_once_and_cache_ids_differ():
    ids = set()
    for name in F0_EXTRACTORS:
        first = extractor(name)
        second = get_f0_extractor(name)
        assert first.cache_id == second.cache_id and first.name == name
        assert first.cache_id.startswith(name)
        ids.add(first.cache_id)
        if name == "fcpe":
            assert first.analyse is second.analyse  # the model object itself
    assert len(ids) == len(F0_EXTRACTORS)


def test_resample_f0_interpolates_log_f0_and_keeps_unvoiced():
    times = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    f0 = np.array([100.0, 400.0, 0.0, 0.0, 200.0])
    targets = np.array([-1.0, 0.0, 5.0, 12.0, 15.0, 18.0, 25.0, 36.0, 40.0, 41.0])
    out = resample_f0(times, f0, targets)
    expected = [0.0, 100.0, 200.0, 400.0, 0.0, 0.0, 0.0, 200.0, 200.0, 0.0]
    np.testing.assert_allclose(out, expected, rtol=1e-12)  # 5: geometric mean; 15: halfway = unvoiced


def test_f0_curve_round_trip(tmp_path):
    f0 = harvest_f0(sung_vowel(0.5, 200.0))
    f0[5:9] = 0.0
    path = tmp_path / "curve.csv"
    save_f0_curve(path, f0)
    assert path.read_text().splitlines()[:2] == ["time_s,f0_hz", "0.00," + f"{float(f0[0]):.9g}"]
    assert torch.equal(load_f0_curve(path, f0.shape[0]), f0)
    longer = load_f0_curve(path, f0.shape[0] + 5)
    assert torch.equal(longer[: f0.shape[0]], f0) and not longer[f0.shape[0] :].any()


def test_f0_curve_resampled_onto_the_frame_grid(tmp_path):
    path = tmp_path / "sparse.csv"
    path.write_text("0.05,100\n0.13,\n0.25,0\n0.29,200\n0.37,800\n\n")  # no header, blank line
    f0 = load_f0_curve(path, 25).numpy()
    assert not f0[:3].any()  # before the first point (0.00-0.04 s)
    np.testing.assert_allclose(f0[3:5], 100.0)  # 0.06, 0.08 s: nearer the voiced 0.05 s point
    assert not f0[5:14].any()  # 0.10-0.26 s: nearer an unvoiced point
    np.testing.assert_allclose(f0[14], 200.0)  # 0.28 s: nearer the voiced 0.29 s point
    frame_times = np.arange(15, 19) * 0.02  # 0.30-0.36 s: log-linear from 200 to 800 Hz
    np.testing.assert_allclose(f0[15:19], 200.0 * 4 ** ((frame_times - 0.29) / 0.08), rtol=1e-6)
    assert not f0[19:].any()  # after the last point


@pytest.mark.parametrize(("text", "line", "message"), [
    ("time_s,f0_hz\n0.0,100\n0.02,abc\n", 3, "f0_hz 'abc' is not a number"),
    ("0.0,100\nx,100\n", 2, "time_s 'x' is not a number"),
    ("0.0,100\n0.02,-5\n", 2, "f0_hz '-5' is out of range (negative"),
    ("-0.02,100\n", 1, "time_s '-0.02' is out of range (negative"),
    ("0.0,nan\n", 1, "f0_hz 'nan' is out of range (not finite"),
    ("0.0,100\ninf,100\n", 2, "time_s 'inf' is out of range (not finite"),
    ("0.0,100\n0.02,1e39\n", 2, "f0_hz '1e39' is out of range (above 8000 Hz"),  # float32 overflow: was NaN
    ("0.0,100\n0.02,8000.5\n", 2, "f0_hz '8000.5' is out of range (above 8000 Hz"),
    ("0.0,100\n1e400,100\n", 2, "time_s '1e400' is out of range (not finite"),
    ("0.0,100\n86401,100\n", 2, "time_s '86401' is out of range (above 86400 s"),
    ("0.0,100\n0.04,100\n0.04,120\n", 3, "time 0.04 s is not after the previous row's 0.04 s"),
    ("0.0,100\n0.02,90\n0.01,80\n", 3, "time 0.01 s is not after"),
    ("0.0,100,1\n", 1, "expected 2 fields"),
    ("0.0,100\n,100\n", 2, "time_s is empty"),
])
def test_f0_curve_bad_rows_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_f0_curve(path, 10)
    assert str(error.value).startswith(f"{path}:{line}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("data", "line", "offset"), [
    (b"time_s,f0_hz\n0.0,100\n0.02,\xff00\n", 3, 26),
    (b"\xef\xbb\xbf0.0,100\r\n0.02,1\xe9\r\n", 2, 18),  # after a byte-order mark, CRLF lines
    (b"0.0,100\r\x80", 2, 8),  # CR-only line ends, the bad byte first on its line
    (b"\xc3", 1, 0),
])
def test_f0_curve_not_utf8_names_file_line_and_byte(tmp_path, data, line, offset):
    path = tmp_path / "latin1.csv"
    path.write_bytes(data)
    with pytest.raises(ValueError) as error:
        load_f0_curve(path, 10)
    assert str(error.value) == f"{path}:{line}: not UTF-8 text (byte 0x{data[offset]:02x} at byte offset {offset})"


def test_f0_curve_save_refuses_what_load_would_refuse(tmp_path):
    path = tmp_path / "curve.csv"
    for bad in (float("nan"), -1.0, F0_CURVE_MAX_HZ * 1.5):
        with pytest.raises(ValueError, match=r"f0_hz\[1\] = .* is out of range 0-8000 Hz"):
            save_f0_curve(path, torch.tensor([100.0, bad, 200.0]))
        assert not path.exists()


def check_curve_file(path: Path, num_frames: int) -> None:
    """A curve file either reads as a valid (T,) curve or gives one ValueError starting with its path."""
    try:
        f0 = load_f0_curve(path, num_frames)
    except ValueError as error:
        message = str(error)
        assert message.startswith(f"{path}:") and "\n" not in message, message
        return
    assert f0.dtype == torch.float32 and f0.shape == (num_frames,)
    assert bool(torch.isfinite(f0).all()) and float(f0.min()) >= 0 and float(f0.max()) <= 8000


FIELD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=2e4).map(lambda x: f"{x:.6g}"),
    st.integers(-10, 10**40).map(str),
    st.text(alphabet="0123456789.eE+-_ naifINFx\t\x00\u00a0", max_size=8),
)
F0_FIELD = st.one_of(st.just("0"), st.just(""), st.floats(0, 1e4).map(lambda x: f"{x:.9g}"), FIELD)


@st.composite
def csv_text(draw: st.DrawFn) -> str:
    """Rows at increasing times (most of them valid), some replaced by arbitrary fields, any line ends."""
    times = sorted(set(draw(st.lists(st.floats(0, 2.0), max_size=15))))
    rows = [[f"{t:.9g}", draw(F0_FIELD)] for t in times]
    for _ in range(draw(st.integers(0, 2))):
        rows.insert(draw(st.integers(0, len(rows))), draw(st.lists(FIELD, max_size=3)))
    ends = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(rows), max_size=len(rows)))
    return "".join(",".join(fields) + end for fields, end in zip(rows, ends, strict=True))


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(text=csv_text(), header=st.booleans(), bom=st.booleans(), num_frames=st.integers(1, 60))
def test_f0_curve_any_csv_text_is_a_valid_curve_or_one_error_naming_the_file(text, header, bom, num_frames):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "curve.csv"
        data = ("time_s,f0_hz\n" if header else "") + text
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
        check_curve_file(path, num_frames)


@settings(deadline=None, max_examples=200)
@given(data=st.binary(max_size=200), num_frames=st.integers(1, 60))
def test_f0_curve_any_bytes_are_a_valid_curve_or_one_error_naming_the_file(data, num_frames):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "curve.csv"
        path.write_bytes(data)
        check_curve_file(path, num_frames)


@settings(deadline=None, max_examples=100)
@given(values=st.lists(st.one_of(st.just(0.0), st.floats(0, F0_CURVE_MAX_HZ, width=32)), min_size=1, max_size=300),
       extra=st.integers(0, 5))
def test_f0_curve_save_load_round_trip(values, extra):
    f0 = torch.tensor(values, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "curve.csv"
        save_f0_curve(path, f0)
        loaded = load_f0_curve(path, f0.shape[0] + extra)
    assert torch.equal(loaded[: f0.shape[0]], f0) and not loaded[f0.shape[0] :].any()


def test_f0_curve_without_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("time_s,f0_hz\n")
    with pytest.raises(ValueError, match="no rows"):
        load_f0_curve(path, 10)


def test_key_shift_matches_golden(golden):
    for conversion in golden["conversions"].values():
        shifted = shift_to_reference(golden["src_f0"], golden["ref_f0"])
        torch.testing.assert_close(shifted, conversion["f0_shifted"], atol=1e-3, rtol=0)


def test_key_shift_moves_median_onto_reference_and_keeps_unvoiced():
    src = torch.tensor([0.0, 200.0, 220.0, 0.0, 240.0])
    ref = torch.tensor([100.0, 110.0, 0.0, 120.0])
    shifted = shift_to_reference(src, ref)
    assert shifted[0] == 0 and shifted[3] == 0
    assert math.isclose(float(median_log_f0(shifted)), float(median_log_f0(ref)), abs_tol=1e-6)
    ratios = shifted[src > 0] / src[src > 0]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 110.0 / 220.0))


def test_lower_median_like_torch():
    assert math.isclose(float(median_log_f0(torch.tensor([100.0, 200.0]))), math.log(100.0), rel_tol=1e-6)


def test_semitone_shift():
    shifted = shift_semitones(torch.tensor([0.0, 220.0]), 12)
    torch.testing.assert_close(shifted, torch.tensor([0.0, 440.0]))
    torch.testing.assert_close(shift_semitones(torch.tensor([440.0]), -3), torch.tensor([440.0 * 2 ** (-0.25)]))


def test_all_unvoiced_has_no_median():
    with pytest.raises(ValueError, match="no voiced frames"):
        shift_to_reference(torch.zeros(10), torch.tensor([100.0, 120.0]))


# ------------------------------------------------------------------ F0 in worker processes, stop
def child_pids() -> set[int]:
    """Children of this process, from /proc (no psutil)."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


def assert_gone(pids: list[int]) -> None:
    """The worker processes have ended and were reaped: not children any more, no /proc entry."""
    assert pids and not set(pids) & child_pids()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


@pytest.fixture(scope="module", autouse=True)
def no_workers_after_this_module():
    """The worker processes these tests start end with the module, not at the end of the session."""
    yield
    pitch._close_pools()


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")


def long_song(seconds: float) -> torch.Tensor:
    """`seconds` of sung vowels (a 2 s phrase repeated), cheap to make."""
    phrase = torch.cat([sung_vowel(1.0, 220.0), sung_vowel(1.0, 330.0, seed=1)])
    return phrase.repeat(math.ceil(seconds / 2))[: int(seconds * SR)]


@pytest.mark.parametrize("name", ["harvest", "dio"])
@pytest.mark.parametrize("block_seconds", [None, 1.5])
def test_workers_give_the_serial_result_bit_for_bit(name, block_seconds):
    wav = notes_with_gaps()  # three blocks of 1.5 s
    serial = get_f0_extractor(name, workers=1)
    assert serial.worker_pids() == []
    expected = serial(wav, block_seconds)
    if name == "harvest":
        assert torch.equal(expected, harvest_f0(wav, block_seconds))
    for workers in (2, 4):  # 4: more workers than blocks
        pooled = get_f0_extractor(name, workers=workers)
        assert pooled.cache_id == serial.cache_id and pooled.workers == workers
        assert torch.equal(pooled(wav, block_seconds), expected)
        assert 1 <= len(pooled.worker_pids()) <= min(workers, 3)  # started as blocks need them (or before)
    pids = pooled.worker_pids()
    assert torch.equal(pooled(wav, block_seconds), expected) and pooled.worker_pids() == pids  # reused


def test_workers_default_to_the_cores_and_are_checked():
    assert default_f0_workers() == len(os.sched_getaffinity(0))
    assert get_f0_extractor("harvest").workers == default_f0_workers()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be a whole number >= 1"):
            get_f0_extractor("harvest", workers=bad)


@needs_proc
@pytest.mark.parametrize("block_seconds", [None, 5.0])
def test_stop_abandons_in_flight_blocks_within_a_second(block_seconds):
    """None: one worker analyses the whole minute; 5.0: two workers on blocks of it."""
    track = get_f0_extractor("harvest", workers=2)
    wav = notes_with_gaps()
    track(wav, 1.5)  # workers running
    pids = track.worker_pids()
    assert len(pids) == 2 and set(pids) <= child_pids()
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    song = long_song(60.0)  # Harvest: many seconds of work
    timer.start()
    start = time.perf_counter()
    with pytest.raises(F0Stopped):
        track(song, block_seconds, stop=stop)
    elapsed = time.perf_counter() - start
    timer.join()
    assert elapsed < 3.0
    assert track.worker_pids() == []
    assert_gone(pids)
    assert torch.equal(track(wav, 1.5), harvest_f0(wav, 1.5))  # new workers for the next call
    assert len(track.worker_pids()) == 2


@needs_proc
def test_a_second_caller_waits_its_turn_and_can_be_stopped_while_waiting():
    track = get_f0_extractor("harvest", workers=2)
    assert track.pool is not None
    track.pool.close()  # no workers of earlier tests: the workers seen below are the first call's own
    first_stop, second_stop = threading.Event(), threading.Event()
    first_error: list[BaseException] = []
    song = long_song(60.0)

    def first() -> None:
        try:
            track(song, 5.0, stop=first_stop)
        except BaseException as error:  # noqa: BLE001  (checked below)
            first_error.append(error)

    runner = threading.Thread(target=first)
    runner.start()
    try:
        deadline = time.monotonic() + 30.0
        while len(track.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = track.worker_pids()
        threading.Timer(0.5, second_stop.set).start()
        start = time.perf_counter()
        with pytest.raises(F0Stopped):
            track(notes_with_gaps(), 1.5, stop=second_stop)
        assert time.perf_counter() - start < 2.0
        assert runner.is_alive() and track.worker_pids() == pids  # the first call's workers go on
    finally:
        first_stop.set()
        runner.join()
    assert len(first_error) == 1 and isinstance(first_error[0], F0Stopped)


def test_stop_set_before_the_call_in_process():
    stop = threading.Event()
    stop.set()
    for name in F0_EXTRACTORS:
        if name in PACKAGES and importlib.util.find_spec(PACKAGES[name]) is None:
            continue
        with pytest.raises(F0Stopped):
            get_f0_extractor(name, workers=1)(notes_with_gaps(), 1.5, stop=stop)


@needs_proc
def test_a_worker_killed_by_the_os_is_one_error_and_the_next_call_works():
    track = get_f0_extractor("harvest", workers=2)
    wav = notes_with_gaps()
    track(wav, 1.5)  # workers started
    pids = track.worker_pids()
    killer = threading.Timer(0.3, os.kill, (pids[0], signal.SIGKILL))
    killer.start()
    with pytest.raises(RuntimeError, match=r"^F0 worker died \(signal 9, SIGKILL\) while analysing block \d+ of 12$"):
        track(long_song(18.0), 1.5)
    killer.join()
    assert_gone(pids)
    assert torch.equal(track(wav, 1.5), harvest_f0(wav, 1.5))


@needs_proc
def test_keyboard_interrupt_in_the_calling_thread_ends_the_workers():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    track = get_f0_extractor("harvest", workers=2)
    track(notes_with_gaps(), 1.5)
    pids = track.worker_pids()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            track(long_song(60.0), 5.0)
        assert time.perf_counter() - start < 3.0
    finally:
        signal.signal(signal.SIGINT, previous)
    assert_gone(pids)
    assert track.worker_pids() == []
