import pytest
import torch

from knnsvc.pool import ReferencePool
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
    """Version 2 files did not record the encoder: they are refused, to be rebuilt (the pool
    cache's keys include the version, so its old entries are simply not used)."""
    path = _pool(10, "a").save(tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 2
    del payload["encoder_id"]
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"pool format version 2, expected 3 \(rebuild the pool\)"):
        ReferencePool.load(path)
