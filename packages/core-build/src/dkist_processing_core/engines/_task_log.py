"""A task's log file for the local runner: it takes what it can and never stops the run.

:class:`TaskLog` appends a task's output to its log. When a write fails (a full disk above all:
``ENOSPC``, a quota, an I/O error) the log is truncated: it ends with one line that says so and
why, written where the failed output would have gone, and the rest of the attempt's output is only
counted (:attr:`TaskLog.missing`; the terminal still shows it). On a full disk there is no room
for that line, so the log's own last lines are removed (back to a line boundary, a block or more)
to make room, and counted too; never the header line of the attempt or what earlier attempts
wrote, and nothing outside the task's own log. A log that cannot even be opened is reported the
same way, without the line.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["TaskLog"]

#: Room first made for the line that says the log is truncated (more than one disk block).
_FIRST_CUT = 8192
#: At most this much of the log is removed to make room for that line.
_MOST_CUT = 1 << 20
#: Write errors that removing part of the log can help.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _write(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write all of ``data``: how much was written, and the error that stopped it (if any)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError as error:
            return len(data) - len(view), error
    return len(data), None


class TaskLog:
    """Appends one attempt's ``header`` line and output to a task's log file; write errors end
    the log (see the module docstring). ``on_error(reason)`` is called once, when it first fails.
    """

    def __init__(self, path: Path, header: str, on_error: Callable[[str], None]) -> None:
        self.path = path
        self.on_error = on_error
        self.reason: str | None = None  # why the log is truncated (None: it is complete)
        self.missing = 0  # bytes of output that are not in the log
        self._fd: int | None = None
        self._keep = 0  # what is never removed: earlier attempts and this one's header
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self._keep = os.fstat(self._fd).st_size
        except OSError as error:
            self._fail(f"cannot open it: {error.strerror or error}")
        self.write(header.encode("utf-8") + b"\n")
        if self._fd is not None and self.reason is None:
            self._keep = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        """Append ``data``, or count it once the log is truncated."""
        if self._fd is None or self.reason is not None:
            self.missing += len(data)
            return
        written, error = _write(self._fd, data)
        if error is not None:
            self.missing += len(data) - written
            self._fail(error.strerror or str(error))
            self._end_with_a_line(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _fail(self, reason: str) -> None:
        self.reason = reason
        self.on_error(reason)

    def _end_with_a_line(self, fd: int) -> None:
        """Write the line that says the log is truncated, removing its last lines if need be."""
        end = size = os.fstat(fd).st_size
        cut = 0
        try:
            while True:
                line = f"--- log truncated by the runner: {self.reason}; the rest of this attempt's output is not in this log"
                if size < end:
                    line += f", nor the {end - size} bytes before this line (removed to make room for it)"
                text = line.encode("utf-8") + b"\n"
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    text = b"\n" + text
                error = _write(fd, text)[1]
                if error is None:
                    return
                os.ftruncate(fd, size)  # no half line
                cut = cut * 2 if cut else _FIRST_CUT
                if error.errno not in _NO_ROOM or size <= self._keep or cut > _MOST_CUT:
                    return  # the summary says it
                new_size = max(self._keep, _line_start_before(fd, max(0, end - cut)))
                os.ftruncate(fd, new_size)
                size = new_size
        except OSError:
            pass  # the summary says it
        finally:
            self.missing += end - size


def _line_start_before(fd: int, offset: int) -> int:
    """The start of the line that holds ``offset`` (``offset`` itself if that is 64 KiB back or more)."""
    start = max(0, offset - 65536)
    newline = os.pread(fd, offset - start, start).rfind(b"\n")
    if newline >= 0:
        return start + newline + 1
    return 0 if start == 0 else offset
