"""A recipe run id that is not an integer stops the task before anything is installed or run.

The value reaches the task only through ``dag_run.conf`` -> the environment variable RECIPE_RUN_ID,
which the worker program checks first (``dkist_processing_core.recipe_run_id``): shell syntax in it
is never executed.
"""

from __future__ import annotations

import shlex

import pytest
from dkist_processing_core.worker import read_events
from e2e.support import FIXTURE_VERSIONS

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

WORKFLOW = "E2E_Versioned"
DAG_ID = f"{WORKFLOW}_{FIXTURE_VERSIONS[0]}"


def test_shell_in_recipe_run_id_fails_before_install_and_leaves_nothing(e2e, tmp_path):
    markers = [tmp_path / name for name in ("semicolon", "substitution", "backtick", "pipe")]
    hostile = (
        f"1; touch {shlex.quote(str(markers[0]))}"
        f" $(touch {shlex.quote(str(markers[1]))})"
        f" `touch {shlex.quote(str(markers[2]))}`"
        f" | touch {shlex.quote(str(markers[3]))}"
    )

    run = e2e.run_dag(DAG_ID, {"recipe_run_id": hostile})

    assert run.conf == {"recipe_run_id": hostile}
    assert run.state == "failed", run.tail()
    assert run.returncode == 1, run.tail()
    assert run.task_states == {"ReportVersion": "failed"}, run.tail()
    assert run.tasks["ReportVersion"].try_number == 1  # no retries configured, none made
    # the clear message, naming the value and the conf key: the worker's only event
    events = list(read_events(run.output))
    assert [(event, fields["step"], fields["status"]) for event, fields in events] == [
        ("error", "prepare", 2)
    ], run.tail()
    message = str(events[0][1]["message"])
    assert message.startswith("recipe run id must be a non-negative integer"), message
    assert "got '1; touch " in message and "conf key recipe_run_id" in message
    # nothing after the check ran: no marker, no venv, no install, no task, no record, no span
    assert [marker for marker in markers if marker.exists()] == []
    assert list(e2e.tmp.iterdir()) == [], "the failed task left files in its TMPDIR"
    assert e2e.venvs_left() == []
    assert "Successfully installed" not in run.output
    assert "Looking in links" not in run.output
    assert "start" not in [event for event, _ in events]  # the task was never started
    assert not e2e.records.exists()
    assert e2e.receiver.spans() == []
    # operators still hear about it: the failure callback reported the task
    (report,) = e2e.failure_reports(expected=1)
    assert report.json()["taskName"] == "ReportVersion"
    assert report.json()["dagRunId"] == run.run_id
