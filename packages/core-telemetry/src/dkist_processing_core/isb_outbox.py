"""Durable local outbox of interservice-bus messages: one JSON file per message.

Writing: the message goes to a hidden temporary file, which is fsync'd, renamed atomically to its
final name and the folder fsync'd, so a file with a final name is always complete. Final names
(``<time_ns>-<pid>-<uuid>.json``) sort in arrival order.

Reading: many threads and processes may drain the same folder at once. A reader claims a file
with a non-blocking ``flock`` on it and checks that the name still points to the inode it locked
(another reader may have delivered and removed it meanwhile). Locks vanish with the process that
holds them, so a crashed reader never strands a message. A file is deleted only by the holder of
its claim, after the broker confirmed it: a message can be sent twice, never lost.

Checking: every envelope is checked when it is written (:meth:`Outbox.put` refuses it with
:class:`InvalidMessageError`) and again when it is read (:func:`check_envelope`). An entry that no
broker can ever accept (unparseable, a field out of range, a message id over 255 bytes, a body
over 1 MiB) or that is not a plain file (a directory, a FIFO, a symbolic link with an entry's name)
is moved to ``rejected/`` with one ERROR line saying where and why. It is never deleted, and it
never holds back the entries after it.

Ownership: an entry is sent only if it is a plain file of this user's with one link, which is
what :meth:`Outbox.put` makes, so an entry another user planted in a folder they can write to is
never published with this user's credentials. Such an entry is left where it is, untouched, with
one ERROR line. A folder :meth:`Outbox.put` creates is ``0700`` and its entries ``0600``; a folder
that belongs to someone else or that others can write to gets a WARNING (our own reports are
still kept there: nothing is lost).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dkist_processing_core._isb_envelope import ENVELOPE_FORMAT
from dkist_processing_core._isb_envelope import MAX_BODY_BYTES
from dkist_processing_core._isb_envelope import MAX_FILE_BYTES
from dkist_processing_core._isb_envelope import MAX_SHORT_STRING_BYTES
from dkist_processing_core._isb_envelope import InvalidMessageError
from dkist_processing_core._isb_envelope import check_envelope
from dkist_processing_core._isb_envelope import parse_entry
from dkist_processing_core.errors import DKISTProcessingCoreError

__all__ = [
    "ENVELOPE_FORMAT",
    "MAX_BODY_BYTES",
    "MAX_SHORT_STRING_BYTES",
    "ClaimedMessage",
    "InvalidMessageError",
    "Outbox",
    "OutboxError",
    "check_envelope",
    "default_isb_outbox_dir",
]

logger = logging.getLogger("dkist_processing_core.isb")

_FINAL_NAME = re.compile(r"^\d{20}-\d+-[0-9a-f]{32}\.json$")
_TEMP_PREFIX = ".tmp-"
_REJECTED = "rejected"
# A temporary file this old belongs to a writer that died between fsync and rename.
_STALE_TEMP_SECONDS = 600.0


def default_isb_outbox_dir() -> Path:
    """``~/.local/state/dkist-processing-core/isb-outbox``, the outbox unless ``ISB_OUTBOX_DIR`` says otherwise."""
    return Path.home() / ".local" / "state" / "dkist-processing-core" / "isb-outbox"


class OutboxError(DKISTProcessingCoreError, OSError):
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
        self._folder_checked = False
        #: Entries this object never sends: another user's, or unsendable and not movable aside.
        self.skipped: set[Path] = set()

    def __repr__(self) -> str:
        return f"Outbox({str(self.directory)!r})"

    # ----------------------------------------------------------------------------- writing
    def put(self, envelope: dict[str, Any]) -> Path:
        """Store one message durably and return its file.

        Raises :class:`InvalidMessageError` (and writes nothing) for an envelope no broker accepts.
        """
        data = json.dumps(check_envelope(envelope), ensure_ascii=False).encode("utf-8")
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex}.json"
        final = self.directory / name
        temp = self.directory / f"{_TEMP_PREFIX}{name}"
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._check_folder()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
        self._check_folder()
        return [self.directory / name for name in sorted(names) if _FINAL_NAME.match(name)]

    def __len__(self) -> int:
        return len(self.pending())

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[ClaimedMessage | None]:
        """Claim ``path`` for delivery; yields ``None`` if it is gone or claimed by someone else,
        or if it can never be sent (it is then moved to ``rejected/``)."""
        try:
            fd = _open_entry(path)
        except FileNotFoundError:
            yield None
            return
        except OSError as error:  # a directory, a symbolic link, a FIFO: never a message
            self.reject(path, f"it cannot be read as a plain file ({error.strerror or error})")
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
            foreign = _not_ours(os.fstat(fd))
            if foreign is not None:
                self._skip_foreign(path, foreign)
                yield None
                return
            try:
                envelope = check_envelope(parse_entry(_read_entry(fd)))
            except InvalidMessageError as error:
                self.reject(path, str(error))
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
                status = temp.lstat()
                if now - status.st_mtime < _STALE_TEMP_SECONDS or _not_ours(status):
                    continue
                fd = _open_entry(temp)
                try:
                    check_envelope(parse_entry(_read_entry(fd)))
                finally:
                    os.close(fd)
                # A clock set before 1970 must not give a name that sorts out of sight.
                stamp = max(0, status.st_mtime_ns)
                final = self.directory / f"{stamp:020d}-{os.getpid()}-{uuid.uuid4().hex}.json"
                os.rename(temp, final)
            except InvalidMessageError:
                logger.warning("incomplete outbox file %s left for inspection", temp)
                continue
            except OSError:
                continue
            recovered += 1
            logger.warning("recovered outbox message %s from an interrupted write", final)
        if recovered:
            self._fsync_directory()
        return recovered

    def reject(self, path: Path, reason: str) -> None:
        """Move an entry that can never be sent to ``rejected/``, saying why; never delete it."""
        folder = self.directory / _REJECTED
        target = folder / path.name
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            if folder.is_symlink():
                raise OSError(0, f"{folder} is a symbolic link")
            if os.path.lexists(target):
                target = folder / f"{path.name}.{uuid.uuid4().hex}"
            os.rename(path, target)
        except FileNotFoundError:
            return  # another drainer moved it first
        except OSError as error:
            self.skipped.add(path)
            logger.error(
                "outbox entry %s can never be sent, because %s; it cannot be moved aside (%s), "
                "so it is skipped",
                path,
                reason,
                error,
            )
            return
        logger.error(
            "outbox entry %s can never be sent, because %s; moved to %s for inspection",
            path,
            reason,
            target,
        )

    def _skip_foreign(self, path: Path, why: str) -> None:
        self.skipped.add(path)
        logger.error(
            "outbox entry %s is never sent by this user, because %s: only this user's own entries "
            "are published with its credentials; it is left untouched (remove it, or flush it as "
            "its owner)",
            path,
            why,
        )

    def _check_folder(self) -> None:
        """Warn (once per object) when the folder is another user's or others can write to it."""
        if self._folder_checked:
            return
        self._folder_checked = True
        try:
            status = os.stat(self.directory)
        except OSError:
            return
        problems = []
        if status.st_uid != os.geteuid():
            problems.append(f"belongs to user {status.st_uid}, not to this user ({os.geteuid()})")
        if status.st_mode & 0o022:
            problems.append(f"is writable by other users (mode {stat.S_IMODE(status.st_mode):04o})")
        if problems:
            logger.warning(
                "ISB outbox folder %s %s: other users can remove this user's pending reports or "
                "add entries (never sent: only this user's own are); set ISB_OUTBOX_DIR to a "
                "folder of this user's with mode 0700",
                self.directory,
                " and ".join(problems),
            )

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_entry(path: Path) -> int:
    """Open an entry for reading and locking; OSError for anything but a plain file."""
    # Never follow a symbolic link, never block on a FIFO. Read-write where allowed: NFS
    # emulates flock with fcntl locks, which need it for LOCK_EX.
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, os.O_RDWR | flags)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY | flags)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(0, "a FIFO" if stat.S_ISFIFO(mode) else "not a plain file")
    return fd


def _not_ours(status: os.stat_result) -> str | None:
    """Why an entry is not one this user's writer made, or None if it is."""
    if status.st_uid != os.geteuid():
        return f"it belongs to user {status.st_uid}, not to this user ({os.geteuid()})"
    if status.st_nlink != 1:
        return f"it has {status.st_nlink} links (an entry this outbox writes has one)"
    return None


def _same_file(path: Path, fd: int) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


def _read_entry(fd: int) -> bytes:
    """The file's bytes; InvalidMessageError if it is larger than any valid entry."""
    chunks = []
    size = 0
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise InvalidMessageError(f"the file is larger than {MAX_FILE_BYTES} bytes")
    except OSError as error:
        raise InvalidMessageError(f"the file cannot be read ({error})") from None
    return b"".join(chunks)
