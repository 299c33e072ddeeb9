"""The guard of a child of the runners: its process group dies with the runner, even by SIGKILL.

``python -I -S _guard.py --parent=PID -- COMMAND...`` is what :func:`~._children.start_in_session`
starts as the leader of a new session. The guard starts ``COMMAND`` in its own process group (so the
task and whatever it starts share one group with the guard), waits for it and exits with its exit
status, or dies of the same signal. Whenever the process that started it (``PID``, the runner) is
gone, the guard kills the whole group with SIGKILL, itself included: the kernel tells it at once
(``prctl(PR_SET_PDEATHSIG)``, Linux), and it checks ``os.getppid()`` every second anyway (other
systems, and a parent that died before the guard asked the kernel). Why a process of its own: the
runner reads its children's output in threads, where ``preexec_fn`` is unsafe; a parent-death
signal set by the task on itself would end the task but not the processes it started; and a guard
that only waits always runs its handler at once, where a task busy in C code might not.

Signals the runner forwards reach the whole group, task included: the guard leaves them to the task
and goes on waiting for its exit status (it never passes one on, which would deliver it twice).
It blocks them until the task has been started, so the task inherits the dispositions the runner
had (a signal ignored there stays ignored in the task). Standard library only, no ``site``: it
starts in a few milliseconds whatever the environment holds.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

__all__ = ["PARENT_DEATH_SIGNAL", "main"]

#: The signal the kernel sends the guard when the runner dies.
PARENT_DEATH_SIGNAL = signal.SIGHUP
_WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)
_RESTORED = (signal.SIGPIPE, signal.SIGXFSZ)
_CHECK_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1


def _ask_for_parent_death_signal() -> None:
    """``prctl(PR_SET_PDEATHSIG)`` where there is one (Linux); elsewhere the periodic check does it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _die_like(status: int) -> None:
    """Exit with the child's ``os.waitpid`` status: its exit status, or death by its signal."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        os._exit(code)
    signum = -code
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the task dumped core already, if any
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
    finally:
        os._exit(128 + signum)


def _start(command: list[str]) -> int:
    """Fork and exec ``command``: unblocked, with the dispositions the guard started with (an
    ignored signal stays ignored) and SIGPIPE and SIGXFSZ at their default, as Popen does.

    Not ``os.posix_spawn``: glibc's leaves its two internal signals ignored in the child.
    """
    pid = os.fork()
    if pid:
        return pid
    try:
        for signum in (*_WATCHED, *_RESTORED):
            if signal.getsignal(signum) != signal.SIG_IGN or signum in _RESTORED:
                signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execvp(command[0], command)
    except BaseException as error:
        print(f"dkist-processing-core: cannot start {command[0]}: {error}", file=sys.stderr)
    finally:
        os._exit(127)


def main(argv: list[str]) -> None:
    """``--parent=PID -- COMMAND...``: run ``COMMAND`` and die with ``PID``; never returns."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    if len(argv) < 3 or not argv[0].startswith("--parent=") or argv[1] != "--":
        print("usage: _guard.py --parent=PID -- COMMAND...", file=sys.stderr)
        os._exit(2)
    parent = int(argv[0].removeprefix("--parent="))
    child = _start(argv[2:])

    def check_parent(signum: int = 0, frame: FrameType | None = None) -> None:
        if os.getppid() != parent:  # the runner is gone: so is everything it started here
            os.killpg(0, signal.SIGKILL)

    for signum in _WATCHED:
        signal.signal(signum, check_parent)
    _ask_for_parent_death_signal()
    signal.setitimer(signal.ITIMER_REAL, _CHECK_SECONDS, _CHECK_SECONDS)
    check_parent()  # the runner may have died before the kernel was asked to tell
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
    _, status = os.waitpid(child, 0)  # a signal runs check_parent, then the wait goes on
    signal.setitimer(signal.ITIMER_REAL, 0)
    _die_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
