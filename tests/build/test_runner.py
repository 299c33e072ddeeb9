"""``dkist-processing-core run``: the local engine and ``--engine airflow``, as real subprocesses.

Parallelism is judged from the start/end times the tasks record themselves, never from wall time.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from dkist_processing_core.isb import FAILURE_ROUTING_KEY
from helpers.build_cli import EXAMPLE_PACKAGE
from helpers.build_cli import FAILING_PACKAGE
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
    assert "Successfully installed" in result.stdout
    assert (
        json.loads((scratch / "recipe-run-31" / "quality.json").read_text())["workflow"]
        == "l0_to_l1_example 1.0.0"
    )
