"""A task that fails under Airflow is reported on the real RabbitMQ exchange: once, with its run id."""

from __future__ import annotations

import pytest
from dkist_processing_core.worker import read_events
from e2e.support import FAILURE_ROUTING_KEY
from e2e.support import FIXTURE_VERSIONS

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

WORKFLOW = "e2e_to_failure_fixture"
VERSION = FIXTURE_VERSIONS[0]
DAG_ID = f"{WORKFLOW}_{VERSION}"
RECIPE_RUN_ID = 808


def test_failed_task_is_reported_once_on_the_interservice_bus(e2e):
    run = e2e.run_dag(DAG_ID, {"recipe_run_id": RECIPE_RUN_ID})

    # Airflow: the run failed at Explode, and NeverRuns never started.
    assert run.state == "failed", run.tail()
    assert run.returncode == 1, (
        run.tail()
    )  # the child exits 1 when a run fails, as `airflow dags test`
    assert run.task_states == {"Explode": "failed", "NeverRuns": "upstream_failed"}, run.tail()
    assert "Explode fails on purpose (tests/e2e)" in run.output
    exits = [
        (fields["task"], fields["status"]) for e, fields in read_events(run.output) if e == "exit"
    ]
    assert exits == [("Explode", 1)], run.tail()  # the worker's own report; NeverRuns never started
    assert not (e2e.records / f"recipe-run-{RECIPE_RUN_ID}").exists()  # NeverRuns left no record
    assert e2e.venvs_left() == []

    # The failure report: exactly one message on our queue, bound with the product's routing key.
    reports = e2e.failure_reports(expected=1)
    reports += e2e.failure_reports(expected=0, timeout=1.0)  # and no second one behind it
    assert len(reports) == 1, [report.body for report in reports]
    (report,) = reports
    assert report.exchange == e2e.isb.exchange
    assert report.routing_key == FAILURE_ROUTING_KEY
    assert report.properties.delivery_mode == 2  # persistent
    body = report.json()
    assert set(body) == {
        "conversationId",
        "workflowName",
        "workflowVersion",
        "taskName",
        "dagRunId",
        "logUrl",
    }
    assert body["taskName"] == "Explode"
    assert body["dagRunId"] == run.run_id
    assert (body["workflowName"], body["workflowVersion"]) == (WORKFLOW, VERSION)
    assert body["conversationId"]
    # the broker confirmed it: nothing waits in the outbox
    assert sorted(path.name for path in e2e.outbox.rglob("*") if path.is_file()) == []

    # The task's root span carries the error and the recipe run id.
    root = e2e.receiver.span(f"{WORKFLOW}.Explode")
    assert root.status == "ERROR", root
    assert root.attributes["recipe.run.id"] == RECIPE_RUN_ID
    assert root.attributes["task.name"] == "Explode"
    assert any(name == "exception" for name, _attributes in root.events), root.events
    assert f"{WORKFLOW}.NeverRuns" not in e2e.receiver.span_names()
