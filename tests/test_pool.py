import pytest
import torch

from knnsvc.pool import PoolFileError, ReferencePool
from knnsvc.references import PoolCache


def _pool(n, name, offset=0.0):
    return ReferencePool(
        feats=torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) + offset,
        f0_hz=torch.full((n,), 100.0 + offset),
        amps=torch.ones(n, 49),
        starts=[0],
        names=[name],
    )


def test_concat_keeps_file_boundaries_and_locates_frames():
    pool = ReferencePool.concat([_pool(50, "a.wav"), _pool(25, "b.wav", 1.0)])
    assert pool.num_frames == 75 and pool.starts == [0, 50] and pool.names == ["a.wav", "b.wav"]
    files, seconds = pool.locate(torch.tensor([0, 49, 50, 74]))
    assert files.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(seconds, torch.tensor([0.0, 0.98, 0.0, 0.48]))


def test_head_truncates_by_duration():
    pool = ReferencePool.concat([_pool(50, "a"), _pool(50, "b")])
    short = pool.head(1.5)
    assert short.num_frames == 75 and short.names == ["a", "b"]
    assert pool.head(0.5).names == ["a"]


def test_save_load_round_trip_is_weights_only(tmp_path):
    pool = ReferencePool.concat([_pool(10, "a"), _pool(5, "b")])
    path = pool.save(tmp_path / "pool.pt", settings={"layer": 6})
    loaded = ReferencePool.load(path)
    assert torch.equal(loaded.feats, pool.feats) and torch.equal(loaded.amps, pool.amps)
    assert loaded.starts == pool.starts and loaded.names == pool.names
    assert [p.name for p in tmp_path.iterdir()] == ["pool.pt"]


def test_load_rejects_other_files(tmp_path):
    torch.save({"generator": {}}, tmp_path / "g.pt")
    with pytest.raises(ValueError, match="not a reference pool"):
        ReferencePool.load(tmp_path / "g.pt")


def test_mismatched_tables_are_rejected():
    with pytest.raises(ValueError, match="disagree"):
        ReferencePool(torch.zeros(3, 2), torch.zeros(2), torch.zeros(3, 49))


def test_cache_entries_follow_content_and_settings(tmp_path):
    """Per-file entries are addressed by the audio bytes and the settings, not names or places."""
    a = tmp_path / "a.wav"
    a.write_bytes(b"one")
    cache = PoolCache(tmp_path / "cache", {"encoder": "enc1", "layer": 6})
    entry = cache.entry(a)
    renamed = tmp_path / "elsewhere" / "renamed.wav"
    renamed.parent.mkdir()
    renamed.write_bytes(b"one")
    assert cache.entry(renamed) == entry
    assert PoolCache(tmp_path / "cache", {"encoder": "enc2", "layer": 6}).entry(a) != entry
    assert PoolCache(tmp_path / "cache", {"encoder": "enc1", "layer": 7}).entry(a) != entry
    a.write_bytes(b"changed")
    assert cache.entry(a) != entry


def _fingerprinted(n, name, encoder_id):
    pool = _pool(n, name)
    pool.encoder_id = encoder_id
    return pool


def test_the_encoder_fingerprint_is_kept_by_concat_head_save_and_load(tmp_path):
    pool = ReferencePool.concat([_fingerprinted(10, "a", "enc-1"), _fingerprinted(5, "b", "enc-1")])
    assert pool.encoder_id == "enc-1" and pool.head(0.1).encoder_id == "enc-1"
    loaded = ReferencePool.load(pool.save(tmp_path / "pool.pt"))
    assert loaded.encoder_id == "enc-1"
    assert ReferencePool.load(_pool(4, "c").save(tmp_path / "unknown.pt")).encoder_id is None
    # a pool with an unknown encoder makes the joined pool's encoder unknown
    assert ReferencePool.concat([_fingerprinted(10, "a", "enc-1"), _pool(5, "b")]).encoder_id is None


def test_pools_of_different_encoders_do_not_join():
    with pytest.raises(ValueError, match="built by different encoders \\(enc-1, enc-2\\)"):
        ReferencePool.concat([_fingerprinted(10, "a", "enc-1"), _fingerprinted(5, "b", "enc-2")])


def test_the_fingerprint_is_under_the_checksum(tmp_path):
    path = _fingerprinted(10, "a", "enc-1").save(tmp_path / "pool.pt")
    payload = torch.load(path, weights_only=True)
    payload["encoder_id"] = "enc-2"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        ReferencePool.load(path)


def test_a_pool_file_of_the_previous_format_is_refused_with_a_clear_line(tmp_path):
    """Version 3 files did not record the amplitude rate: they are refused, to be rebuilt (the pool
    cache's keys include the version, so its old entries are simply not used)."""
    path = _pool(10, "a").save(tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 3
    del payload["amp_rates"]
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"pool format version 3, expected 4 \(rebuild the pool\)"):
        ReferencePool.load(path)


def test_the_cache_key_changes_with_the_pool_format_version(tmp_path, monkeypatch):
    """An entry written by the previous format is looked up under another key: it is rebuilt, not misread."""
    a = tmp_path / "a.wav"
    a.write_bytes(b"one")
    entry = PoolCache(tmp_path / "cache", {"encoder": "enc1"}).entry(a)
    monkeypatch.setattr("knnsvc.references.POOL_FORMAT_VERSION", 3)
    assert PoolCache(tmp_path / "cache", {"encoder": "enc1"}).entry(a) != entry


# --------------------------------------------------------------------------- amplitude rates
def _wide(n, name, rate, columns=137):
    return ReferencePool(feats=torch.zeros(n, 3), f0_hz=torch.full((n,), 200.0), amps=torch.ones(n, columns),
                         starts=[0], names=[name], amp_rates=[rate])


def test_a_pool_records_each_files_amplitude_rate_through_concat_head_save_and_load(tmp_path):
    assert _pool(4, "a").amp_rates == [16_000]  # a pool made without saying: measured at 16 kHz
    pool = ReferencePool.concat([_wide(50, "a", 44_100), _wide(50, "b", 16_000)])
    assert pool.amp_rates == [44_100, 16_000] and pool.amp_rate == 16_000 and pool.n_harmonics == 137
    assert pool.head(0.5).amp_rates == [44_100]
    loaded = ReferencePool.load(pool.save(tmp_path / "pool.pt"), n_harmonics=137)
    assert loaded.amp_rates == [44_100, 16_000] and torch.equal(loaded.amps, pool.amps)


def test_pools_of_different_harmonic_columns_do_not_join():
    with pytest.raises(ValueError, match=r"^cannot join reference pools of 49 and 137 harmonic columns \(built for "
                                         r"vocoders of different output rates\); build every pool with the same "
                                         r"converter$"):
        ReferencePool.concat([_pool(10, "a"), _wide(10, "b", 44_100)])


def test_a_pool_of_other_harmonic_columns_is_refused_on_load(tmp_path):
    path = _wide(10, "a", 24_000, columns=74).save(tmp_path / "pool.pt")
    with pytest.raises(PoolFileError, match=r"74 harmonic amplitudes per frame, expected 49$"):
        ReferencePool.load(path, n_harmonics=49)
    assert ReferencePool.load(path, n_harmonics=74).amp_rates == [24_000]


def test_the_amplitude_rates_are_under_the_checksum_and_checked(tmp_path):
    path = _wide(10, "a", 44_100).save(tmp_path / "pool.pt")
    payload = torch.load(path, weights_only=True)
    payload["amp_rates"] = [16_000]
    torch.save(payload, path)
    with pytest.raises(PoolFileError, match="checksum mismatch"):
        ReferencePool.load(path)
    payload["amp_rates"] = [16_000, 16_000]
    torch.save(payload, path)
    with pytest.raises(PoolFileError, match="do not give one positive rate per file$"):
        ReferencePool.load(path)
    with pytest.raises(ValueError, match="one positive amplitude rate per file"):
        _wide(10, "a", 0)
