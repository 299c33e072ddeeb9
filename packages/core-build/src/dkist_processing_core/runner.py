"""Run one workflow on this machine, without an Airflow server.

:func:`run_local` (engine ``local``) runs every task in its own process exactly as a worker does
(``python -m dkist_processing_core.run_task`` with ``RECIPE_RUN_ID`` in its environment, so the
task has the same telemetry and logging), in dependency order, up to ``jobs`` at a time. A task is
retried like Airflow retries it (``retries`` times, ``retry_delay_seconds`` apart); when it finally
fails, the same failure report as Airflow's ``on_failure_callback`` goes to the interservice bus,
no new task starts, the running ones are waited for, and the rest are reported as skipped.

Each task runs in a session of its own. SIGINT, SIGTERM or SIGHUP to the runner is passed on to the
process group of every running task (so whatever a task started gets it too); what has not ended
after a grace period of 10 s (or at a second signal) is killed, the summary is printed and the run
ends as interrupted. Task output is read in pieces of at most 64 KiB: a task's log keeps every
byte, the terminal shows the first 64 KiB of a longer line.

:func:`run_airflow` (engine ``airflow``) exports the DAG to a temporary folder and runs it with
Airflow's own ``dag.test()`` on a throw-away SQLite metadata database (see
:mod:`dkist_processing_core._airflow_engine`), then reports the same summary.

Both return a :class:`RunSummary`.
"""

from __future__ import annotations

import datetime as _dt
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import SimpleNamespace
from typing import IO
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._process_group import GRACE_SECONDS
from dkist_processing_core._process_group import ForwardedSignals
from dkist_processing_core._process_group import LineClipper
from dkist_processing_core._process_group import read_pieces
from dkist_processing_core._process_group import signal_group
from dkist_processing_core._process_group import start_in_session
from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.run_task import RECIPE_RUN_ID_VARIABLE
from dkist_processing_core.run_task import parse_recipe_run_id

if TYPE_CHECKING:
    from dkist_processing_core.node import Node
    from dkist_processing_core.workflow import Workflow

__all__ = [
    "ENGINES",
    "RunError",
    "RunInterrupted",
    "RunSummary",
    "TaskResult",
    "default_log_root",
    "local_run_id",
    "run_airflow",
    "run_local",
]

ENGINES = ("local", "airflow")
SUCCESS, FAILED, SKIPPED = "success", "failed", "skipped"
#: Exit status of run_task for a bad invocation: retrying it cannot help.
_BAD_INVOCATION = 2


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
    state: str = SKIPPED  # success | failed | skipped
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

    def _with(self, state: str) -> list[TaskResult]:
        return [result for result in self.results if result.state == state]

    @property
    def succeeded(self) -> list[TaskResult]:
        return self._with(SUCCESS)

    @property
    def failed(self) -> list[TaskResult]:
        return self._with(FAILED)

    @property
    def skipped(self) -> list[TaskResult]:
        return self._with(SKIPPED)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(result.state == SUCCESS for result in self.results)

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
            if result.state == FAILED and result.exit_code is not None:
                extra.append(f"exit {result.exit_code}")
            if result.note:
                extra.append(result.note)
            if result.state == FAILED and result.log_path is not None:
                extra.append(f"log {result.log_path}")
            tail = f"  ({'; '.join(extra)})" if extra else ""
            lines.append(f"  {result.state:<8} {result.task_id:<{width}} {duration:>9}{tail}")
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


def _path_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def _check_jobs(jobs: int) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    return jobs


# ------------------------------------------------------------------------------ local engine
class _Output:
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


@dataclass
class _Attempt:
    task_id: str
    process: subprocess.Popen[bytes]
    started: float


class _LocalRun:
    def __init__(
        self,
        workflow: Workflow,
        recipe_run_id: int,
        jobs: int,
        log_dir: Path,
        run_id: str,
        output: _Output,
        env: dict[str, str],
        report_failure: Callable[[Workflow, Node, dict[str, Any]], str] | None,
    ) -> None:
        self.workflow = workflow
        self.recipe_run_id = recipe_run_id
        self.jobs = jobs
        self.log_dir = log_dir
        self.run_id = run_id
        self.out = output
        self.env = env
        self.report_failure = report_failure
        self.nodes = workflow.topological_sort()
        self.by_id = {node.task_id: node for node in self.nodes}
        self.results = {node.task_id: TaskResult(node.task_id) for node in self.nodes}
        self.pending = [
            node.task_id for node in self.nodes
        ]  # never started, or waiting for a retry
        self.retry_at: dict[str, float] = {}
        self.running: dict[str, _Attempt] = {}
        # (task id, exit status) from the output threads; (None, signal number) from a signal
        # handler. SimpleQueue.put may interrupt a get() in the same thread: safe in a handler.
        self.events: queue.SimpleQueue[tuple[str | None, int]] = queue.SimpleQueue()
        self.stopping = False
        self.interrupted = False
        self.signal: int | None = None

    # ---------------------------------------------------------------- scheduling
    def _ready(self, now: float) -> list[str]:
        return [
            task_id
            for task_id in self.pending
            if self.retry_at.get(task_id, 0.0) <= now
            and all(
                self.results[upstream].state == SUCCESS
                for upstream in self.by_id[task_id].upstream_task_ids
            )
        ]

    def execute(self) -> bool:
        """Run until done; return False if stopped by a signal (Ctrl-C, SIGTERM, SIGHUP).

        However it ends, no task process is left running.
        """
        with ForwardedSignals(lambda signum: self.events.put((None, signum))):
            try:
                return self._schedule()
            except KeyboardInterrupt:  # SIGINT where the handler could not be installed
                self._interrupt(signal.SIGINT)
                return False
            except BaseException:
                self._stop_running(signal.SIGTERM)
                raise
            finally:
                self._settle_pending()

    def _schedule(self) -> bool:
        while True:
            now = time.monotonic()
            if not self.stopping:
                for task_id in self._ready(now)[: self.jobs - len(self.running)]:
                    self._start(task_id)
            # Retries not yet due; one that is due but found no free slot waits for an event.
            waits = [] if self.stopping else [at - now for at in self.retry_at.values() if at > now]
            if not self.running and not waits:
                return True
            try:
                task_id, status = self.events.get(timeout=min(waits) if waits else None)
            except queue.Empty:
                continue
            if task_id is None:
                self._interrupt(status)
                return False
            self._finished(task_id, status)

    def _interrupt(self, signum: int) -> None:
        self.interrupted, self.signal = True, signum
        name = signal.Signals(signum).name
        self.out.line("runner", f"interrupted: stopping the running tasks ({name})")
        self._stop_running(signum)

    def _settle_pending(self) -> None:
        why = "the run was interrupted" if self.interrupted else "another task failed"
        for task_id in self.pending:
            result = self.results[task_id]
            if result.attempts:  # waited for a retry when the run stopped
                result.state, result.note = FAILED, f"retry not run: {why}"
            elif not result.note:
                result.state = SKIPPED
                result.note = f"not run: {why}" if self.stopping else "not run"

    def _stop_running(self, signum: int) -> None:
        """Pass ``signum`` to the process group of every running task, give them the grace period
        to end (a second signal ends the wait), then kill what is left of each group."""
        self.stopping = True
        stopped = list(self.running.values())
        for attempt in stopped:
            signal_group(attempt.process, signum)
        deadline = time.monotonic() + GRACE_SECONDS
        while self.running and (left := deadline - time.monotonic()) > 0:
            try:
                task_id, status = self.events.get(timeout=left)
            except queue.Empty:
                break
            if task_id is None:  # asked again: stop waiting
                break
            self.running.pop(task_id)
            result = self.results[task_id]
            result.exit_code, result.ended = status, time.time()
            if status == 0:  # had finished before it was told to stop
                result.state = SUCCESS
            else:
                result.state, result.note = FAILED, "interrupted"
        for task_id, attempt in self.running.items():
            signal_group(attempt.process, signal.SIGKILL)
            attempt.process.wait()
            result = self.results[task_id]
            result.state, result.ended, result.note = FAILED, time.time(), "killed"
        self.running.clear()
        for attempt in stopped:  # whatever a task started and left behind in its group
            signal_group(attempt.process, signal.SIGKILL)

    # ---------------------------------------------------------------- processes
    def _command(self, node: Node) -> list[str]:
        # --opt=value: a name or version that starts with "-" is never read as an option.
        return [
            sys.executable,
            "-m",
            "dkist_processing_core.run_task",
            f"--module={node.module_path}",
            f"--task={node.task_id}",
            f"--workflow-name={self.workflow.workflow_name}",
            f"--workflow-version={self.workflow.workflow_version}",
        ]

    def _start(self, task_id: str) -> None:
        node = self.by_id[task_id]
        result = self.results[task_id]
        self.pending.remove(task_id)
        self.retry_at.pop(task_id, None)
        result.attempts += 1
        result.log_path = self.log_dir / f"{task_id}.log"
        started = time.time()
        if result.started is None:
            result.started = started
        log = result.log_path.open("ab")
        header = f"--- {task_id} attempt {result.attempts} (recipe run {self.recipe_run_id}, {self.run_id})\n"
        log.write(header.encode("utf-8"))
        log.flush()
        try:
            process = start_in_session(self._command(node), self.env)
        except OSError as error:
            log.close()
            raise RunError(f"cannot start the process of task {task_id}: {error}") from error
        self.running[task_id] = _Attempt(task_id, process, started)  # first: Ctrl-C must find it
        attempt_text = (
            f" (attempt {result.attempts} of {node.retries + 1})" if result.attempts > 1 else ""
        )
        threading.Thread(target=self._pump, args=(task_id, process, log), daemon=True).start()
        self.out.line("runner", f"started {task_id}{attempt_text}, pid {process.pid}")

    def _pump(self, task_id: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        """Copy the task's output to its log and to the shared stream; always report its exit status."""
        assert process.stdout is not None
        where = self.results[task_id].log_path
        clipper = LineClipper(lambda left_out: f"... ({left_out} more bytes in {where})")
        try:
            last = b"\n"
            for piece in read_pieces(process.stdout):
                log.write(piece)
                last = piece
                if (line := clipper.feed(piece)) is not None:
                    self.out.line(task_id, line)
            if not last.endswith(b"\n"):
                log.write(b"\n")
            if (line := clipper.finish()) is not None:
                self.out.line(task_id, line)
        finally:
            log.close()
            process.stdout.close()  # if the copy failed: a task writing more gets EPIPE, not a full pipe
            self.events.put((task_id, process.wait()))

    def _finished(self, task_id: str, exit_code: int) -> None:
        attempt = self.running.pop(task_id)
        node = self.by_id[task_id]
        result = self.results[task_id]
        result.ended = time.time()
        result.exit_code = exit_code
        took = result.ended - attempt.started
        if exit_code == 0:
            result.state = SUCCESS
            self.out.line("runner", f"{task_id} succeeded in {took:.2f} s")
            return
        retryable = exit_code != _BAD_INVOCATION and result.attempts <= node.retries
        if retryable and not self.stopping:
            delay = float(node.retry_delay_seconds)
            self.out.line(
                "runner",
                f"{task_id} failed (exit {exit_code}) on attempt {result.attempts} of {node.retries + 1}; "
                f"retrying in {delay:g} s",
            )
            self.pending.insert(0, task_id)
            self.retry_at[task_id] = time.monotonic() + delay
            return
        result.state = FAILED
        if retryable:
            result.note = "retry not run: another task failed"
            self.out.line(
                "runner", f"{task_id} failed (exit {exit_code}); no retry, the run is stopping"
            )
            return
        self.out.line(
            "runner",
            f"{task_id} FAILED (exit {exit_code}) after {result.attempts} attempt(s); log {result.log_path}",
        )
        if not self.stopping and (self.pending or self.running):
            self.out.line("runner", "no new tasks will start; waiting for the running ones")
        self.stopping = True
        if self.report_failure is not None:
            context = _failure_context(self, node, result)
            self.out.line("runner", self.report_failure(self.workflow, node, context))


def _failure_context(run: _LocalRun, node: Node, result: TaskResult) -> dict[str, Any]:
    """The parts of an Airflow task context that the failure report reads."""
    log_url = result.log_path.as_uri() if result.log_path is not None else None
    task_instance = SimpleNamespace(
        dag_id=run.workflow.dag_name,
        task_id=node.task_id,
        run_id=run.run_id,
        try_number=result.attempts,
        max_tries=node.retries + 1,
        state="failed",
        log_url=log_url,
        hostname=os.uname().nodename,
    )
    dag_run = SimpleNamespace(
        dag_id=run.workflow.dag_name,
        run_id=run.run_id,
        run_type="local",
        conf={"recipe_run_id": run.recipe_run_id},
    )
    return {
        "run_id": run.run_id,
        "dag_run": dag_run,
        "task_instance": task_instance,
        "ti": task_instance,
        "params": {},
        "log_path": str(result.log_path) if result.log_path else None,
    }


def _report_on_isb(workflow: Workflow, node: Node, context: dict[str, Any]) -> str:
    from dkist_processing_core.failure_callback import chat_ops_notification

    outcome = chat_ops_notification(
        context,
        workflow_name=workflow.workflow_name,
        workflow_version=workflow.workflow_version,
        task_name=node.task_id,
    )
    if outcome is None:
        return f"failure report of {node.task_id} could not be published (see the log above)"
    if outcome.delivered:
        return f"failure report of {node.task_id} published on the interservice bus (message {outcome.message_id})"
    return (
        f"failure report of {node.task_id} NOT confirmed by the interservice bus ({outcome.error}); kept in "
        f"the outbox {outcome.outbox_path}: send it later with `dkist-processing-core isb flush`"
    )


def run_local(
    workflow: Workflow,
    recipe_run_id: int,
    *,
    jobs: int | None = None,
    log_dir: str | Path | None = None,
    stream: IO[str] | None = None,
    env: dict[str, str] | None = None,
    report_failures: bool = True,
    run_id: str | None = None,
) -> RunSummary:
    """Run ``workflow`` for ``recipe_run_id`` with the local engine; see the module docstring.

    ``jobs`` defaults to the CPU count; ``log_dir`` (default: under :func:`default_log_root`)
    receives one log per task; task output is also written to ``stream`` (default stdout), each
    line prefixed with ``[TaskName]``. ``env`` replaces ``os.environ`` for the tasks.
    """
    recipe_run_id = parse_recipe_run_id(recipe_run_id)
    if jobs is None:
        from dkist_processing_core.config import core_configuration

        jobs = core_configuration().cpu_count
    jobs = _check_jobs(jobs)
    workflow.check_dag()
    run_id = run_id or local_run_id()
    # Absolute from here on: task processes, file URIs and the summary all see the same folder.
    folder = (
        Path(log_dir).expanduser().absolute()
        if log_dir is not None
        else default_log_root() / workflow.dag_name / _path_safe(run_id)
    )
    folder.mkdir(parents=True, exist_ok=True)
    task_env = dict(os.environ if env is None else env)
    task_env[RECIPE_RUN_ID_VARIABLE] = str(recipe_run_id)
    task_env["PYTHONUNBUFFERED"] = "1"
    output = _Output(stream or sys.stdout)
    output.line(
        "runner",
        f"running {workflow.dag_name} ({len(workflow.nodes)} tasks) for recipe run {recipe_run_id}, "
        f"run id {run_id}, up to {jobs} at a time; logs in {folder}",
    )
    run = _LocalRun(
        workflow,
        recipe_run_id,
        jobs,
        folder,
        run_id,
        output,
        task_env,
        _report_on_isb if report_failures else None,
    )
    started = time.monotonic()
    completed = run.execute()
    return RunSummary(
        engine="local",
        dag_id=workflow.dag_name,
        run_id=run_id,
        recipe_run_id=recipe_run_id,
        results=[run.results[node.task_id] for node in run.nodes],
        duration=time.monotonic() - started,
        log_dir=folder,
        interrupted=not completed,
        signal=run.signal,
    )


# ---------------------------------------------------------------------------- airflow engine
def run_airflow(
    workflow: Workflow,
    recipe_run_id: int,
    *,
    wheelhouse: str | Path | None = None,
    stream: IO[str] | None = None,
    env: dict[str, str] | None = None,
    keep: bool = False,
) -> RunSummary:
    """Run ``workflow`` through Airflow's ``dag.test()`` in a throw-away AIRFLOW_HOME.

    Each node's bash script installs the pipeline into a fresh venv, as on a worker. To make that
    work here without a package index, the pipeline and the dkist-processing-core distributions
    it needs are built into a wheelhouse (``wheelhouse``, reused if it already has them, else a
    temporary folder) together with their dependencies, and pip is pointed at it
    (``PIP_FIND_LINKS``, ``PIP_NO_INDEX=1``).
    """
    from dkist_processing_core import _airflow_engine

    return _airflow_engine.run(
        workflow,
        parse_recipe_run_id(recipe_run_id),
        wheelhouse=None if wheelhouse is None else Path(wheelhouse).expanduser().absolute(),
        output=_Output(stream or sys.stdout),
        env=dict(os.environ if env is None else env),
        keep=keep,
    )
