"""`knnsvc.references`: the recording checks (their one wording, the duration cap passed on) and a
pool cache whose write failures never end a run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from hifigan.generator import VocoderKind, build_generator
from hifigan.presets import hifigan_config
from knnsvc import references
from knnsvc.audio import AudioError, load_audio
from knnsvc.checkpoints import build_converter
from knnsvc.pool import ReferencePool
from knnsvc.references import PoolCache, build_reference_pool, file_pool, usable_recording
from tests.conftest import GOLDEN, sung_vowel

SR = 16_000


@pytest.fixture(scope="module")
def converter():
    return build_converter(str(GOLDEN / "wavlm_tiny.pt"), str(GOLDEN / "vocoder_harmonic_tiny.pt"),
                           GOLDEN / "vocoder_tiny_config.json")


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "singer" / "a.wav"
    path.parent.mkdir()
    sf.write(path, sung_vowel(1.0, 196.0, seed=2).numpy(), SR)
    return path


# --------------------------------------------------------------------------- the checks
def test_recording_checks_use_the_one_wording(converter, tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(AudioError) as err:
        usable_recording(tmp_path / "quiet.wav", converter)
    assert str(err.value) == f"{tmp_path / 'quiet.wav'}: {references.silent()}"
    sf.write(tmp_path / "blip.wav", 0.3 * np.ones(160, np.float32), SR)
    with pytest.raises(AudioError) as err:
        usable_recording(tmp_path / "blip.wav", converter)
    assert str(err.value) == f"{tmp_path / 'blip.wav'}: too short: 0.01 s; at least 0.02 s"
    assert references.too_short(0.01, 0.02) == "too short: 0.01 s; at least 0.02 s"


def test_usable_recording_passes_the_duration_cap_on(converter, recording):
    with pytest.raises(AudioError, match=r"a\.wav: 1\.0 s long, longer than the limit of 0\.5 s; raise it with "
                                         "--max-duration$"):
        usable_recording(recording, converter, max_seconds=0.5)
    assert usable_recording(recording, converter, max_seconds=None).numel() == SR
    assert usable_recording(recording, converter, nonfinite="error", max_seconds=2.0).numel() == SR


def test_the_duration_cap_reaches_every_reference_recording_cached_or_not(converter, recording, tmp_path):
    longer = recording.parent / "b.wav"
    sf.write(longer, sung_vowel(3.0, 220.0, seed=3).numpy(), SR)
    cache = PoolCache(tmp_path / "cache", converter.pool_settings())
    for attempt in ("encoded", "cached"):
        refused: list[AudioError] = []
        pool, left_out = build_reference_pool(converter, [recording, longer], cache, refused.append,
                                              max_seconds=2.0)
        assert left_out == 1 and pool is not None and pool.names == [str(recording)], attempt
        assert [err.path for err in refused] == [longer], attempt
        assert "longer than the limit of 2 s; raise it with --max-duration" in refused[0].problem, attempt
        if attempt == "encoded":  # fill the cache with the long one, then it must still be refused
            assert file_pool(converter, longer, cache, max_seconds=None).num_frames > 0
            assert cache.load(longer, converter.encoder.dim) is not None
    pool, left_out = build_reference_pool(converter, [recording, longer], cache, refused.append, max_seconds=None)
    assert left_out == 0 and pool is not None and pool.names == [str(recording), str(longer)]


def test_a_crashed_analysis_leaves_that_reference_out_in_one_line(converter, recording, monkeypatch):
    other = recording.parent / "b.wav"
    sf.write(other, sung_vowel(1.0, 220.0, seed=3).numpy(), SR)
    original = converter.reference_pool

    def crashing(wav_16k, name=None):
        if name == str(other):
            raise RuntimeError("F0 worker died (killed by signal 9) while analysing 1.0 s\nTraceback ...")
        return original(wav_16k, name=name)

    monkeypatch.setattr(converter, "reference_pool", crashing)
    refused: list[AudioError] = []
    pool, left_out = build_reference_pool(converter, [other, recording], None, refused.append)
    assert left_out == 1 and pool is not None and pool.names == [str(recording)]
    assert [str(err) for err in refused] == [f"{other}: F0 worker died (killed by signal 9) while analysing 1.0 s"]


# --------------------------------------------------------------------------- the cache fails soft
def _warnings(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_serializer_error_while_caching_is_one_warning_and_the_run_goes_on(converter, recording, tmp_path,
                                                                           monkeypatch, caplog):
    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)  # what torch.save raises on a full disk
    second = recording.parent / "b.wav"
    sf.write(second, sung_vowel(1.0, 220.0, seed=3).numpy(), SR)
    cache = PoolCache(tmp_path / "cache", converter.pool_settings())
    with caplog.at_level(logging.WARNING):
        pool, left_out = build_reference_pool(converter, [recording, second], cache, on_bad_file=pytest.fail)
    assert left_out == 0 and pool is not None and pool.names == [str(recording), str(second)]
    [warning] = _warnings(caplog)
    assert warning.getMessage() == (f"cannot write the pool cache in {tmp_path / 'cache'} ([enforce fail at "
                                    "inline_container.cc:664] . unexpected pos 64 vs 0): continuing without caching")
    assert not cache.writable
    assert list((tmp_path / "cache").iterdir()) == []  # no partial entry left behind
    monkeypatch.undo()
    assert cache.load(recording, converter.encoder.dim) is None  # nothing was cached ...
    assert torch.equal(file_pool(converter, recording, cache).feats, pool.feats[: pool.starts[1]])  # ... yet it works


def test_an_oserror_while_caching_is_one_warning(recording, tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder's parent should be")
    cache = PoolCache(blocker / "cache", {"encoder": "x"})
    pool = ReferencePool(torch.ones(5, 3), torch.full((5,), 100.0), torch.ones(5, 49), starts=[0], names=["a"])
    with caplog.at_level(logging.WARNING):
        cache.store(recording, pool)
        cache.store(recording, pool)  # writing is off now: no second line
    [warning] = _warnings(caplog)
    message = warning.getMessage()
    assert message.startswith(f"cannot write the pool cache in {blocker / 'cache'} (")
    assert message.endswith("): continuing without caching")


def test_interrupts_while_caching_are_not_swallowed(recording, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ReferencePool, "save", interrupted)
    pool = ReferencePool(torch.ones(5, 3), torch.full((5,), 100.0), torch.ones(5, 49), starts=[0], names=["a"])
    with pytest.raises(KeyboardInterrupt):
        PoolCache(tmp_path / "cache", {}).store(recording, pool)




def test_a_really_full_disk_under_the_cache_is_one_warning(converter, recording, tiny_disk, caplog):
    (tiny_disk / "filler").write_bytes(bytes(40 * 1024))  # a little room, less than one entry
    cache = PoolCache(tiny_disk / "cache", converter.pool_settings())
    big = ReferencePool(torch.randn(400, 64), torch.full((400,), 100.0), torch.ones(400, 49), starts=[0],
                        names=[str(recording)])  # 400 frames: about 180 KB as a cache entry
    with caplog.at_level(logging.WARNING):
        cache.store(recording, big)
        pool = file_pool(converter, recording, cache)  # the run goes on, uncached
    [warning] = _warnings(caplog)
    assert warning.getMessage().startswith(f"cannot write the pool cache in {tiny_disk / 'cache'} (")
    assert warning.getMessage().endswith("): continuing without caching")
    assert pool.num_frames > 0 and not cache.writable
    assert [p.name for p in (tiny_disk / "cache").iterdir()] == []  # the temporary was removed


# --------------------------------------------------------------------------- amplitudes above 8 kHz
F0_HZ = 250.0
HIGH = 40  # harmonic 40 of 250 Hz: 10 kHz, above what a 16 kHz recording holds


def _bright_tone(sample_rate: int, seconds: float = 1.5) -> np.ndarray:
    """A steady 250 Hz tone with every harmonic up to 12 kHz at 1/k (Harvest tracks it exactly)."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wav = sum(np.sin(2 * np.pi * k * F0_HZ * t) / k for k in range(1, 49))
    return (0.4 * wav / np.abs(wav).max()).astype(np.float32)


def _converter_at(sample_rate: int):
    cfg = hifigan_config(sample_rate)
    cfg.upsample_initial_channel, cfg.hubert_dim, cfg.hifi_dim, cfg.n_harmonic = 32, 32, 16, 4
    torch.manual_seed(0)
    return build_converter(str(GOLDEN / "wavlm_tiny.pt"),
                           (VocoderKind.HARMONIC, build_generator(VocoderKind.HARMONIC, cfg)))


@pytest.fixture(scope="module")
def converter_44k():
    return _converter_at(44_100)


@pytest.fixture(scope="module")
def bright_files(tmp_path_factory):
    """The same tone written at 44.1 kHz and (resampled from it) at 16 kHz."""
    folder = tmp_path_factory.mktemp("bright")
    sf.write(folder / "tone_44k.wav", _bright_tone(44_100), 44_100)
    sf.write(folder / "tone_16k.wav", load_audio(folder / "tone_44k.wav").numpy(), SR)
    return folder / "tone_44k.wav", folder / "tone_16k.wav"


def test_a_44khz_reference_gives_a_44khz_vocoder_its_harmonics_above_8khz(converter_44k, bright_files):
    tone_44k, tone_16k = bright_files
    assert converter_44k.sample_rate == 44_100 and converter_44k.n_harmonics == 137
    bright, dull = (file_pool(converter_44k, path) for path in (tone_44k, tone_16k))
    assert bright.amp_rates == [44_100] and dull.amp_rates == [16_000]
    assert bright.amps.shape[1] == dull.amps.shape[1] == 137
    voiced = (bright.f0_hz > 0) & (dull.f0_hz > 0)
    voiced[:2] = voiced[-2:] = False  # the edge frames see the tone start and stop
    assert voiced.sum() > 0.8 * bright.num_frames and torch.allclose(bright.f0_hz, dull.f0_hz, rtol=2e-3)
    # harmonic 40 (10 kHz) is there at 1/40 of harmonic 1 from the 44.1 kHz file, 0 from the 16 kHz one
    high, first = bright.amps[voiced, HIGH - 1], bright.amps[voiced, 0]
    assert torch.all(high > 0.3 * first / HIGH) and torch.all(high < 3 * first / HIGH)
    assert torch.all(dull.amps[voiced, 32:] == 0)  # every harmonic at or above 8 kHz
    assert torch.all(bright.amps[voiced, 48:] < 0.05 * high[:, None])  # the tone stops at 12 kHz
    # below 3 kHz both files read the same harmonics (higher up, 44.1 kHz's 40.018 Hz bins drift off 16 kHz's 40 Hz)
    torch.testing.assert_close(bright.amps[voiced, :12], dull.amps[voiced, :12], rtol=0.05, atol=1e-4)


def test_a_16khz_vocoder_reads_the_44khz_file_at_16khz_only(converter, bright_files):
    tone_44k, tone_16k = bright_files
    pool = file_pool(converter, tone_44k)
    assert pool.amp_rates == [16_000] and pool.amps.shape[1] == 49
    assert torch.equal(pool.amps, converter.reference_pool(load_audio(tone_44k), name="x").amps)


def test_the_pool_cache_keeps_pools_of_each_output_rate_apart(converter, converter_44k, bright_files, tmp_path):
    tone_44k, _ = bright_files
    cache_16k = PoolCache(tmp_path / "cache", converter.pool_settings())
    cache_44k = PoolCache(tmp_path / "cache", converter_44k.pool_settings())
    assert cache_16k.entry(tone_44k) != cache_44k.entry(tone_44k)
    built = file_pool(converter_44k, tone_44k, cache_44k)
    assert cache_16k.load(tone_44k, converter.encoder.dim, converter.n_harmonics) is None
    cached = file_pool(converter_44k, tone_44k, cache_44k)
    assert cached.amp_rates == [44_100] and torch.equal(cached.amps, built.amps)


def test_a_converter_with_a_24khz_harmonic_vocoder_converts(bright_files, tmp_path):
    """End to end: a 44.1 kHz reference measured at 24 kHz (74 columns), a 16 kHz source, 24 kHz out."""
    converter_24k = _converter_at(24_000)
    tone_44k, _ = bright_files
    source = tmp_path / "source.wav"
    sf.write(source, sung_vowel(1.0, 196.0, seed=4).numpy(), SR)
    pool, left_out = build_reference_pool(converter_24k, [tone_44k, source], None, pytest.fail)
    assert left_out == 0 and pool is not None
    assert pool.amp_rates == [24_000, 16_000] and pool.amps.shape[1] == 74
    assert pool.amps[pool.f0_hz > 0][: pool.starts[1]].shape[0] > 0
    assert float(pool.amps[: pool.starts[1], HIGH - 1].max()) > 0  # 10 kHz, below 24 kHz's Nyquist
    wav_16k = usable_recording(source, converter_24k)
    result = converter_24k.match(wav_16k, pool)
    assert result.amps is not None and result.amps.shape == (result.num_frames, 74)
    out = converter_24k.vocode(result)
    assert out.shape == (result.num_frames * 480,) and bool(torch.isfinite(out).all())
    assert float(out.abs().max()) > 0


def test_the_python_api_measures_the_original_recording_as_the_file_path_does(converter_44k, tmp_path):
    """`build_pool(..., originals=)` with a 48 kHz array gives the pool `file_pool` gives for the file."""
    path = tmp_path / "tone_48k.wav"
    sf.write(path, _bright_tone(48_000, seconds=1.0), 48_000, subtype="FLOAT")
    wav_48k = torch.from_numpy(sf.read(path, dtype="float32")[0])
    pool = converter_44k.build_pool([load_audio(path)], [str(path)], originals=[(wav_48k, 48_000)])
    assert pool.amp_rates == [44_100]  # measured at the output rate, below the file's
    from_file = file_pool(converter_44k, path)
    assert torch.equal(pool.amps, from_file.amps) and torch.equal(pool.f0_hz, from_file.f0_hz)
    with pytest.raises(ValueError, match="1 recordings but 2 original-rate recordings"):
        converter_44k.build_pool([load_audio(path)], originals=[None, None])


@pytest.mark.parametrize("rate", [None, 44_100.5, 0, True])
def test_an_original_recording_without_a_whole_rate_is_refused(converter_44k, rate):
    wav = torch.from_numpy(_bright_tone(44_100, seconds=0.5))
    with pytest.raises(ValueError, match="needs wav_rate, the rate of wav in whole Hz"):
        converter_44k.reference_pool(torch.from_numpy(_bright_tone(16_000, seconds=0.5)), wav=wav, wav_rate=rate)
