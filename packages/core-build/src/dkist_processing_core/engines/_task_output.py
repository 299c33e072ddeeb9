"""Where one attempt of a task's output goes in the local runner: its log and the terminal.

:class:`TaskOutput` copies what the task writes (standard output and error, one pipe) to the
task's log (:class:`~._task_log.TaskLog`, which a full disk truncates with a line saying so) and,
each line prefixed with the task's name and clipped at 64 KiB, to the run's shared output, until
the task has ended (:func:`~._children.follow`: not until every process holding the pipe has). What
the log or the output lacks in the end is in :meth:`TaskOutput.notes`, for the summary.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from dkist_processing_core.engines._children import Ended
from dkist_processing_core.engines._children import LineClipper
from dkist_processing_core.engines._children import follow
from dkist_processing_core.engines._common import Output
from dkist_processing_core.engines._task_log import TaskLog

__all__ = ["TaskOutput"]

_CUT = "a process outside the task's process group still holds its output open"


class TaskOutput:
    """The log at ``log_path`` (``header`` first) and the lines ``[task_id] ...`` of ``out`` for
    one attempt."""

    def __init__(self, task_id: str, log_path: Path, header: str, out: Output) -> None:
        self.task_id = task_id
        self.log_path = log_path
        self.out = out
        self.cut = False  # the output was no longer read: held open outside the task's group
        self.log = TaskLog(log_path, header, self._log_failed)

    def _log_failed(self, why: str) -> None:
        self.out.line(
            "runner",
            f"cannot write the log of {self.task_id} ({self.log_path}): {why}; the log ends "
            "there, the rest of the output is shown here only",
        )

    def follow(self, process: subprocess.Popen[bytes], linger: Callable[[], float]) -> Ended:
        """Copy the output of ``process`` until it has ended (see :func:`follow`); how it ended."""
        clipper = LineClipper(lambda left_out: f"... ({left_out} more bytes in {self.log_path})")
        last = b"\n"

        def on_piece(piece: bytes) -> None:
            nonlocal last
            self.log.write(piece)
            last = piece
            if (line := clipper.feed(piece)) is not None:
                self.out.line(self.task_id, line)

        ended = follow(process, on_piece, linger=linger)
        if not last.endswith(b"\n"):
            self.log.write(b"\n")
        if (line := clipper.finish()) is not None:
            self.out.line(self.task_id, line)
        if ended.cut:
            self.cut = True
            self.log.write(f"--- output no longer read by the runner: {_CUT}\n".encode())
            self.out.line("runner", f"{self.task_id}: {_CUT}; no longer read")
        return ended

    def close(self) -> None:
        self.log.close()

    def notes(self) -> list[str]:
        """What the log and the shown output lack, for the summary."""
        notes = []
        if self.log.reason is not None:
            notes.append(
                f"log truncated ({self.log.reason}): {self.log.missing} bytes of output not in it"
            )
        if self.cut:
            notes.append(f"output cut: {_CUT}")
        return notes
