"""``dkist-processing-core run``: the local engine and ``--engine airflow``, as real subprocesses.

Parallelism is judged from the start/end times the tasks record themselves, never from wall time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from dkist_processing_core.isb import FAILURE_ROUTING_KEY
from dkist_processing_core.worker import read_events
from helpers.build_cli import EXAMPLE_PACKAGE
from helpers.build_cli import FAILING_PACKAGE
from helpers.build_cli import cli_command
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import require_rabbitmq
from helpers.rabbitmq import unique_names

CALIBRATIONS = [
    "DarkCalibration",
    "GainCalibration",
    "GeometricCalibration",
    "WavelengthCalibration",
    "PolarimetricCalibration",
]
L0_TO_L1_ORDER = ["ParseL0Inputs", *CALIBRATIONS, "ScienceCalibration", "QualityReport"]


def timeline(scratch: Path, recipe_run_id: int) -> dict[str, tuple[float, float]]:
    folder = scratch / f"recipe-run-{recipe_run_id}" / "timeline"
    records = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    return {name: (record["start"], record["end"]) for name, record in records.items()}


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start (+1)
        running += change
        peak = max(peak, running)
    return peak


def summary_states(stdout: str) -> dict[str, str]:
    start = stdout.index("Summary of ")
    states = {}
    for line in stdout[start:].splitlines()[1:]:
        match = re.match(r"  (success|failed|skipped)\s+(\w+)", line)
        if match:
            states[match.group(2)] = match.group(1)
    return states


def test_run_the_seed_workflow(cli, tmp_path):
    result = cli(
        "run",
        EXAMPLE_PACKAGE,
        "My_Workflow",
        "--recipe-run-id",
        "1",
        "--log-dir",
        str(tmp_path / "logs"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[MyTask1] Running MyTask1" in lines
    assert "[MyTask2] Running MyTask2" in lines
    # MyTask2 starts only after MyTask1 ran.
    assert lines.index("[MyTask1] Running MyTask1") < lines.index(
        f"[runner] started MyTask2, pid {_pid_of(lines, 'MyTask2')}"
    )
    assert summary_states(result.stdout) == {"MyTask1": "success", "MyTask2": "success"}
    assert (
        "My_Workflow_dev succeeded: 2 succeeded, 0 failed, 0 skipped (not run) of 2 tasks"
        in result.stdout
    )
    assert "Running MyTask1" in (tmp_path / "logs" / "MyTask1.log").read_text()


def _pid_of(lines: list[str], task: str) -> str:
    prefix = f"[runner] started {task}, pid "
    return next(line[len(prefix) :] for line in lines if line.startswith(prefix))


def test_jobs_2_runs_independent_tasks_two_at_a_time_and_retries_a_failed_attempt(
    cli, scratch, tmp_path
):
    result = cli(
        "run",
        EXAMPLE_PACKAGE,
        "l0_to_l1_example",
        "--recipe-run-id",
        "11",
        "--jobs",
        "2",
        "--log-dir",
        str(tmp_path / "logs"),
        DKIST_EXAMPLE_TASK_SLEEP="1.5",
        DKIST_EXAMPLE_FAIL_FIRST_ATTEMPT="1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    times = timeline(scratch, 11)
    assert sorted(times) == sorted(L0_TO_L1_ORDER)
    # Dependencies: every calibration after the inputs, science after every calibration.
    assert all(times[name][0] >= times["ParseL0Inputs"][1] for name in CALIBRATIONS)
    assert times["ScienceCalibration"][0] >= max(times[name][1] for name in CALIBRATIONS)
    assert times["QualityReport"][0] >= times["ScienceCalibration"][1]
    # Two at a time, never more.
    assert most_at_once([times[name] for name in CALIBRATIONS]) == 2
    assert most_at_once(list(times.values())) == 2
    # ScienceCalibration failed once on purpose and was retried (retries = 2), without a failure report.
    assert re.search(
        r"\[runner\] ScienceCalibration failed \(exit 1\) on attempt 1 of 3; retrying in 1 s",
        result.stdout,
    )
    assert re.search(r"  success  ScienceCalibration\s+[\d.]+ s  \(2 attempts\)", result.stdout)
    assert "failure report" not in result.stdout
    assert json.loads((scratch / "recipe-run-11" / "quality.json").read_text())["frames"] == 16


def test_jobs_1_runs_one_task_at_a_time_in_topological_order(cli, scratch, tmp_path):
    result = cli(
        "run",
        EXAMPLE_PACKAGE,
        "l0_to_l1_example_dev",
        "--recipe-run-id",
        "12",
        "--jobs",
        "1",
        "--log-dir",
        str(tmp_path / "logs"),
        DKIST_EXAMPLE_TASK_SLEEP="0.5",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    times = timeline(scratch, 12)
    assert most_at_once(list(times.values())) == 1
    assert sorted(times, key=lambda name: times[name][0]) == L0_TO_L1_ORDER
    assert list(summary_states(result.stdout)) == L0_TO_L1_ORDER


def test_a_failed_task_stops_the_run_and_is_reported_on_the_isb(cli, scratch, tmp_path):
    require_rabbitmq()
    names = replace(unique_names("build-run"), routing_key=FAILURE_ROUTING_KEY)
    declare_queue(names)
    log_dir = tmp_path / "logs"
    try:
        result = cli(
            "run",
            FAILING_PACKAGE,
            "--recipe-run-id",
            "21",
            "--jobs",
            "2",
            "--log-dir",
            str(log_dir),
            ISB_EXCHANGE=names.exchange,
            ISB_PUBLISH_TIMEOUT="20",
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert summary_states(result.stdout) == {
            "Start": "success",
            "Boom": "failed",
            "Sleepy": "success",  # was running when Boom failed: waited for, not killed
            "Later": "skipped",  # ready, but no new task starts after a failure
            "End": "skipped",
        }
        assert (
            "Failing_Demo_dev FAILED: 2 succeeded, 1 failed, 2 skipped (not run) of 5 tasks"
            in result.stdout
        )
        assert "[runner] no new tasks will start; waiting for the running ones" in result.stdout
        assert "[Sleepy] Sleepy finished after Boom failed" in result.stdout
        assert "[runner] started Later" not in result.stdout
        assert re.search(r"\[Boom\] RuntimeError: Boom fails on purpose", result.stdout)
        assert "[runner] failure report of Boom published on the interservice bus" in result.stdout

        deliveries = consume_all(names.queue, expected=1)
        assert len(deliveries) == 1
        body = deliveries[0].json()
        assert body["workflowName"] == "Failing_Demo"
        assert body["workflowVersion"] == "dev"
        assert body["taskName"] == "Boom"
        assert body["dagRunId"].startswith("local__")
        assert body["dagRunId"] in result.stdout
        assert body["logUrl"] == (log_dir / "Boom.log").as_uri()
        assert "RuntimeError: Boom fails on purpose" in (log_dir / "Boom.log").read_text()
        assert not list((tmp_path / "isb-outbox").glob("*.json"))  # delivered, not parked
    finally:
        delete_names(names)


def test_engine_airflow_refuses_a_version_pip_cannot_install(cli):
    result = cli(
        "run", EXAMPLE_PACKAGE, "My_Workflow", "--recipe-run-id", "1", "--engine", "airflow"
    )
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1
    assert "dkist-processing-example==dev" in result.stderr
    assert "BUILD_VERSION=1.0.0" in result.stderr


def test_engine_airflow_runs_the_example_through_dag_test(cli, scratch):
    result = cli(
        "run",
        EXAMPLE_PACKAGE,
        "l0_to_l1_example",
        "--recipe-run-id",
        "31",
        "--engine",
        "airflow",
        BUILD_VERSION="1.0.0",
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr
    assert summary_states(result.stdout) == dict.fromkeys(L0_TO_L1_ORDER, "success")
    assert "(engine airflow)" in result.stdout
    assert (
        "l0_to_l1_example_1.0.0 succeeded: 8 succeeded, 0 failed, 0 skipped (not run) of 8 tasks"
        in result.stdout
    )
    assert "Airflow DagRun state: success" in result.stdout
    # Each task ran in its own throw-away venv installed from the local wheelhouse.
    assert "building wheels of dkist-processing-example" in result.stdout
    # (uv installs when it is on PATH, as in this test environment; pip otherwise)
    setups = [fields for event, fields in read_events(result.stdout) if event == "setup"]
    assert len(setups) == len(L0_TO_L1_ORDER), result.stdout[-5000:]
    assert {(fields["installer"], fields["cache"]) for fields in setups} <= {
        ("uv", "off"),
        ("pip", "off"),
    }
    exits = sorted(
        (fields["task"], fields["status"])
        for e, fields in read_events(result.stdout)
        if e == "exit"
    )
    assert exits == sorted((task, 0) for task in L0_TO_L1_ORDER)
    assert (
        json.loads((scratch / "recipe-run-31" / "quality.json").read_text())["workflow"]
        == "l0_to_l1_example 1.0.0"
    )


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.parametrize("to_group", [False, True], ids=["kill-INT-runner", "ctrl-c-terminal"])
def test_ctrl_c_stops_the_running_tasks_prints_the_summary_and_exits_130(cli, tmp_path, to_group):
    # To the runner only (`kill -INT`, it must terminate its task processes itself), or to its
    # whole process group, as Ctrl-C in a terminal does (the tasks get SIGINT too).
    process = subprocess.Popen(
        [
            *cli_command(),
            "run",
            EXAMPLE_PACKAGE,
            "l0_to_l1_example",
            "--recipe-run-id",
            "41",
            "--jobs",
            "2",
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        env={**cli.env, "DKIST_EXAMPLE_TASK_SLEEP": "600"},
        cwd=cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell may start background jobs with SIGINT ignored; the runner must see Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        pids: dict[str, int] = {}
        working: set[str] = set()
        for line in process.stdout:
            seen.append(line)
            if match := re.match(r"\[runner\] started (\w+Calibration), pid (\d+)$", line):
                pids[match.group(1)] = int(match.group(2))
            if match := re.match(r"\[(\w+Calibration)\] .* l0_to_l1_example\.\1 started", line):
                working.add(match.group(1))  # reads the L0 frames, then sleeps
            if len(working) == 2:
                break
        assert len(pids) == 2 and working == set(pids), "".join(seen)
        if to_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the run, tasks too
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    stdout = "".join(seen) + rest
    assert process.returncode == 130, stdout + stderr
    assert "[runner] interrupted: stopping the running tasks" in stdout
    assert not [pid for pid in pids.values() if _alive(pid)], "task processes left running"
    states = summary_states(stdout)
    assert states["ParseL0Inputs"] == "success"
    assert {states[name] for name in pids} == {"failed"}
    assert [name for name, state in states.items() if state == "skipped"] == [
        name for name in L0_TO_L1_ORDER if name != "ParseL0Inputs" and name not in pids
    ]
    assert (
        "l0_to_l1_example_dev interrupted: 1 succeeded, 2 failed, 5 skipped (not run) of 8 tasks"
        in stdout
    )
    assert "an earlier task failed" not in stdout  # nothing failed: the user stopped the run
    assert "failure report" not in stdout  # an interrupt is not a task failure
    assert "Traceback" not in stderr


def test_a_closed_stdout_does_not_hang_or_stop_the_run(cli, scratch, tmp_path):
    # As in `dkist-processing-core run ... | head`: the reader goes away while tasks run.
    process = subprocess.Popen(
        [
            *cli_command(),
            "run",
            EXAMPLE_PACKAGE,
            "l0_to_l1_example",
            "--recipe-run-id",
            "42",
            "--jobs",
            "2",
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        env={**cli.env, "DKIST_EXAMPLE_TASK_SLEEP": "1"},
        cwd=cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("[runner] started DarkCalibration"):
                break
        process.stdout.close()
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Every task ran to the end and wrote its log, though nobody read the output.
    assert json.loads((scratch / "recipe-run-42" / "quality.json").read_text())["frames"] == 16
    assert "QualityReport complete" in (tmp_path / "logs" / "QualityReport.log").read_text()
    # The summary could not be printed: one readable line says so, and the exit status is the
    # run's (issue 14: it used to be 1, with a BrokenPipeError, after a successful run).
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "dkist-processing-core: the summary was not printed: standard output is closed"
    ]
    assert process.returncode == 0


class _FailingStream(io.StringIO):
    """Raises (in the runner's own thread) once the runner announced ``task``."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task

    def write(self, text: str) -> int:
        super().write(text)
        if (
            text.startswith(f"[runner] started {self.task}")
            and threading.current_thread() is threading.main_thread()
        ):
            raise RuntimeError("the runner broke")
        return len(text)


def test_an_error_in_the_runner_leaves_no_task_running(cli, tmp_path):
    from dkist_processing_core.runner import run_local
    from dkist_processing_example.workflows.l0_to_l1 import l0_to_l1

    stream = _FailingStream("GainCalibration")
    with pytest.raises(RuntimeError, match="the runner broke"):
        run_local(
            l0_to_l1,
            43,
            jobs=2,
            log_dir=tmp_path / "logs",
            stream=stream,
            env={**cli.env, "DKIST_EXAMPLE_TASK_SLEEP": "600"},
            report_failures=False,
        )
    pids = [
        int(pid)
        for pid in re.findall(r"\[runner\] started \w+Calibration, pid (\d+)", stream.getvalue())
    ]
    assert len(pids) == 2, stream.getvalue()
    assert not [pid for pid in pids if _alive(pid)], "task processes left running"


def test_a_retry_waiting_for_a_free_slot_does_not_keep_the_runner_busy(
    cli, fixture_packages, tmp_path
):
    from build_fixture_retry.tasks import SLOW_SECONDS
    from build_fixture_retry.workflows import retry
    from dkist_processing_core.runner import run_local

    cpu_before = time.thread_time()
    summary = run_local(
        retry, 44, jobs=2, log_dir=tmp_path / "logs", stream=io.StringIO(), env=cli.env
    )
    runner_cpu = time.thread_time() - cpu_before
    assert [(r.task_id, r.state, r.attempts) for r in summary.results] == [
        ("Flaky", "success", 2),
        ("Slow1", "success", 1),
        ("Slow2", "success", 1),
    ]
    # Flaky's retry was due about SLOW_SECONDS - 1 s before a slot came free; the runner's own
    # thread must have slept through that wait instead of polling the whole time.
    assert runner_cpu < (SLOW_SECONDS - 1) / 4, f"runner thread used {runner_cpu:.2f} s of CPU"
