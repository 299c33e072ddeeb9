"""Replace a file at once, so that a reader sees the old content or the new, never a part of it.

The one helper for files others read meanwhile: exported DAGs and notebooks, the worker cache's
markers and interpreter facts. Standard library only: the worker program uses it. (The ISB
outbox writes its messages its own way, under its flock protocol.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["fsync_folder", "write_atomically"]


def write_atomically(
    path: Path, data: bytes | str, *, mode: int = 0o644, durable: bool = False
) -> Path:
    """Make ``data`` (text as UTF-8) the content of ``path`` through a temporary file in its
    folder; ``durable`` also flushes the file and the folder to disk (survives a power cut)."""
    content = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(content)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)
    return path


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename, a new symbolic link) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
