"""knnsvc.shards: every item in exactly one shard, one-line refusals, atomic manifests, merges that refuse
what cannot be one run; and the evaluation's measurements, whose joined shards give the unsharded
summary to the last bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knnsvc import shards
from knnsvc.eval.suite import SUMMARIES, Measurements, join_measurements, summarise
from knnsvc.shards import (
    Manifest,
    ShardError,
    check_shard,
    merge_entries,
    merged_manifest,
    output_problem,
    read_shards,
    shard_items,
    shard_path,
    write_json,
)

SETTINGS = {"source": "songs", "topk": 4, "wavlm": "tiny.pt"}


# --------------------------------------------------------------------------- assignment
@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.text(max_size=8), max_size=120), num_shards=st.integers(1, 40))
def test_every_item_is_in_exactly_one_shard_in_batch_order(items, num_shards):
    parts = [shard_items(items, num_shards, index) for index in range(num_shards)]
    positions = [list(range(index, len(items), num_shards)) for index in range(num_shards)]
    assert sorted(p for part in positions for p in part) == list(range(len(items)))  # each position once
    assert all(part == [items[p] for p in where] for part, where in zip(parts, positions, strict=True))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced: the shards finish together


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.integers(), max_size=50, unique=True), num_shards=st.integers(1, 10), data=st.data())
def test_assignment_depends_only_on_the_sorted_list(items, num_shards, data):
    index = data.draw(st.integers(0, num_shards - 1))
    shuffled = data.draw(st.permutations(items))
    assert shard_items(sorted(shuffled), num_shards, index) == shard_items(sorted(items), num_shards, index)


@pytest.mark.parametrize(("num_shards", "index", "message"), [
    (0, 0, "the number of shards must be within 1-"),
    (4, 4, "shard index 4 is out of range for 4 shard(s) (0-3)"),
    (4, -1, "shard index -1 is out of range for 4 shard(s) (0-3)"),
    (1, 1, "shard index 1 is out of range for 1 shard(s) (0-0)"),
])
def test_a_shard_outside_the_run_is_one_line(num_shards, index, message):
    with pytest.raises(ShardError) as err:
        check_shard(num_shards, index)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ShardError):
        shard_items([1, 2, 3], num_shards, index)


def test_shard_manifests_sit_beside_the_run_s_path():
    assert shard_path("out/run.json", 4, 2) == Path("out/run.shard-2-of-4.json")
    assert shard_path("out/run.json", 1, 0) == Path("out/run.json")
    assert shard_path("out/run", 3, 0) == Path("out/run.shard-0-of-3.json")


# --------------------------------------------------------------------------- manifests
def shard_manifests(folder: Path, num_shards: int, total: int, settings: dict | None = None,
                    skip: tuple[int, int] | None = None) -> list[Path]:
    """Write the manifests of a finished conversion run of `total` items in `num_shards` shards."""
    paths = []
    for index in range(num_shards):
        manifest = Manifest(shard_path(folder / "run.json", num_shards, index), "convert",
                            dict(settings or SETTINGS), num_shards, index, total=total)
        for position in range(index, total, num_shards):
            if (index, position) != skip:
                manifest.record(position, input=f"src/{position}.wav", output=f"out/{position}.wav",
                                status="converted", message="ok", seconds=0.5)
        manifest.save()
        paths.append(manifest.path)
    return paths


def test_a_manifest_is_rewritten_atomically_after_every_item(tmp_path):
    manifest = Manifest(tmp_path / "m.json", "convert", SETTINGS, 2, 1, total=5)
    manifest.record(1, input="a", output="b", status="converted", message="ok", seconds=1.0)
    data = json.loads(manifest.path.read_text())
    assert data["shard"] == {"index": 1, "count": 2} and data["total"] == 5
    assert data["entries"] == [{"position": 1, "input": "a", "output": "b", "status": "converted", "message": "ok",
                                "seconds": 1.0}]
    assert data["fingerprint"] == shards.fingerprint(SETTINGS)
    manifest.record(3, input="c", output="d", status="failed", message="c: too short", seconds=0.1)
    assert [e["position"] for e in json.loads(manifest.path.read_text())["entries"]] == [1, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary left


def test_a_failed_write_leaves_the_earlier_manifest_and_no_temporary(tmp_path, monkeypatch):
    manifest = Manifest(tmp_path / "m.json", "convert", SETTINGS, 2, 0, total=4)
    manifest.record(0, input="a", output="b", status="converted", message="ok", seconds=1.0)
    before = manifest.path.read_bytes()

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        manifest.record(2, input="c", output="d", status="converted", message="ok", seconds=1.0)
    monkeypatch.undo()
    assert manifest.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_rerun_finds_its_earlier_entries_only_for_the_same_run(tmp_path):
    first = Manifest(tmp_path / "m.json", "convert", SETTINGS, 2, 0, total=4)
    first.record(0, input="a", output="b", status="converted", message="ok", seconds=2.0)
    assert Manifest(tmp_path / "m.json", "convert", SETTINGS, 2, 0, total=4).previous_entries() == {
        0: {"input": "a", "output": "b", "status": "converted", "message": "ok", "seconds": 2.0}}
    assert Manifest(tmp_path / "m.json", "convert", {**SETTINGS, "topk": 1}, 2, 0, total=4).previous_entries() == {}
    assert Manifest(tmp_path / "m.json", "convert", SETTINGS, 2, 0, total=5).previous_entries() == {}
    assert Manifest(tmp_path / "other.json", "convert", SETTINGS, 2, 0, total=4).previous_entries() == {}


def test_merged_shards_are_the_unsharded_manifest(tmp_path):
    merged = merged_manifest(read_shards(shard_manifests(tmp_path, 3, 7)))
    assert merged["shard"] is None and merged["total"] == 7
    assert [e["input"] for e in merged["entries"]] == [f"src/{p}.wav" for p in range(7)]
    single = Manifest(tmp_path / "single.json", "convert", SETTINGS, 1, 0, total=7)
    for position in range(7):
        single.record(position, input=f"src/{position}.wav", output=f"out/{position}.wav", status="converted",
                      message="ok", seconds=0.5)
    assert merged == single.to_json()


def test_shards_can_be_given_in_any_order(tmp_path):
    paths = shard_manifests(tmp_path, 4, 10)
    assert merge_entries(read_shards(paths[::-1])) == merge_entries(read_shards(paths))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_merge_refusals_are_one_line_each(tmp_path):
    paths = shard_manifests(tmp_path / "a", 3, 7)
    with pytest.raises(ShardError) as err:
        read_shards(paths[:2])
    assert "missing shard(s) 2 of 3" in one_line(err)
    with pytest.raises(ShardError) as err:
        read_shards([*paths, paths[1]])
    assert "shard 1 of 3 is given twice" in one_line(err)
    other = shard_manifests(tmp_path / "b", 3, 7, settings={**SETTINGS, "topk": 2})
    with pytest.raises(ShardError) as err:
        read_shards([paths[0], other[1], paths[2]])
    assert "made with other settings" in one_line(err) and "topk" in one_line(err)
    four = shard_manifests(tmp_path / "c", 4, 7)
    with pytest.raises(ShardError) as err:
        read_shards([paths[0], four[1]])
    assert "shard of 4, but" in one_line(err)
    killed = shard_manifests(tmp_path / "d", 3, 7, skip=(1, 4))
    with pytest.raises(ShardError) as err:
        read_shards(killed)
    assert "shard 1 of 3 is incomplete (1 of 2 items recorded); rerun it" in one_line(err)
    write_json(tmp_path / "merged.json", merged_manifest(read_shards(paths)))
    with pytest.raises(ShardError) as err:
        read_shards([tmp_path / "merged.json"])
    assert "a merged or unsharded manifest" in one_line(err)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ShardError) as err:
        read_shards([tmp_path / "junk.json"])
    assert "not a JSON manifest" in one_line(err)
    (tmp_path / "foreign.json").write_text('{"format": "something-else"}')
    with pytest.raises(ShardError) as err:
        read_shards([tmp_path / "foreign.json"])
    assert "not a knnsvc manifest" in one_line(err)
    with pytest.raises(ShardError) as err:
        read_shards([tmp_path / "absent.json"])
    assert "no such manifest" in one_line(err)


def test_a_second_merge_is_refused_and_keeps_the_first(tmp_path):
    paths = shard_manifests(tmp_path, 2, 3)
    out = tmp_path / "merged.json"
    assert output_problem(out, paths, overwrite=False) is None
    write_json(out, merged_manifest(read_shards(paths)), overwrite=False)
    first = out.read_bytes()
    assert "already exists (merged before?); use --overwrite" in output_problem(out, paths, overwrite=False)
    with pytest.raises(ShardError):
        write_json(out, {"other": 1}, overwrite=False)
    assert out.read_bytes() == first
    assert "is one of the manifests being merged" in output_problem(paths[0], paths, overwrite=True)
    assert "is a folder" in output_problem(tmp_path, paths, overwrite=True)


# --------------------------------------------------------------------------- the evaluation's measurements
def measurements(seed: int, n_items: int = 9) -> Measurements:
    """Measurements of every family as the metric functions record them (random values)."""
    rng = np.random.default_rng(seed)
    speakers = ["alto", "bass", "tenor"]
    real_ids = {spk: [f"targets/{spk}/{n}.wav" for n in range(3)] for spk in speakers}
    ids = [f"conv/{n}" for n in range(n_items)]
    measured = Measurements(ids, [speakers[n % 3] for n in range(n_items)], real_ids)
    measured.shared["speaker"] = {"embedder": "test", "real": {
        path: rng.standard_normal(8).astype(np.float32) for paths in real_ids.values() for path in paths}}
    measured.shared["intelligibility"] = {"asr_model": "test"}
    for n, item_id in enumerate(ids):
        if n != 4:  # an item that could not be embedded
            measured.record("speaker", item_id, sim=float(rng.uniform(-1, 1)),
                            embedding=rng.standard_normal(8).astype(np.float32))
        measured.record("intelligibility", item_id, reference="a b c d", hypothesis=["a b c d", "a x c", "b"][n % 3])
        measured.record("pitch", item_id, f0_rmse_cents=float(rng.uniform(0, 100)),
                        gross_pitch_error=float(rng.uniform(0, 0.2)), voiced_both=int(rng.integers(1, 50)),
                        vuv_error=float(rng.uniform(0, 0.3)), frames=int(rng.integers(50, 60)),
                        f0_corr=float(rng.uniform(-1, 1)))
        measured.record("quality", item_id, **{k: float(rng.uniform(1, 5)) for k in ("ovrl", "sig", "bak", "p808")})
        measured.record("speed", item_id, rss=float(rng.uniform(1, 2)), cuda=None, seconds=float(rng.uniform(0, 1)),
                        audio_seconds=float(rng.uniform(1, 3)), stages={"encode": 0.1, "vocode": float(n)})
    return measured


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), num_shards=st.integers(1, 5))
def test_joined_shards_give_the_unsharded_summary_exactly(seed, num_shards):
    whole = measurements(seed)
    parts = [Measurements.from_plain(json.loads(json.dumps(whole.subset(shard_items(whole.item_ids, num_shards, i))
                                                           .to_plain())))
             for i in range(num_shards)]
    joined = join_measurements(parts, whole.item_ids)
    expected, got = summarise(whole, list(SUMMARIES)), summarise(joined, list(SUMMARIES))
    assert json.dumps(got) == json.dumps(expected)  # the same values, bit for bit, in the same order
    assert expected["eer_trials"] > 0 and expected["wer"] is not None


def test_measurements_survive_json_exactly():
    whole = measurements(3)
    back = Measurements.from_plain(json.loads(json.dumps(whole.to_plain())))
    for path, embedding in whole.shared["speaker"]["real"].items():
        restored = back.shared["speaker"]["real"][path]
        assert restored.dtype == embedding.dtype and np.array_equal(restored, embedding)
    assert back.items["pitch"] == whole.items["pitch"]
