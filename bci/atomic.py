"""The one atomic file writer: a file is either absent, the old one, or complete, never half.

:func:`atomic_write` writes through a temporary file in the target's directory (``mkstemp``),
flushes and fsyncs it, gives it the permissions a plain ``open`` would (``0o666 & ~umask``;
``mkstemp`` creates ``0600``), renames it over the target (``os.replace``) and fsyncs the
directory so the rename itself survives a power cut. Any failure, including
``KeyboardInterrupt``, removes the temporary file and leaves the target as it was.

Checkpoints, sessions, calibration reports, NIR graphs, the CLI's JSON results and the
liblsl config are written with it. Two writers stream into a ``.part`` file and rename it
themselves, then call :func:`fsync_directory`: the XDF recorder (it writes for minutes) and a
model upload (named by its digest, known once the last byte is read).
It lives in ``bci`` (stdlib only) so that ``bci``, ``streams`` and ``calibration`` can all
use it without importing upward.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "current_umask", "fsync_directory", "write_bytes", "write_text"]

_CHUNK_BYTES = 1 << 20  # a large file is written in pieces, not one syscall


def fsync_directory(directory: Path) -> None:
    """Persist a rename inside ``directory`` (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file whose contents replace ``path`` when the block ends without error.

    Raises ``FileNotFoundError`` if the directory does not exist (before anything is written).
    """
    path = Path(path)
    parent = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o666 & ~current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(parent)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (in 1 MiB pieces); returns ``path``."""
    view = memoryview(data)
    with atomic_write(path) as fh:
        for start in range(0, len(view), _CHUNK_BYTES):
            fh.write(view[start : start + _CHUNK_BYTES])
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))
