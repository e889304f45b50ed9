"""Atomic file writing: readers never see a partial file, a failed write leaves nothing behind.

Every temporary file is created beside its target as ``<prefix><8 hex digits>.partial``, where the
prefix is ``.<target name>.`` (or, for a target name so long that this would pass the file
system's 255-byte limit, ``.<16 hex digits of the name's SHA-256>.``): hidden, and ending in
`TEMP_SUFFIX`, so no folder scan takes it for audio, a checkpoint or a feature file. A run that
is killed (SIGKILL, power loss) cannot remove its temporaries; `remove_stale_temporaries`
deletes those of the targets a new run is about to write, and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".partial"
"""How the name of every temporary file made here ends."""

NAME_MAX_BYTES = 255
"""The longest file name (in bytes of its UTF-8 form) the common file systems accept."""

_TOKEN_HEX = 8
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + r"\Z", re.DOTALL)


def is_temporary(path: str | os.PathLike) -> bool:
    """True if the name is that of a temporary file made here (``.<name>.<8 hex>.partial``)."""
    return _TEMP_NAME.match(Path(path).name) is not None


def temporary_prefix(path: str | os.PathLike) -> str:
    """How the names of the temporaries of target `path` begin (see the module docstring).

    A name of up to `NAME_MAX_BYTES` bytes always gets a temporary name that fits too: targets
    whose ``.<name>.<8 hex>.partial`` would be longer use a hash of their name instead.
    """
    name = Path(path).name
    if len(name.encode("utf-8", "surrogateescape")) + 2 + _TOKEN_HEX + len(TEMP_SUFFIX) <= NAME_MAX_BYTES:
        return f".{name}."
    return f".{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}."


@contextmanager
def scratch_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty temporary file beside `path` (folders created); it is removed at exit.

    The file is created with mode 0o600 and exclusively, so concurrent writers of the same target
    never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = temporary_prefix(path)
    while True:
        tmp = path.with_name(f"{prefix}{secrets.token_hex(_TOKEN_HEX // 2)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        break
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`.

    The file gets the permissions a plain `open(path, "w")` would (umask applied); on any
    exception (KeyboardInterrupt included) the temporary file is removed and `path` is left
    untouched. The temporary's suffix is `TEMP_SUFFIX`, not the target's: writers that pick a
    format from the file name (soundfile, numpy) must be given it explicitly.
    """
    path = Path(path)
    with scratch_path(path) as tmp:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)


def remove_stale_temporaries(targets: Iterable[str | os.PathLike[str]], min_age_s: float = 3600.0) -> list[Path]:
    """Delete the temporaries an interrupted run left for `targets` (the outputs a run plans now).

    Only regular files named like a temporary of one of the targets (``temporary_prefix`` + 8 hex
    digits + `TEMP_SUFFIX`), directly beside it, and not modified for `min_age_s` are removed: no
    folder is walked, so files of other outputs, other programs or subfolders are never touched.
    A live writer modifies its temporary at every block it writes, so an age of minutes already
    tells a leftover of a killed run from a write in progress. Files that vanish meanwhile
    (another process finishing) are skipped.

    Returns:
        The files removed, sorted.
    """
    patterns: dict[Path, list[str]] = {}
    for target in targets:
        target = Path(target)
        patterns.setdefault(target.parent, []).append(re.escape(temporary_prefix(target)))
    now = time.time()
    removed = []
    for folder, prefixes in patterns.items():
        shape = re.compile(f"(?:{'|'.join(sorted(set(prefixes)))})[0-9a-f]{{{_TOKEN_HEX}}}{re.escape(TEMP_SUFFIX)}\\Z",
                           re.DOTALL)
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if not shape.match(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and now - info.st_mtime >= min_age_s:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:
                continue
    for path in removed:
        log.debug("removed stale temporary file %s", path)
    return sorted(removed)
