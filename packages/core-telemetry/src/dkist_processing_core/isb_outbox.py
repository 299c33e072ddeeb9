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

from dkist_processing_core._text_rules import MAX_SHORT_STRING_BYTES
from dkist_processing_core._text_rules import check_short_string
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

ENVELOPE_FORMAT = 1
#: Largest JSON body sent; a failure report is well under 1 KiB.
MAX_BODY_BYTES = 1 << 20
# Largest entry file read: the body (no longer in the file than on the wire) plus the envelope.
_MAX_FILE_BYTES = MAX_BODY_BYTES + 16384
# created_ns: nanoseconds since 1970 in a signed 64-bit integer (until the year 2262).
_MAX_CREATED_NS = 2**63 - 1
_FINAL_NAME = re.compile(r"^\d{20}-\d+-[0-9a-f]{32}\.json$")
_TEMP_PREFIX = ".tmp-"
# A temporary file this old belongs to a writer that died between fsync and rename.
_STALE_TEMP_SECONDS = 600.0


def default_isb_outbox_dir() -> Path:
    """``~/.local/state/dkist-processing-core/isb-outbox``, the outbox unless ``ISB_OUTBOX_DIR`` says otherwise."""
    return Path.home() / ".local" / "state" / "dkist-processing-core" / "isb-outbox"


class OutboxError(DKISTProcessingCoreError, OSError):
    """The outbox folder cannot be written (permissions, full disk, read-only file system)."""


class InvalidMessageError(DKISTProcessingCoreError, ValueError):
    """A message that no broker can ever accept; the text names the field and the limit."""


# ------------------------------------------------------------------------------- the envelope
def check_envelope(envelope: object) -> dict[str, Any]:
    """Return ``envelope`` if it can be stored and sent, else raise :class:`InvalidMessageError`.

    ``format`` must be 1 and ``body`` a JSON object in strict JSON (no NaN or infinity, valid
    Unicode) of at most :data:`MAX_BODY_BYTES` bytes as sent. Optional fields: ``message_id``
    (1 to 255 bytes of UTF-8), ``created_ns`` (an integer from 0 to 2**63 - 1), ``exchange`` and
    ``routing_key`` (at most 255 bytes of UTF-8; kept for inspection). Other fields are ignored.
    """
    if not isinstance(envelope, dict):
        raise InvalidMessageError(f"the envelope is a {type(envelope).__name__}, not a JSON object")
    version = envelope.get("format")
    if type(version) is not int or version != ENVELOPE_FORMAT:
        raise InvalidMessageError(
            f"field 'format' is {version!r:.40}; this version reads format {ENVELOPE_FORMAT}"
        )
    body = envelope.get("body")
    if not isinstance(body, dict):
        raise InvalidMessageError(f"field 'body' must be a JSON object, not {type(body).__name__}")
    try:
        sent = json.dumps(body, allow_nan=False)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # as stored: a lone surrogate fails
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidMessageError(f"field 'body' is not strict JSON: {error}") from None
    if len(sent) > MAX_BODY_BYTES:
        raise InvalidMessageError(
            f"field 'body' is {len(sent)} bytes of JSON; at most {MAX_BODY_BYTES} are sent"
        )
    for name in ("message_id", "exchange", "routing_key"):
        try:
            if envelope.get(name) is not None:
                check_short_string(
                    envelope[name], f"field {name!r}", allow_empty=name != "message_id"
                )
        except ValueError as error:  # not text, not UTF-8, or too long
            raise InvalidMessageError(str(error)) from None
    created_ns = envelope.get("created_ns")
    if created_ns is not None and not (
        type(created_ns) is int and 0 <= created_ns <= _MAX_CREATED_NS
    ):
        raise InvalidMessageError(
            "field 'created_ns' must be an integer from 0 to 2**63 - 1 (nanoseconds since 1970), "
            f"got {created_ns!r:.40}"
        )
    return envelope


# ------------------------------------------------------------------------------- the folder
@dataclass
class ClaimedMessage:
    """A message file this process holds the claim on; :meth:`done` deletes it."""

    path: Path
    envelope: dict[str, Any]
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

    def put(self, envelope: dict[str, Any]) -> Path:
        """Store one message durably and return its file.

        Raises :class:`InvalidMessageError` (and writes nothing) for an envelope no broker accepts.
        """
        data = json.dumps(check_envelope(envelope), ensure_ascii=False).encode("utf-8")
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex}.json"
        final, temp = self.directory / name, self.directory / f"{_TEMP_PREFIX}{name}"
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._check_folder()
            with open(temp, "xb", opener=lambda path, flags: os.open(path, flags, 0o600)) as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
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
        if it is another user's, or if it can never be sent (it is then moved to ``rejected/``)."""
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
            yield self._lock_and_read(path, fd)
        finally:
            os.close(fd)  # releases the lock

    def _lock_and_read(self, path: Path, fd: int) -> ClaimedMessage | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        except OSError as error:  # e.g. ENOLCK: no locks on this file system
            logger.error(
                "cannot lock outbox file %s (%s); put ISB_OUTBOX_DIR on a local file system",
                path,
                error,
            )
            return None
        try:
            if not os.path.samestat(os.stat(path), os.fstat(fd)):
                return None  # the name is another file's now
        except FileNotFoundError:
            return None  # delivered and removed by another reader meanwhile
        foreign = _not_ours(os.fstat(fd))
        if foreign is not None:
            self.skipped.add(path)
            logger.error(
                "outbox entry %s is never sent by this user, because %s: only this user's own "
                "entries are published with its credentials; it is left untouched (remove it, or "
                "flush it as its owner)",
                path,
                foreign,
            )
            return None
        try:
            envelope = check_envelope(_read_entry(fd))
        except InvalidMessageError as error:
            self.reject(path, str(error))
            return None
        return ClaimedMessage(path, envelope, self)

    def sync(self) -> None:
        """Make deletions durable (one directory fsync after a batch of deliveries)."""
        if self._dirty:
            self._dirty = False
            with contextlib.suppress(OSError):
                self._fsync_directory()

    def recover_stale_temporaries(self) -> int:
        """Give final names to complete temporary files whose writer died before the rename."""
        try:
            names = [name for name in os.listdir(self.directory) if name.startswith(_TEMP_PREFIX)]
        except OSError:
            return 0
        recovered = 0
        for name in names:
            temp = self.directory / name
            try:
                status = temp.lstat()
                if time.time() - status.st_mtime < _STALE_TEMP_SECONDS or _not_ours(status):
                    continue
                fd = _open_entry(temp)
                try:
                    check_envelope(_read_entry(fd))
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
        folder = self.directory / "rejected"
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


def _read_entry(fd: int) -> object:
    """The JSON value of an entry file; InvalidMessageError if it is too large or not JSON."""
    try:  # the fd stays open: it holds the claim
        with open(fd, "rb", closefd=False) as file:
            data = file.read(_MAX_FILE_BYTES + 1)
    except OSError as error:
        raise InvalidMessageError(f"the file cannot be read ({error})") from None
    if len(data) > _MAX_FILE_BYTES:
        raise InvalidMessageError(f"the file is larger than {_MAX_FILE_BYTES} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidMessageError("the file's JSON is nested too deeply") from None
    except ValueError as error:  # UnicodeDecodeError included
        raise InvalidMessageError(f"the file is not JSON ({error})") from None
