"""The ``local`` engine: run one workflow on this machine, each task in its own process.

Every task runs exactly as a worker runs it (``python -m dkist_processing_core.run_task`` with
``RECIPE_RUN_ID`` in its environment, so the task has the same telemetry and logging), in
dependency order (graphlib decides which tasks may start), up to ``jobs`` at a time. A task is
retried like Airflow retries it (``retries`` times, ``retry_delay_seconds`` apart); when it finally
fails, the same failure report as Airflow's ``on_failure_callback`` goes to the interservice bus,
no new task starts, the running ones are waited for, and the rest are reported as skipped.

Each task runs in a session of its own under a guard that kills its group if the runner dies, even
by SIGKILL (``_children``). SIGINT, SIGTERM or SIGHUP to the runner goes on to every running task's
group; what has not ended 10 s later (or at a second signal) is killed, the run ends interrupted. A
task has ended when its own process has: what it left in its group is killed, its output read 2 s
more at most. Output is read in pieces of 64 KiB at most: the log keeps every byte (a full disk
truncates it with a line saying so), the terminal shows 64 KiB of a longer line.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import IO
from typing import TYPE_CHECKING
from typing import ClassVar

from dkist_processing_core.engines._children import DRAIN_SECONDS
from dkist_processing_core.engines._children import GRACE_SECONDS
from dkist_processing_core.engines._children import forwarded_signals
from dkist_processing_core.engines._children import signal_group
from dkist_processing_core.engines._children import start_in_session
from dkist_processing_core.engines._common import Output
from dkist_processing_core.engines._common import RunError
from dkist_processing_core.engines._common import RunSummary
from dkist_processing_core.engines._common import TaskResult
from dkist_processing_core.engines._common import TaskState
from dkist_processing_core.engines._common import default_log_root
from dkist_processing_core.engines._common import local_run_id
from dkist_processing_core.engines._failure_report import failure_context
from dkist_processing_core.engines._failure_report import report_on_isb
from dkist_processing_core.engines._task_output import TaskOutput
from dkist_processing_core.recipe_run_id import RECIPE_RUN_ID_VARIABLE

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow

__all__ = ["LocalEngine"]

#: Exit status of run_task for a bad invocation: retrying it cannot help.
_BAD_INVOCATION = 2


@dataclass
class _Attempt:
    task_id: str
    process: subprocess.Popen[bytes]
    started: float
    output: TaskOutput
    reader: threading.Thread  # copies its output, then reports how it ended (_pump)


class _LocalRun:
    """The scheduler of one local run: starts, watches and retries the task processes."""

    def __init__(
        self,
        workflow: Workflow,
        recipe_run_id: int,
        jobs: int,
        log_dir: Path,
        run_id: str,
        output: Output,
        env: dict[str, str],
        report_failures: bool,
    ) -> None:
        self.workflow = workflow
        self.recipe_run_id = recipe_run_id
        self.jobs = jobs
        self.log_dir = log_dir
        self.run_id = run_id
        self.out = output
        self.env = env
        self.report_failures = report_failures
        self.nodes = workflow.topological_sort()
        self.by_id = {node.task_id: node for node in self.nodes}
        self.position = {node.task_id: index for index, node in enumerate(self.nodes)}
        self.results = {node.task_id: TaskResult(node.task_id) for node in self.nodes}
        # graphlib keeps track of which tasks may start: those whose upstreams all succeeded.
        self.sorter: TopologicalSorter[str] = TopologicalSorter(
            {node.task_id: node.upstream_task_ids for node in self.nodes}
        )
        self.sorter.prepare()
        # Ready to start, or waiting for a retry: retries first, then in topological order.
        self.queue: list[str] = []
        self.retry_at: dict[str, float] = {}
        self._take_ready()
        self.running: dict[str, _Attempt] = {}
        self.output_notes: dict[str, list[str]] = {}  # what a log or the output lacks
        # (task id, exit status, epoch seconds it ended) from output threads, (None, signal number,
        # 0) from a signal handler: SimpleQueue.put may interrupt a get() in its thread, safe there.
        self.events: queue.SimpleQueue[tuple[str | None, int, float]] = queue.SimpleQueue()
        self.stopping = False
        self.grace_ends: float | None = None  # (monotonic) once running tasks were told to stop
        self.interrupted = False
        self.signal: int | None = None

    # ---------------------------------------------------------------- scheduling
    def _take_ready(self) -> None:
        """Queue the tasks whose upstreams have all succeeded (graphlib says which)."""
        self.queue.extend(self.sorter.get_ready())
        retrying = [task_id for task_id in self.queue if task_id in self.retry_at]
        waiting = sorted(
            (task_id for task_id in self.queue if task_id not in self.retry_at),
            key=self.position.__getitem__,
        )
        self.queue = retrying + waiting

    def execute(self) -> bool:
        """Run until done; return False if stopped by a signal (Ctrl-C, SIGTERM, SIGHUP).

        However it ends, no task process is left running.
        """
        with forwarded_signals(lambda signum: self.events.put((None, signum, 0.0))):
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
                ready = [task for task in self.queue if self.retry_at.get(task, 0.0) <= now]
                for task_id in ready[: self.jobs - len(self.running)]:
                    self._start(task_id)
            # Retries not yet due; one that is due but found no free slot waits for an event.
            waits = [] if self.stopping else [at - now for at in self.retry_at.values() if at > now]
            if not self.running and not waits:
                return True
            try:
                finished, status, ended = self.events.get(timeout=min(waits) if waits else None)
            except queue.Empty:
                continue
            if finished is None:
                self._interrupt(status)
                return False
            self._finished(finished, status, ended)

    def _interrupt(self, signum: int) -> None:
        self.interrupted, self.signal = True, signum
        name = signal.Signals(signum).name
        self.out.line("runner", f"interrupted: stopping the running tasks ({name})")
        self._stop_running(signum)

    def _settle_pending(self) -> None:
        why = "the run was interrupted" if self.interrupted else "another task failed"
        for task_id, result in self.results.items():
            if result.attempts == 0:
                if not result.note:
                    result.state = TaskState.SKIPPED
                    result.note = f"not run: {why}" if self.stopping else "not run"
            elif task_id in self.queue:  # waited for a retry when the run stopped
                result.state, result.note = TaskState.FAILED, f"retry not run: {why}"
        for task_id, notes in self.output_notes.items():
            result = self.results[task_id]
            result.note = "; ".join([result.note, *notes] if result.note else notes)

    def _stop_running(self, signum: int) -> None:
        """Pass ``signum`` to the process group of every running task, give them the grace period
        to end (a second signal ends the wait), then kill what is left of each group."""
        self.stopping = True
        stopped = list(self.running.values())
        for attempt in stopped:
            signal_group(attempt.process, signum)
        self.grace_ends = deadline = time.monotonic() + GRACE_SECONDS
        while self.running and (left := deadline - time.monotonic()) > 0:
            try:
                task_id, status, ended = self.events.get(timeout=left)
            except queue.Empty:
                break
            if task_id is None:  # asked again: stop waiting
                break
            self._ended(task_id, status, ended)
            result = self.results[task_id]
            if status == 0:  # had finished before it was told to stop
                result.state = TaskState.SUCCESS
            else:
                result.state, result.note = TaskState.FAILED, "interrupted"
        for attempt in self.running.values():
            signal_group(attempt.process, signal.SIGKILL)
        for attempt in stopped:  # their logs complete before the summary; they reap the tasks
            attempt.reader.join(DRAIN_SECONDS + 2.0)
        for task_id, attempt in list(self.running.items()):
            self._ended(task_id, attempt.process.wait(), time.time())
            result = self.results[task_id]
            result.state, result.note = TaskState.FAILED, "killed"
        for attempt in stopped:  # whatever a task started and left behind in its group
            signal_group(attempt.process, signal.SIGKILL)

    # ---------------------------------------------------------------- processes
    def _start(self, task_id: str) -> None:
        node = self.by_id[task_id]
        result = self.results[task_id]
        self.queue.remove(task_id)
        self.retry_at.pop(task_id, None)
        result.attempts += 1
        result.log_path = self.log_dir / f"{task_id}.log"
        started = time.time()
        if result.started is None:
            result.started = started
        header = f"--- {task_id} attempt {result.attempts} (recipe run {self.recipe_run_id}, {self.run_id})"
        output = TaskOutput(task_id, result.log_path, header, self.out)
        command = [  # --opt=value: a name or version that starts with "-" is never an option
            sys.executable,
            "-m",
            "dkist_processing_core.run_task",
            f"--module={node.module_path}",
            f"--task={node.task_id}",
            f"--workflow-name={self.workflow.workflow_name}",
            f"--workflow-version={self.workflow.workflow_version}",
        ]
        try:
            process = start_in_session(command, self.env)
        except OSError as error:
            output.close()
            raise RunError(f"cannot start the process of task {task_id}: {error}") from error
        reader = threading.Thread(target=lambda: self._pump(attempt), daemon=True)
        attempt = _Attempt(task_id, process, started, output, reader)
        self.running[task_id] = attempt  # first: Ctrl-C must find it
        attempt_text = (
            f" (attempt {result.attempts} of {node.retries + 1})" if result.attempts > 1 else ""
        )
        reader.start()
        self.out.line("runner", f"started {task_id}{attempt_text}, pid {process.pid}")

    def _pump(self, attempt: _Attempt) -> None:
        """Copy the task's output until the task has ended; always report how it ended."""
        ended_at = None
        try:
            ended_at = attempt.output.follow(attempt.process, self._linger).at
        finally:  # (if the copy failed, follow killed the task)
            attempt.output.close()
            self.events.put((attempt.task_id, attempt.process.wait(), ended_at or time.time()))

    def _linger(self) -> float:
        """How long what an ended task left in its group may go on: the rest of a stop's grace."""
        return 0.0 if self.grace_ends is None else self.grace_ends - time.monotonic() + 1.0

    def _ended(self, task_id: str, exit_code: int, ended: float) -> _Attempt:
        """Take the attempt off the running ones; its exit status, end and output notes."""
        attempt = self.running.pop(task_id)
        result = self.results[task_id]
        result.ended, result.exit_code = ended, exit_code
        self.output_notes.setdefault(task_id, []).extend(attempt.output.notes())
        return attempt

    def _finished(self, task_id: str, exit_code: int, ended: float) -> None:
        attempt = self._ended(task_id, exit_code, ended)
        node = self.by_id[task_id]
        result = self.results[task_id]
        took = ended - attempt.started
        if exit_code == 0:
            result.state = TaskState.SUCCESS
            self.out.line("runner", f"{task_id} succeeded in {took:.2f} s")
            self.sorter.done(task_id)
            self._take_ready()
            return
        retryable = exit_code != _BAD_INVOCATION and result.attempts <= node.retries
        if retryable and not self.stopping:
            delay = float(node.retry_delay_seconds)
            self.out.line(
                "runner",
                f"{task_id} failed (exit {exit_code}) on attempt {result.attempts} of {node.retries + 1}; "
                f"retrying in {delay:g} s",
            )
            self.queue.insert(0, task_id)
            self.retry_at[task_id] = time.monotonic() + delay
            return
        result.state = TaskState.FAILED
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
        if not self.stopping and (self.queue or self.running or self.sorter.is_active()):
            self.out.line("runner", "no new tasks will start; waiting for the running ones")
        self.stopping = True
        if self.report_failures:
            context = failure_context(self.workflow, self.run_id, self.recipe_run_id, node, result)
            self.out.line("runner", report_on_isb(self.workflow, node, context))


class LocalEngine:
    """``--engine local``: see the module docstring.

    ``jobs`` defaults to the CPU count; ``log_dir`` (default: under :func:`default_log_root`)
    receives one log per task; task output is also written to ``stream`` (default stdout), each
    line prefixed with ``[TaskName]``. ``env`` replaces ``os.environ`` for the tasks.
    """

    name: ClassVar[str] = "local"
    options: ClassVar[frozenset[str]] = frozenset(
        {"jobs", "log_dir", "stream", "env", "report_failures", "run_id"}
    )

    def __init__(
        self,
        *,
        jobs: int | None = None,
        log_dir: str | Path | None = None,
        stream: IO[str] | None = None,
        env: dict[str, str] | None = None,
        report_failures: bool = True,
        run_id: str | None = None,
    ) -> None:
        if jobs is None:
            from dkist_processing_core.config import core_configuration

            jobs = core_configuration().cpu_count
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
        self.jobs = jobs
        # Absolute from here on: task processes, file URIs and the summary all see the same folder.
        self.log_dir = None if log_dir is None else Path(log_dir).expanduser().absolute()
        self.stream = stream
        self.env = env
        self.report_failures = report_failures
        self.run_id = run_id

    def run(self, workflow: Workflow, recipe_run_id: int) -> RunSummary:
        """Run every task in its own process in dependency order; return the summary."""
        workflow.check_dag()
        run_id = self.run_id or local_run_id()
        path_safe_run_id = re.sub(r"[^A-Za-z0-9._-]", "-", run_id)
        folder = self.log_dir or default_log_root() / workflow.dag_name / path_safe_run_id
        folder.mkdir(parents=True, exist_ok=True)
        task_env = dict(os.environ if self.env is None else self.env)
        task_env[RECIPE_RUN_ID_VARIABLE] = str(recipe_run_id)
        task_env["PYTHONUNBUFFERED"] = "1"
        output = Output(self.stream or sys.stdout)
        output.line(
            "runner",
            f"running {workflow.dag_name} ({len(workflow.nodes)} tasks) for recipe run {recipe_run_id}, "
            f"run id {run_id}, up to {self.jobs} at a time; logs in {folder}",
        )
        run = _LocalRun(
            workflow,
            recipe_run_id,
            self.jobs,
            folder,
            run_id,
            output,
            task_env,
            self.report_failures,
        )
        started = time.monotonic()
        completed = run.execute()
        return RunSummary(
            engine=self.name,
            dag_id=workflow.dag_name,
            run_id=run_id,
            recipe_run_id=recipe_run_id,
            results=[run.results[node.task_id] for node in run.nodes],
            duration=time.monotonic() - started,
            log_dir=folder,
            interrupted=not completed,
            signal=run.signal,
        )
