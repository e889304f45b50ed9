"""`knnsvc.references`: the recording checks (their one wording, the duration cap passed on) and a
pool cache whose write failures never end a run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from knnsvc import references
from knnsvc.audio import AudioError
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
