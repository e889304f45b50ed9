"""Atomic file writing: readers never see a partial file, a failed write leaves nothing behind.

Every temporary file is created beside its target as ``.<target name>.<8 hex digits>.partial``:
hidden, and ending in `TEMP_SUFFIX`, so no folder scan takes it for audio, a checkpoint or a
feature file. A run that is killed (SIGKILL, power loss) cannot remove its temporary;
`remove_stale_temporaries` deletes those left behind.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".partial"
"""How the name of every temporary file made here ends."""

_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + r"\Z", re.DOTALL)


def is_temporary(path: str | os.PathLike) -> bool:
    """True if the name is that of a temporary file made here (``.<name>.<8 hex>.partial``)."""
    return _TEMP_NAME.match(Path(path).name) is not None


@contextmanager
def scratch_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty temporary file beside `path` (folders created); it is removed at exit.

    The file is created with mode 0o600 and exclusively, so concurrent writers of the same target
    never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
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


def remove_stale_temporaries(folder: str | os.PathLike[str], min_age_s: float = 3600.0) -> list[Path]:
    """Delete the temporary files made here under `folder` (recursively) not modified for `min_age_s`.

    A live writer modifies its temporary at every block it writes, so an age of minutes already
    tells a leftover of a killed run from a write in progress. Symbolic links to folders are not
    followed; files that vanish meanwhile (another process finishing) are skipped.

    Returns:
        The files removed, sorted.
    """
    now = time.time()
    removed = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if not is_temporary(name):
                continue
            path = Path(dirpath) / name
            try:
                if now - path.lstat().st_mtime >= min_age_s:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
    for path in removed:
        log.debug("removed stale temporary file %s", path)
    return sorted(removed)
