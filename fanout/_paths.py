"""The files of ``fanout run``: one path must never serve two roles.

``fanout run same.jsonl -o same.jsonl`` would truncate its own input, and ``-o x --journal x``
would write the output over the database. Paths are compared as the files they name (device and
inode, so symlinks and hard links are seen through), or, for a file that does not exist yet, as
resolved paths. ``-`` is compared through the file descriptor behind it, so
``fanout run - -o out.jsonl < out.jsonl`` is caught too.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping

from ._exceptions import ConfigError

__all__ = ["check_distinct"]

_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _identity(path: str, descriptor: int | None) -> tuple[str, object] | None:
    """What to compare for ``path``: its file (device, inode) when it exists, else its resolved path."""
    try:
        info = os.fstat(descriptor) if path == "-" and descriptor is not None else os.stat(path)
    except OSError:
        return None if path == "-" else ("path", os.path.realpath(path))
    if path == "-" and not stat.S_ISREG(info.st_mode):
        return None  # a terminal or a pipe: nothing to overwrite
    return ("file", (info.st_dev, info.st_ino))


def _descriptor(stream_name: str) -> int | None:
    stream = getattr(sys, stream_name, None)
    try:
        return stream.fileno() if stream is not None else None
    except (OSError, ValueError):
        return None


def check_distinct(roles: Mapping[str, str | None]) -> None:
    """Raise ``ConfigError`` when two roles name the same file.

    ``roles`` maps a role as the user knows it (``"the input"``, ``"-o/--output"``,
    ``"--journal"``) to its path (or ``None`` when the role is not used). The journal's SQLite side
    files count as the journal.
    """
    seen: dict[tuple[str, object], str] = {}
    for role, path in roles.items():
        if path is None:
            continue
        descriptor = _descriptor("stdin" if role == "the input" else "stdout") if path == "-" else None
        names = [path]
        if role == "--journal":
            names += [path + suffix for suffix in _SQLITE_SIDE_FILES]
        for name in names:
            identity = _identity(name, descriptor)
            if identity is None:
                continue
            other = seen.get(identity)
            if other is not None and other != role:
                shown = "standard input/output" if path == "-" else repr(path)
                raise ConfigError(
                    f"{role} and {other} are the same file ({shown}); "
                    f"{role} would overwrite {other}: give each its own path"
                )
            seen[identity] = role
