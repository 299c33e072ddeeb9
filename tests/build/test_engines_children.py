"""``engines._children`` and its guard as real processes: what a task inherits, how it ends.

The runner-level faults (a full log folder, a process left holding the output, SIGKILL of the
runner) are in test_runner_faults.py; these pin the pieces they rest on.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest
from dkist_processing_core.engines._children import Pieces
from dkist_processing_core.engines._children import follow
from dkist_processing_core.engines._children import read_pieces
from dkist_processing_core.engines._children import start_in_session
from hypothesis import given
from hypothesis import strategies as st

_SIGNAL_STATE = "grep -E '^Sig(Blk|Ign)' /proc/self/status"


def run_guarded(command: list[str]) -> tuple[int, bytes]:
    """``command`` started as the runners start a task; its exit status and output."""
    process = start_in_session(command, dict(os.environ))
    pieces: list[bytes] = []
    ended = follow(process, pieces.append)
    return ended.status, b"".join(pieces)


@pytest.mark.parametrize("ignored", [(), (signal.SIGINT, signal.SIGHUP)], ids=["none", "INT+HUP"])
def test_a_guarded_task_inherits_the_runners_signal_state(ignored):
    # Blocked: none; ignored: what the runner ignored, nothing more (glibc's posix_spawn would add
    # its two internal signals; Python's SIGPIPE and SIGXFSZ go back to default as with Popen).
    runner = (
        "import os, signal, subprocess, sys\n"
        f"for signum in {[int(s) for s in ignored]}: signal.signal(signum, signal.SIG_IGN)\n"
        "from dkist_processing_core.engines._children import follow, start_in_session\n"
        f"direct = subprocess.run(['sh', '-c', {_SIGNAL_STATE!r}], capture_output=True).stdout\n"
        f"guarded = start_in_session(['sh', '-c', {_SIGNAL_STATE!r}], dict(os.environ))\n"
        "out = []\n"
        "follow(guarded, out.append)\n"
        "print(direct.decode() == b''.join(out).decode(), direct.decode().split())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", runner], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.startswith("True "), result.stdout + result.stderr


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("import sys; sys.exit(0)", 0),
        ("import sys; sys.exit(2)", 2),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", -signal.SIGKILL),
    ],
    ids=["0", "2", "SIGTERM", "SIGKILL"],
)
def test_the_guard_ends_as_its_task_ends(code, status):
    assert run_guarded([sys.executable, "-c", code])[0] == status


def test_the_guard_reports_a_command_it_cannot_start():
    status, output = run_guarded(["/nonexistent/dkist-task"])
    assert status == 127
    assert b"cannot start /nonexistent/dkist-task: [Errno 2]" in output


def test_the_guard_is_the_group_leader_and_the_task_is_in_its_group():
    code = "import os; print(os.getpgid(0) == os.getppid() == os.getsid(0))"
    assert run_guarded([sys.executable, "-c", code]) == (0, b"True\n")


@given(st.lists(st.binary(max_size=40), max_size=30))
def test_pieces_split_a_stream_as_read_pieces_does(chunks):
    # The same pieces from a byte stream fed in arbitrary chunks as from readline(limit).
    data = b"".join(chunks)
    pieces = Pieces(limit=7)
    fed = [piece for chunk in chunks for piece in pieces.feed(chunk)] + list(pieces.finish())
    assert fed == list(read_pieces(io.BytesIO(data), limit=7))
