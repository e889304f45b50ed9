import os
import time

import pytest

from knnsvc.files import TEMP_SUFFIX, atomic_path, is_temporary, remove_stale_temporaries, scratch_path


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


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".a.wav.0123abcd.partial", tmp_path / "sub" / ".b.pt.89abcdef.partial"]
    fresh = tmp_path / ".c.wav.00000000.partial"
    others = [tmp_path / ".WavLM-Large.pt.partial", tmp_path / "a.wav", tmp_path / "sub" / ".hidden"]
    day_ago = time.time() - 86_400
    for path in stale + [fresh] + others:
        path.write_bytes(b"")
        if path is not fresh:
            os.utime(path, (day_ago, day_ago))
    assert remove_stale_temporaries(tmp_path, min_age_s=3600) == sorted(stale)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted([fresh] + others)
    assert remove_stale_temporaries(tmp_path, min_age_s=0) == [fresh]
