"""Child processes of the runners: each in a session of its own, read with a bounded line buffer,
stopped together with everything it started, and signals to the runner passed on to them.

A task (or the Airflow child of ``--engine airflow``) runs in a new session and process group,
under a guard (:mod:`._guard`) that leads the group and kills all of it when the runner dies, even
by SIGKILL. A signal for the group reaches the processes the task started too, and a Ctrl-C in the
terminal reaches only the runner, which decides what its children get: :func:`signal_group`
(SIGINT, SIGTERM or SIGHUP as received), then after a grace period SIGKILL for whatever is left.
:class:`ForwardedSignals` installs the runner's handlers for SIGINT, SIGTERM and SIGHUP (in the
main thread only, and not for a signal that was ignored when the runner started), and puts the
old ones back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

__all__ = [
    "FORWARDED_SIGNALS",
    "GRACE_SECONDS",
    "LINE_LIMIT",
    "ForwardedSignals",
    "LineClipper",
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


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the process group ``process`` leads (if any of it is left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_group(
    process: subprocess.Popen[bytes],
    signum: int,
    *,
    hurry: Callable[[], bool] = lambda: False,
    grace: float = GRACE_SECONDS,
) -> None:
    """Send ``signum`` to the group ``process`` leads, give it ``grace`` seconds to end (until
    ``hurry()`` says stop waiting), then kill whatever is left of the group and reap the leader."""
    signal_group(process, signum)
    give_up = time.monotonic() + grace
    while not hurry() and time.monotonic() < give_up and process.poll() is None:
        time.sleep(0.1)
    signal_group(process, signal.SIGKILL)
    process.wait()


class ForwardedSignals:
    """While active, SIGINT, SIGTERM and SIGHUP call ``on_signal(signum)`` instead of their default.

    Only in the main thread (elsewhere Python cannot install handlers, and this does nothing), and
    never for a signal that was ignored when the runner started (a background job keeps ignoring
    Ctrl-C).
    """

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self.on_signal = on_signal
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def __enter__(self) -> ForwardedSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in FORWARDED_SIGNALS:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.on_signal(signum)

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
