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
