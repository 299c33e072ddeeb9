"""Durable local outbox of interservice-bus messages: one JSON file per message.

Writing: the message goes to a hidden temporary file, which is fsync'd, renamed atomically to its
final name and the folder fsync'd, so a file with a final name is always complete. Final names
(``<time_ns>-<pid>-<uuid>.json``) sort in arrival order.

Reading: many threads and processes may drain the same folder at once. A reader claims a file
with a non-blocking ``flock`` on it and checks that the name still points to the inode it locked
(another reader may have delivered and removed it meanwhile). Locks vanish with the process that
holds them, so a crashed reader never strands a message. A file is deleted only by the holder of
its claim, after the broker confirmed it: a message can be sent twice, never lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ClaimedMessage", "Outbox", "OutboxError", "default_isb_outbox_dir"]

logger = logging.getLogger("dkist_processing_core.isb")

ENVELOPE_FORMAT = 1
_FINAL_NAME = re.compile(r"^\d{20}-\d+-[0-9a-f]{32}\.json$")
_TEMP_PREFIX = ".tmp-"
_REJECTED = "rejected"
# A temporary file this old belongs to a writer that died between fsync and rename.
_STALE_TEMP_SECONDS = 600.0


def default_isb_outbox_dir() -> Path:
    """``~/.local/state/dkist-processing-core/isb-outbox``, the outbox unless ``ISB_OUTBOX_DIR`` says otherwise."""
    return Path.home() / ".local" / "state" / "dkist-processing-core" / "isb-outbox"


class OutboxError(OSError):
    """The outbox folder cannot be written (permissions, full disk, read-only file system)."""


@dataclass
class ClaimedMessage:
    """A message file this process holds the claim on; :meth:`done` deletes it."""

    path: Path
    envelope: dict[str, Any]
    _fd: int
    _outbox: Outbox

    def done(self) -> None:
        """Delete the file: call only after the broker confirmed the message."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._outbox._dirty = True


class Outbox:
    """A folder of pending messages shared by every producer on this machine."""

    def __init__(self, directory: os.PathLike[str] | str) -> None:
        self.directory = Path(directory)
        self._dirty = False

    def __repr__(self) -> str:
        return f"Outbox({str(self.directory)!r})"

    # ----------------------------------------------------------------------------- writing
    def put(self, envelope: dict[str, Any]) -> Path:
        """Store one message durably and return its file."""
        data = json.dumps(envelope, ensure_ascii=False).encode("utf-8")
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex}.json"
        final = self.directory / name
        temp = self.directory / f"{_TEMP_PREFIX}{name}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.rename(temp, final)
            except FileNotFoundError:
                # Only possible if a drainer took this temp file for a dead writer's: it now
                # lives under a final name of its own, so the message is safe.
                logger.warning("outbox file %s was recovered by another process", temp)
            self._fsync_directory()
        except OSError as error:
            raise OutboxError(
                f"cannot write to the interservice-bus outbox {self.directory}: {error}; "
                "set ISB_OUTBOX_DIR to a writable folder"
            ) from error
        return final

    # ----------------------------------------------------------------------------- reading
    def pending(self) -> list[Path]:
        """Message files waiting in the outbox, oldest first."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.directory / name for name in sorted(names) if _FINAL_NAME.match(name)]

    def __len__(self) -> int:
        return len(self.pending())

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[ClaimedMessage | None]:
        """Claim ``path`` for delivery; yields ``None`` if it is gone or claimed by someone else."""
        try:
            fd = _open_for_lock(path)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            except OSError as error:  # e.g. ENOLCK: no locks on this file system
                logger.error(
                    "cannot lock outbox file %s (%s); put ISB_OUTBOX_DIR on a local file system",
                    path,
                    error,
                )
                yield None
                return
            if not _same_file(path, fd):  # delivered and removed by another reader meanwhile
                yield None
                return
            envelope = _read_envelope(fd)
            if envelope is None:
                self._reject(path)
                yield None
                return
            yield ClaimedMessage(path=path, envelope=envelope, _fd=fd, _outbox=self)
        finally:
            os.close(fd)  # releases the lock

    def sync(self) -> None:
        """Make deletions durable (one directory fsync after a batch of deliveries)."""
        if self._dirty:
            self._dirty = False
            with contextlib.suppress(OSError):
                self._fsync_directory()

    def recover_stale_temporaries(self) -> int:
        """Give final names to complete temporary files whose writer died before the rename."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0
        recovered = 0
        now = time.time()
        for name in names:
            if not name.startswith(_TEMP_PREFIX):
                continue
            temp = self.directory / name
            try:
                stat = temp.stat()
                if now - stat.st_mtime < _STALE_TEMP_SECONDS:
                    continue
                with open(temp, "rb") as handle:
                    envelope = _parse(handle.read())
                if envelope is None:
                    logger.warning("incomplete outbox file %s left for inspection", temp)
                    continue
                final = self.directory / (
                    f"{stat.st_mtime_ns:020d}-{os.getpid()}-{uuid.uuid4().hex}.json"
                )
                os.rename(temp, final)
            except OSError:
                continue
            recovered += 1
            logger.warning("recovered outbox message %s from an interrupted write", final)
        if recovered:
            self._fsync_directory()
        return recovered

    def _reject(self, path: Path) -> None:
        """Move an unreadable file aside so it does not block the queue; never delete it."""
        target = self.directory / _REJECTED / path.name
        try:
            target.parent.mkdir(exist_ok=True)
            os.rename(path, target)
        except OSError as error:
            logger.error(
                "outbox file %s is not a valid message and cannot be moved: %s", path, error
            )
            return
        logger.error(
            "outbox file %s is not a valid message; moved to %s for inspection", path, target
        )

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_for_lock(path: Path) -> int:
    # Read-write where allowed: NFS emulates flock with fcntl locks, which need it for LOCK_EX.
    try:
        return os.open(path, os.O_RDWR)
    except PermissionError:
        return os.open(path, os.O_RDONLY)


def _same_file(path: Path, fd: int) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


def _read_envelope(fd: int) -> dict[str, Any] | None:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return _parse(b"".join(chunks))


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        envelope = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(envelope, dict) or envelope.get("format") != ENVELOPE_FORMAT:
        return None
    if not isinstance(envelope.get("body"), dict):
        return None
    return envelope
