"""Exported workflows on a distributed Airflow 3: CeleryExecutor, queue-routed workers, pools, ISB.

One cluster (tests/helpers/airflow_cluster.py): PostgreSQL metadata database, Redis broker,
scheduler, DAG processor, API server, a worker on queue ``default`` and one on ``high_memory``.
Three DAG runs are triggered together through the REST API:

* the example pipeline's data-form workflow l0 -> l1 (one task on ``high_memory``),
* the test pipeline's pool probe: two high-memory tasks with no dependency between them,
* the test pipeline's failing workflow: one task that always fails.

Every task really runs the exported command (the worker program of core-task): a throw-away venv, ``pip install`` of the
pipeline at its pinned version from the wheelhouse, then ``python -m dkist_processing_core.run_task``.
Where a task ran comes from Airflow (the task instance's ``hostname``, which each worker records as
its own name) and, for the pool probe, from the task itself (``DKIST_WORKER_NAME``).

One test function on purpose: the cluster is the expensive part, and under ``pytest -n auto`` with
the default distribution several test functions could each start their own cluster.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers.airflow_cluster import AirflowCeleryCluster
from helpers.rabbitmq import IsbNames
from helpers.rabbitmq import consume_all

pytestmark = [pytest.mark.celery, pytest.mark.xdist_group("celery")]

EXAMPLE_RECIPE_RUN_ID = 9101
POOL_PROBE_RECIPE_RUN_ID = 9102
FAILING_RECIPE_RUN_ID = 9103
#: Upper bound for all three runs on a loaded 2-core CI machine (they take ~1 min when idle).
RUNS_BOUND_SECONDS = 300
#: Bound for the failure report to reach the queue after the run failed.
REPORT_BOUND_SECONDS = 60
#: After the report arrived, how long we keep listening for a duplicate.
DUPLICATE_WATCH_SECONDS = 5


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _overlaps(intervals: list[tuple[str, Any, Any]]) -> list[str]:
    """Pairs of (name, start, end) intervals that overlap, as readable text."""
    ordered = sorted(intervals, key=lambda item: item[1])
    return [
        f"{a[0]} [{a[1]} .. {a[2]}] overlaps {b[0]} [{b[1]} .. {b[2]}]"
        for a, b in zip(ordered, ordered[1:], strict=False)
        if b[1] < a[2]
    ]


def _placement_table(tis: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for label, instances in tis.items():
        for ti in sorted(instances, key=lambda t: t["start_date"] or ""):
            lines.append(
                f"{label:8} {ti['task_id']:24} {ti['state'] or '-':8} queue={ti['queue']:12} "
                f"pool={ti['pool']:17} worker={ti['hostname'] or '-':19} "
                f"{ti['start_date']} .. {ti['end_date']}"
            )
    return "\n".join(lines)


def test_exported_workflows_run_on_queue_routed_celery_workers(
    celery_deployment: Any, isb_names: IsbNames
) -> None:
    started = time.monotonic()
    cluster: AirflowCeleryCluster = celery_deployment.cluster
    exported_dags = celery_deployment.dags
    # Which worker serves which queue (the harness starts one per queue).
    worker_of = {queue: spec.name for spec in cluster.workers for queue in spec.queues}
    default_worker, high_memory_worker = worker_of["default"], worker_of["high_memory"]
    assert default_worker != high_memory_worker
    cluster.wait_for_dags(
        [exported_dags.example, exported_dags.pool_probe, exported_dags.failing], timeout=180
    )

    runs = {
        "example": (
            exported_dags.example,
            cluster.trigger(exported_dags.example, {"recipe_run_id": EXAMPLE_RECIPE_RUN_ID}),
        ),
        "pool": (
            exported_dags.pool_probe,
            cluster.trigger(exported_dags.pool_probe, {"recipe_run_id": POOL_PROBE_RECIPE_RUN_ID}),
        ),
        "failing": (
            exported_dags.failing,
            cluster.trigger(exported_dags.failing, {"recipe_run_id": FAILING_RECIPE_RUN_ID}),
        ),
    }
    states = cluster.wait_for_runs(runs.values(), timeout=RUNS_BOUND_SECONDS)
    tis = {
        label: cluster.task_instances(dag_id, run_id) for label, (dag_id, run_id) in runs.items()
    }
    table = _placement_table(tis)
    print(f"\nDAG runs finished after {time.monotonic() - started:.0f} s:\n{table}")
    context = f"\n{table}\n{cluster.diagnostics(lines=15)}"

    # 1. The example's data-form workflow succeeded, every task on the worker of its queue.
    example = tis["example"]
    assert states[runs["example"]] == "success", f"example run: {states[runs['example']]}{context}"
    assert len(example) == 8, (
        f"expected the 8 tasks of l0 -> l1, got {[t['task_id'] for t in example]}"
    )
    assert {t["state"] for t in example} == {"success"}, context
    high_memory = [t["task_id"] for t in example if t["queue"] == "high_memory"]
    assert high_memory == ["PolarimetricCalibration"], (
        f"high-memory tasks of the example: {high_memory}"
    )
    misplaced = [
        f"{t['task_id']} ran on {t['hostname']}"
        for t in example
        if t["hostname"] != worker_of[t["queue"]]
    ]
    assert not misplaced, f"tasks on the wrong worker: {misplaced}{context}"
    assert {t["pool"] for t in example} == {"default_pool", "high_memory_pool"}, context

    # 2. The pool probe: both high-memory tasks on the high-memory worker, never at the same time.
    pool = tis["pool"]
    assert states[runs["pool"]] == "success", f"pool probe run: {states[runs['pool']]}{context}"
    assert sorted((t["task_id"], t["state"], t["hostname"], t["pool"]) for t in pool) == [
        ("HighMemoryA", "success", high_memory_worker, "high_memory_pool"),
        ("HighMemoryB", "success", high_memory_worker, "high_memory_pool"),
    ], context
    # Airflow's times, over every task in the 1-slot pool (the example's one included) ...
    in_pool = [
        (f"{label}/{t['task_id']}", _when(t["start_date"]), _when(t["end_date"]))
        for label, instances in tis.items()
        for t in instances
        if t["pool"] == "high_memory_pool"
    ]
    assert len(in_pool) == 3, context
    assert not _overlaps(in_pool), (
        f"high_memory_pool has 1 slot, yet: {_overlaps(in_pool)}{context}"
    )
    # ... and the tasks' own records of where and when their work ran.
    records_dir = Path(cluster.root / "records" / f"recipe-run-{POOL_PROBE_RECIPE_RUN_ID}")
    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    assert [(r["task"], r["worker"]) for r in records] == [
        ("HighMemoryA", high_memory_worker),
        ("HighMemoryB", high_memory_worker),
    ], records
    recorded = [(r["task"], r["start"], r["end"]) for r in records]
    assert not _overlaps(recorded), f"the tasks' own records overlap: {_overlaps(recorded)}"

    # 3. The failing task failed on the default worker and was reported exactly once on the ISB.
    failing = tis["failing"]
    assert states[runs["failing"]] == "failed", f"failing run: {states[runs['failing']]}{context}"
    assert [(t["task_id"], t["state"], t["hostname"]) for t in failing] == [
        ("AlwaysFails", "failed", default_worker)
    ], context
    reports = consume_all(isb_names.queue, expected=1, timeout=REPORT_BOUND_SECONDS)
    reports += consume_all(isb_names.queue, expected=1, timeout=DUPLICATE_WATCH_SECONDS)
    assert len(reports) == 1, (
        f"expected one failure report, got {[r.body for r in reports]}{context}"
    )
    report = reports[0]
    body = report.json()
    assert report.routing_key == "recipe.run.failure.m"
    assert report.exchange == isb_names.exchange
    assert report.properties.delivery_mode == 2  # persistent
    assert body["taskName"] == "AlwaysFails"
    assert body["dagRunId"] == runs["failing"][1]
    assert f"{body['workflowName']}_{body['workflowVersion']}" == exported_dags.failing
    assert body["conversationId"]
    outbox_left = sorted(p.name for p in (cluster.root / "isb-outbox").rglob("*.json"))
    assert not outbox_left, f"failure reports left unconfirmed in the outbox: {outbox_left}"
