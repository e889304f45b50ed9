import os
import time

import pytest

from knnsvc.files import (
    NAME_MAX_BYTES,
    TEMP_SUFFIX,
    atomic_path,
    is_temporary,
    remove_stale_temporaries,
    scratch_path,
    temporary_prefix,
)


def test_temporary_is_hidden_beside_the_target_and_not_audio(tmp_path):
    target = tmp_path / "new" / "song.wav"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.exists()
        assert tmp.name.startswith(".song.wav.") and tmp.name.endswith(TEMP_SUFFIX) and is_temporary(tmp)
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert os.listdir(target.parent) == ["song.wav"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_failed_write_leaves_the_target_untouched(tmp_path, error):
    target = tmp_path / "song.wav"
    target.write_bytes(b"old")
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
            raise error()
    assert os.listdir(tmp_path) == ["song.wav"] and target.read_bytes() == b"old"


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert ((tmp_path / "out.json").stat().st_mode & 0o777) == 0o640


def test_scratch_files_are_always_removed(tmp_path):
    with scratch_path(tmp_path / "out.wav") as first, scratch_path(tmp_path / "out.wav") as second:
        assert first != second and is_temporary(first) and is_temporary(second)
        assert (first.stat().st_mode & 0o777) == 0o600
    assert os.listdir(tmp_path) == []


def test_only_our_temporaries_are_recognised():
    assert is_temporary(".out.wav.0123abcd.partial")
    for name in ["out.wav", ".out.wav", ".WavLM-Large.pt.partial", "out.wav.0123abcd.partial",
                 ".out.wav.0123abcd.tmp.wav", ".out.wav.0123ABCD.partial"]:
        assert not is_temporary(name), name


def _age(path, seconds: float = 86_400) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_temporaries_of_the_planned_outputs_are_removed_and_fresh_ones_kept(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".a.wav.0123abcd.partial", tmp_path / "sub" / ".b.pt.89abcdef.partial"]
    fresh = tmp_path / ".a.wav.00000000.partial"
    others = [tmp_path / ".WavLM-Large.pt.partial", tmp_path / "a.wav", tmp_path / "sub" / ".hidden",
              tmp_path / ".c.wav.0123abcd.partial",  # another output's, not planned now
              tmp_path / "sub" / ".a.wav.0123abcd.partial",  # a.wav's name, but in another folder
              tmp_path / ".a.wav.0123abcd.partial.x", tmp_path / "..a.wav.0123abcd.partial"]
    for path in stale + [fresh] + others:
        path.write_bytes(b"")
        if path is not fresh:
            _age(path)
    planned = [tmp_path / "a.wav", tmp_path / "sub" / "b.pt", tmp_path / "missing" / "d.wav"]
    assert remove_stale_temporaries(planned, min_age_s=3600) == sorted(stale)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted([fresh] + others)
    assert remove_stale_temporaries(planned, min_age_s=0) == [fresh]


def test_the_clean_up_never_walks_into_subfolders_nor_follows_links(tmp_path):
    """An unrelated file of the temporary's shape below the output's folder is not the run's own."""
    (tmp_path / "sibling").mkdir()
    unrelated = tmp_path / "sibling" / ".x.wav.1234abcd.partial"
    unrelated.write_bytes(b"someone else's")
    _age(unrelated)
    link = tmp_path / ".x.wav.feedbeef.partial"
    link.symlink_to(unrelated)
    folder = tmp_path / ".x.wav.0badc0de.partial"
    folder.mkdir()
    assert remove_stale_temporaries([tmp_path / "x.wav"], min_age_s=0) == []
    assert unrelated.read_bytes() == b"someone else's" and link.is_symlink() and folder.is_dir()


@pytest.mark.parametrize("name_bytes", [200, 237, 238, 250, 255])
def test_a_target_name_of_up_to_255_bytes_can_be_written_atomically(tmp_path, name_bytes):
    name = "é" * ((name_bytes - 4) // 2) + "x" * ((name_bytes - 4) % 2) + ".wav"
    assert len(name.encode()) == name_bytes
    target = tmp_path / name
    with atomic_path(target) as tmp:
        assert len(tmp.name.encode()) <= NAME_MAX_BYTES and is_temporary(tmp)
        assert tmp.name.startswith(temporary_prefix(target))
        tmp.write_bytes(b"data")
        _age(tmp)
        assert remove_stale_temporaries([tmp_path / "other.wav"], min_age_s=0) == []
        assert remove_stale_temporaries([target], min_age_s=0) == [tmp]
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data" and os.listdir(tmp_path) == [name]


def test_long_names_get_distinct_temporary_prefixes():
    long_a, long_b = "a" * 250 + ".wav", "a" * 249 + "b.wav"
    assert temporary_prefix(long_a) != temporary_prefix(long_b)
    assert temporary_prefix("song.wav") == ".song.wav."
