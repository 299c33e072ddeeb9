"""What every engine shares: task states, results, the run summary, the output stream, the errors.

An engine runs one workflow for one recipe run on this machine and returns a :class:`RunSummary`:
one :class:`TaskResult` per task, in topological order, each in one :class:`TaskState`. Engines
are classes with the :class:`Engine` shape; ``dkist_processing_core.engines`` names them.
"""

from __future__ import annotations

import datetime as _dt
import signal
import tempfile
import threading
from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum
from pathlib import Path
from typing import IO
from typing import TYPE_CHECKING
from typing import ClassVar
from typing import Protocol

from dkist_processing_core.errors import DKISTProcessingCoreError

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow

__all__ = [
    "Engine",
    "Output",
    "RunError",
    "RunInterrupted",
    "RunSummary",
    "TaskResult",
    "TaskState",
    "default_log_root",
    "local_run_id",
]


class TaskState(StrEnum):
    """Final state of a task in a run."""

    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"


class Engine(Protocol):
    """Runs one workflow on this machine. Constructed with its options, then :meth:`run`."""

    #: The name ``run --engine NAME`` selects it by.
    name: ClassVar[str]
    #: The keyword options its constructor takes (the CLI refuses others for this engine).
    options: ClassVar[frozenset[str]]

    def run(self, workflow: Workflow, recipe_run_id: int) -> RunSummary: ...


class RunError(DKISTProcessingCoreError, RuntimeError):
    """The run could not be carried out (not: a task failed, which the summary reports)."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal before it had a summary (``--engine airflow``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class TaskResult:
    """What happened to one task of a run."""

    task_id: str
    state: TaskState = TaskState.SKIPPED
    attempts: int = 0
    started: float | None = None  # epoch seconds of the first attempt's start
    ended: float | None = None
    exit_code: int | None = None
    log_path: Path | None = None
    note: str = ""

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)


@dataclass
class RunSummary:
    """Outcome of a run: one :class:`TaskResult` per task, in topological order."""

    engine: str
    dag_id: str
    run_id: str
    recipe_run_id: int
    results: list[TaskResult]
    duration: float = 0.0
    log_dir: Path | None = None
    interrupted: bool = False
    messages: list[str] = field(default_factory=list)
    signal: int | None = None  # the signal that stopped the run

    def _with(self, state: TaskState) -> list[TaskResult]:
        return [result for result in self.results if result.state == state]

    @property
    def succeeded(self) -> list[TaskResult]:
        return self._with(TaskState.SUCCESS)

    @property
    def failed(self) -> list[TaskResult]:
        return self._with(TaskState.FAILED)

    @property
    def skipped(self) -> list[TaskResult]:
        return self._with(TaskState.SKIPPED)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(
            result.state == TaskState.SUCCESS for result in self.results
        )

    def format(self) -> str:
        """Human-readable summary: one line per task, then the totals."""
        width = max((len(result.task_id) for result in self.results), default=4)
        lines = [
            f"Summary of {self.dag_id}, run {self.run_id}, recipe run {self.recipe_run_id} (engine {self.engine}):"
        ]
        for result in self.results:
            duration = "-" if result.duration is None else f"{result.duration:.2f} s"
            extra = []
            if result.attempts > 1:
                extra.append(f"{result.attempts} attempts")
            if result.state == TaskState.FAILED and result.exit_code is not None:
                extra.append(f"exit {result.exit_code}")
            if result.note:
                extra.append(result.note)
            if result.state == TaskState.FAILED and result.log_path is not None:
                extra.append(f"log {result.log_path}")
            tail = f"  ({'; '.join(extra)})" if extra else ""
            lines.append(f"  {result.state.value:<8} {result.task_id:<{width}} {duration:>9}{tail}")
        verdict = "interrupted" if self.interrupted else ("succeeded" if self.ok else "FAILED")
        lines.append(
            f"{self.dag_id} {verdict}: {len(self.succeeded)} succeeded, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped (not run) of {len(self.results)} tasks in {self.duration:.1f} s"
        )
        if self.log_dir is not None:
            lines.append(f"Task logs: {self.log_dir}")
        if self.signal is not None:
            lines.append(f"The run was stopped by {signal.Signals(self.signal).name}.")
        lines += self.messages
        return "\n".join(lines)


def local_run_id(now: _dt.datetime | None = None) -> str:
    """A DAG-run-like id for a local run: ``local__<UTC ISO timestamp>``."""
    now = now or _dt.datetime.now(_dt.UTC)
    return f"local__{now.isoformat(timespec='microseconds')}"


def default_log_root() -> Path:
    """Where runs keep their task logs unless told otherwise: ``<tmp>/dkist-processing-core-runs``."""
    return Path(tempfile.gettempdir()) / "dkist-processing-core-runs"


class Output:
    """Writes whole lines from many threads to one stream, each with a ``[name]`` prefix.

    Once the stream fails (e.g. ``run ... | head`` closed it) output is dropped, so that a closed
    terminal cannot stop a run half-way; the task logs keep everything.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream: IO[str] | None = stream
        self._lock = threading.Lock()

    def line(self, prefix: str, text: str) -> None:
        with self._lock:
            if self._stream is None:
                return
            try:
                self._stream.write(f"[{prefix}] {text}\n")
                self._stream.flush()
            except (OSError, ValueError):
                self._stream = None
