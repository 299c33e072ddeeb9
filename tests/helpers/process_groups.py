"""Long-running test processes, each in its own process group, stopped with bounded escalation.

:class:`ManagedProcess` starts a command as a group leader with its output in a log file;
:func:`stop_processes` sends SIGINT, then SIGTERM, then SIGKILL to every group with a bound for each
step; :func:`sigterm_as_keyboard_interrupt` lets a test session clean up when CI stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ManagedProcess", "sigterm_as_keyboard_interrupt", "stop_processes"]

# -------------------------------------------------------------------------------------- processes


# Started with SIGINT ignored (e.g. from a shell's background job), a program inherits "ignore"
# and Python then installs no KeyboardInterrupt handler. This constant prelude restores the
# default dispositions, then replaces itself with the real command (same pid).
_EXEC_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for sig in (signal.SIGINT, signal.SIGTERM):\n"
    "    signal.signal(sig, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


class ManagedProcess:
    """One long-running command in its own process group, output to its own log file.

    SIGINT and SIGTERM start with their default dispositions whatever the caller inherited, so
    the stop sequence means the same thing in a terminal, under CI and in a background job.
    """

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, *self.argv],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach its children too
            )

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def group_alive(self) -> bool:
        """True while the leader or any process of its group still runs (reaps the leader).

        Zombies do not count: an orphaned child that exited waits for init to reap it, which
        some container inits never do.
        """
        if self.popen is None:
            return False
        self.popen.poll()
        try:
            os.killpg(self.popen.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return _group_has_running_member(self.popen.pid)

    def signal_group(self, sig: signal.Signals) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _group_has_running_member(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is not a zombie (Linux /proc; elsewhere: assume yes)."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_processes(
    processes: Sequence[ManagedProcess],
    steps: Sequence[tuple[signal.Signals, float]] = (
        (signal.SIGINT, 30.0),
        (signal.SIGTERM, 15.0),
        (signal.SIGKILL, 5.0),
    ),
) -> dict[str, str]:
    """Stop process groups together: each signal goes to every live group, then a bounded wait.

    Returns, per process name, the signal that finally stopped it and when, e.g.
    ``"SIGINT after 2.1 s"`` (for diagnostics).
    """
    stopped_by: dict[str, str] = {}
    began = time.monotonic()
    remaining = [p for p in processes if p.group_alive()]
    for sig, bound in steps:
        if not remaining:
            break
        for process in remaining:
            process.signal_group(sig)
        deadline = time.monotonic() + bound
        while remaining and time.monotonic() < deadline:
            still = []
            for process in remaining:
                if process.group_alive():
                    still.append(process)
                else:
                    stopped_by[process.name] = f"{sig.name} after {time.monotonic() - began:.1f} s"
            remaining = still
            if remaining:
                time.sleep(0.2)
    for process in remaining:
        stopped_by[process.name] = f"still running after {time.monotonic() - began:.1f} s"
    return stopped_by


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """While active, SIGTERM (a CI timeout, ``kill``) raises KeyboardInterrupt in the main thread.

    pytest then still runs the fixture finalizers, so the cluster is stopped and its databases
    dropped instead of being orphaned by a terminated test process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
