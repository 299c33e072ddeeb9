"""Child processes of the runners: each in a session of its own, read with a bounded line buffer,
stopped together with everything it started, and signals to the runner passed on to them.

A task (or the Airflow child of ``--engine airflow``) runs in a new session and process group,
under a guard (:mod:`._guard`) that leads the group and kills all of it when the runner dies, even
by SIGKILL. A signal for the group reaches the processes the task started too, and a Ctrl-C in the
terminal reaches only the runner, which decides what its children get: :func:`signal_group`
(SIGINT, SIGTERM or SIGHUP as received), then after a grace period SIGKILL for whatever is left.
:func:`forwarded_signals` installs the runner's handlers for SIGINT, SIGTERM and SIGHUP (in the
main thread only, and not for a signal that was ignored when the runner started), and puts the
old ones back afterwards.

:func:`follow` reads a child's output until the child itself has ended, not until every process
holding the output has: when the group leader exits, what is left of its group is killed, and
what is still written is read for at most :data:`DRAIN_SECONDS` (a process that left the group
can hold the output open for ever).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

__all__ = [
    "DRAIN_SECONDS",
    "FORWARDED_SIGNALS",
    "GRACE_SECONDS",
    "LINE_LIMIT",
    "Ended",
    "LineClipper",
    "Pieces",
    "follow",
    "forwarded_signals",
    "read_pieces",
    "signal_group",
    "start_in_session",
    "stop_group",
]

#: Signals the runner passes on to its children: Ctrl-C, a polite kill, a closed terminal.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How long children get to end after the forwarded signal before they are killed.
GRACE_SECONDS = 10.0
#: Largest piece of a line held in memory; longer lines are passed on in pieces of this size.
LINE_LIMIT = 65536
#: How long output is still read once the child has ended and the rest of its group was killed.
DRAIN_SECONDS = 2.0
_GUARD = Path(__file__).with_name("_guard.py")


def start_in_session(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session under its guard (the session and group leader, which
    exits as ``command`` does and kills the group if the runner dies); its output is a pipe."""
    guard = [sys.executable, "-I", "-S", str(_GUARD), f"--parent={os.getpid()}", "--"]
    return subprocess.Popen(
        [*guard, *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def read_pieces(stream: IO[bytes], limit: int = LINE_LIMIT) -> Iterator[bytes]:
    """The stream's lines, each in pieces of at most ``limit`` bytes (the last ends with a newline)."""
    while piece := stream.readline(limit):
        yield piece


class Pieces:
    """Splits a byte stream into the pieces :func:`read_pieces` gives: lines, each in pieces of at
    most ``limit`` bytes (the last ends with a newline)."""

    def __init__(self, limit: int = LINE_LIMIT) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The pieces ``data`` completes."""
        self._buffer += data
        while self._buffer:
            end = self._buffer.find(b"\n", 0, self.limit)
            if end < 0 and len(self._buffer) < self.limit:
                return
            size = end + 1 if end >= 0 else self.limit
            piece = bytes(self._buffer[:size])
            del self._buffer[:size]
            yield piece

    def finish(self) -> Iterator[bytes]:
        """What is left at the end of the stream (a last line without its newline)."""
        if self._buffer:
            yield bytes(self._buffer)
            self._buffer.clear()


class LineClipper:
    """Turns the pieces of :func:`read_pieces` into lines to show: a line longer than one piece
    shows its first piece and ``note(bytes left out)`` (the log keeps all of it)."""

    def __init__(self, note: Callable[[int], str]) -> None:
        self.note = note
        self._head: bytes | None = None  # first piece of an unfinished long line
        self._left_out = 0

    def feed(self, piece: bytes) -> str | None:
        """The line to show once ``piece`` completes one, else None."""
        complete = piece.endswith(b"\n")
        body = piece[:-1] if complete else piece
        if self._head is None and complete:
            return body.decode("utf-8", "replace")
        if self._head is None:
            self._head, self._left_out = body, 0
            return None
        self._left_out += len(body)
        return self.finish() if complete else None

    def finish(self) -> str | None:
        """The unfinished line, if any (at the end of the stream)."""
        if self._head is None:
            return None
        head, left_out = self._head.decode("utf-8", "replace"), self._left_out
        self._head, self._left_out = None, 0
        return head + self.note(left_out) if left_out else head


@dataclass(frozen=True)
class Ended:
    """How a child followed by :func:`follow` ended."""

    status: int  # as Popen.returncode: the exit status, or minus the signal that killed it
    at: float  # epoch seconds when its exit was seen
    cut: bool  # its output was still held open by a process outside its group: no longer read


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` has exited, without reaping it (its pid, the group's id, stays taken)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped meanwhile (stop_group)
        return True


def follow(
    process: subprocess.Popen[bytes],
    on_piece: Callable[[bytes], None],
    *,
    linger: Callable[[], float] = lambda: 0.0,
) -> Ended:
    """Pass the output of ``process`` to ``on_piece`` (in :class:`Pieces`) until ``process`` has
    exited. Then kill what is left of its group: at once, or after ``linger()`` seconds unless the
    output has closed by then (a run that is stopping gives the group its grace period); read on
    until the output closes, for at most :data:`DRAIN_SECONDS`. ``process.stdout`` is closed; if
    anything fails (``on_piece`` raises), the group is killed and the leader reaped first."""
    try:
        return _follow(process, on_piece, linger)
    except BaseException:
        signal_group(process, signal.SIGKILL)
        process.wait()
        raise


def _follow(
    process: subprocess.Popen[bytes], on_piece: Callable[[bytes], None], linger: Callable[[], float]
) -> Ended:
    assert process.stdout is not None
    pipe = process.stdout.fileno()
    os.set_blocking(pipe, False)
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):  # Linux 5.3+: readable once it exits
        pidfd = os.pidfd_open(process.pid)
    pieces = Pieces()
    exited_at: float | None = None
    kill_at: float | None = None  # while what is left of the group lingers
    give_up = 0.0
    is_open = True
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while True:
                timeout: float | None = None if pidfd is not None else 0.1  # (no pidfd: poll)
                if exited_at is not None:
                    now = time.monotonic()
                    if kill_at is not None and now >= kill_at:
                        signal_group(process, signal.SIGKILL)
                        kill_at, give_up = None, now + DRAIN_SECONDS
                    if not is_open or (kill_at is None and now >= give_up):
                        break  # (the output still open: held by a process that left the group)
                    timeout = (give_up if kill_at is None else kill_at) - now
                ready = selector.select(timeout)
                if is_open and any(key.fd == pipe for key, _ in ready):
                    is_open = _read(pipe, pieces, on_piece, selector)
                if exited_at is None and _has_exited(process):
                    exited_at, kill_at = time.time(), time.monotonic() + max(0.0, linger())
                    if pidfd is not None:
                        selector.unregister(pidfd)
        finally:
            if pidfd is not None:
                os.close(pidfd)
            for piece in pieces.finish():
                on_piece(piece)
            process.stdout.close()
    if kill_at is not None:  # the group ended its output while it lingered; any rest goes now
        signal_group(process, signal.SIGKILL)
    return Ended(process.wait(), exited_at or time.time(), cut=is_open)


def _read(
    pipe: int,
    pieces: Pieces,
    on_piece: Callable[[bytes], None],
    selector: selectors.BaseSelector,
) -> bool:
    """Read what the pipe holds now into ``on_piece``; False at its end (then unregistered)."""
    try:
        data = os.read(pipe, LINE_LIMIT)
    except BlockingIOError:
        return True
    if not data:
        selector.unregister(pipe)
        return False
    for piece in pieces.feed(data):
        on_piece(piece)
    return True


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the process group ``process`` leads (if any of it is left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_group(
    process: subprocess.Popen[bytes],
    signum: int,
    hurry: Callable[[], bool],
) -> None:
    """Send ``signum`` to the group ``process`` leads, give it :data:`GRACE_SECONDS` to end (until
    ``hurry()`` says stop waiting), then kill whatever is left of the group and reap the leader."""
    signal_group(process, signum)
    give_up = time.monotonic() + GRACE_SECONDS
    while not hurry() and time.monotonic() < give_up and process.poll() is None:
        time.sleep(0.1)
    signal_group(process, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def forwarded_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """While active, SIGINT, SIGTERM and SIGHUP call ``on_signal(signum)`` instead of their default.

    Only in the main thread (elsewhere Python cannot install handlers, and this does nothing), and
    never for a signal that was ignored when the runner started (a background job keeps ignoring
    Ctrl-C).
    """
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in FORWARDED_SIGNALS:
                if (handler := signal.getsignal(signum)) != signal.SIG_IGN:
                    previous[signum] = handler
                    signal.signal(signum, lambda number, frame: on_signal(number))
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
