"""The example pipeline's fan-out/fan-in workflow, exported with the CLI and run by Airflow itself.

Every BashOperator makes its throw-away venv, installs ``dkist-processing-example[frozen]==1.0.0``
from the wheelhouse alone and runs its task; the tasks' spans and counters reach the test's OTLP
receiver.
"""

from __future__ import annotations

import json

import pytest
from dkist_processing_core.worker import read_events
from e2e.support import EXAMPLE_VERSION
from e2e.support import NOMAD
from e2e.support import SERVICE_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

WORKFLOW = "l0_to_l1_example"
DAG_ID = f"{WORKFLOW}_{EXAMPLE_VERSION}"
RECIPE_RUN_ID = 4711


def _upstreams() -> dict[str, list[str]]:
    """Task id -> upstream task ids, from the example's own workflow definition."""
    from dkist_processing_example.workflows.l0_to_l1 import l0_to_l1

    return {node.task_id: node.upstream_task_ids for node in l0_to_l1.nodes}


def test_every_example_dag_was_exported(airflow_site):
    # The seed README's example pins workflow_version="dev": it is exported (and loads in a
    # DagBag, which export-dags checks) but no worker can install version "dev", so it is not run.
    assert "My_Workflow_dev" in airflow_site.dag_ids
    assert DAG_ID in airflow_site.dag_ids
    source = (airflow_site.dags / f"{DAG_ID}.py").read_text()
    assert f"'dkist-processing-example[frozen]=={EXAMPLE_VERSION}'" in source


def test_example_workflow_runs_in_dependency_order_with_telemetry(e2e):
    upstreams = _upstreams()
    assert len(upstreams) == 8, upstreams

    run = e2e.run_dag(DAG_ID, {"recipe_run_id": RECIPE_RUN_ID})

    # 1. Airflow ran every task once, successfully, each after all of its upstreams had ended.
    assert run.state == "success", run.tail()
    assert run.returncode == 0, run.tail()
    assert run.conf == {"recipe_run_id": RECIPE_RUN_ID}
    assert run.task_states == dict.fromkeys(upstreams, "success"), run.tail()
    assert {task.try_number for task in run.tasks.values()} == {1}
    for task_id, task_upstreams in upstreams.items():
        for upstream in task_upstreams:
            assert run.tasks[upstream].end <= run.tasks[task_id].start, (
                f"{task_id} started before its upstream {upstream} ended: "
                f"{run.tasks[upstream]} / {run.tasks[task_id]}"
            )

    # 2. ... and the tasks' own records agree: each did its work after its upstreams' work.
    scratch = e2e.scratch / f"recipe-run-{RECIPE_RUN_ID}"
    timeline = {
        path.stem: json.loads(path.read_text()) for path in (scratch / "timeline").glob("*.json")
    }
    assert set(timeline) == set(upstreams)
    for task_id, task_upstreams in upstreams.items():
        for upstream in task_upstreams:
            assert timeline[upstream]["end"] <= timeline[task_id]["start"], (task_id, upstream)
    assert len({record["pid"] for record in timeline.values()}) == len(
        upstreams
    )  # one process each
    quality = json.loads((scratch / "quality.json").read_text())
    assert quality["recipe_run_id"] == RECIPE_RUN_ID
    assert quality["workflow"] == f"{WORKFLOW} {EXAMPLE_VERSION}"
    assert quality["frames"] == 16

    # 3. Each task ran from a pipeline installed out of the wheelhouse at the pinned version, in a
    #    venv that is gone now.
    events = list(read_events(run.output))
    listings = [fields["distributions"] for event, fields in events if event == "packages"]
    assert len(listings) == len(upstreams), run.tail()
    assert all(f"dkist-processing-example=={EXAMPLE_VERSION}" in listing for listing in listings)
    exits = sorted(
        (fields["task"], fields["status"]) for event, fields in events if event == "exit"
    )
    assert exits == sorted((task_id, 0) for task_id in upstreams), run.tail()
    assert e2e.venvs_left() == []

    # 4. Spans: per task one root span "{workflow}.{task}" with the spec's attributes, and its
    #    Pre Run / Run / Post Run children in the same trace.
    spans = e2e.receiver.spans()
    for task_id in upstreams:
        root = e2e.receiver.span(f"{WORKFLOW}.{task_id}")
        expected = {
            "recipe.run.id": RECIPE_RUN_ID,
            "workflow.name": WORKFLOW,
            "workflow.version": EXAMPLE_VERSION,
            "task.name": task_id,
            "nomad.allocation.id": NOMAD["NOMAD_ALLOC_ID"],
            "nomad.allocation.name": NOMAD["NOMAD_ALLOC_NAME"],
            "nomad.allocation.group": NOMAD["NOMAD_GROUP_NAME"],
        }
        assert {key: root.attributes.get(key) for key in expected} == expected, root
        assert root.parent_span_id is None
        assert root.status == "OK", root
        assert root.resource.get("service.name") == SERVICE_NAME
        children = {
            span.name: span
            for span in spans
            if span.trace_id == root.trace_id and span.parent_span_id == root.span_id
        }
        assert {"Pre Run", "Run", "Post Run"} <= set(children), (task_id, sorted(children))
        for child in children.values():
            assert child.attributes.get("recipe.run.id") == RECIPE_RUN_ID
            assert child.attributes.get("task.name") == task_id
    # the example's own spans arrive too, inside the Run span of their task
    (write_l0,) = [span for span in spans if span.name == "Write L0 frames"]
    assert write_l0.attributes.get("task.name") == "ParseL0Inputs"

    # 5. The tasks-executed counter: each task's process counted its one run (a cumulative sum may
    #    be exported more than once per process, at the flush and at shutdown, always as 1).
    counter = "dkist.processing.tasks.executed"
    points = e2e.receiver.wait_for_metric(counter)
    assert {point.value for point in points} == {1}, points
    assert {point.attributes.get("task.name") for point in points} == set(upstreams), points
    assert {point.attributes.get("recipe.run.id") for point in points} == {RECIPE_RUN_ID}

    # 6. The worker program made every task's venv with the installer it found on PATH, said so,
    #    and the task recorded it: a span "Environment Setup" first in its trace, and a histogram.
    from helpers.worker_script import cache_outcomes
    from helpers.worker_script import installers_used

    assert installers_used(run.output) == [e2e.installer] * len(upstreams), run.tail()
    assert cache_outcomes(run.output) == ["off"] * len(upstreams)
    for task_id in upstreams:
        root = e2e.receiver.span(f"{WORKFLOW}.{task_id}")
        (setup,) = [
            span
            for span in spans
            if span.name == "Environment Setup" and span.parent_span_id == root.span_id
        ]
        assert setup.trace_id == root.trace_id
        assert setup.attributes.get("installer") == e2e.installer
        assert setup.attributes.get("cache") == "off"
    durations = e2e.receiver.wait_for_metric("dkist.processing.environment.setup.duration")
    assert {point.attributes.get("installer") for point in durations} == {e2e.installer}

    # 7. Nothing failed, so nothing was reported on the interservice bus.
    assert e2e.failure_reports(expected=0, timeout=0.5) == []
