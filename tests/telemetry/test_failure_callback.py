"""The Airflow failure callback: the report it sends, its tolerance of odd contexts, its cost."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
from dkist_processing_core.failure_callback import chat_ops_notification
from dkist_processing_core.failure_callback import failure_report_body
from dkist_processing_core.isb_outbox import Outbox
from helpers.dag_runs import airflow_home
from helpers.dag_runs import run_dag
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import isb_target

KEYS = ["conversationId", "workflowName", "workflowVersion", "taskName", "dagRunId", "logUrl"]


@pytest.fixture
def target(names, tmp_path):
    return isb_target(names, tmp_path / "outbox")


class TaskInstance:
    """Shaped like Airflow 3's RuntimeTaskInstance where the callback looks."""

    def __init__(self, run_id: str, log_url: str) -> None:
        self.run_id = run_id
        self.log_url = log_url


def test_report_arrives_with_exactly_the_documented_fields(target, names):
    log_url = "http://airflow.example/dags/d/runs/r/tasks/T?try_number=2"
    context = {
        "run_id": "manual__2026-01-01",
        "task_instance": TaskInstance("manual__2026-01-01", log_url),
    }
    callback = functools.partial(
        chat_ops_notification,
        workflow_name="W_f",
        workflow_version="1.2.3",
        task_name="MyTask",
        target=target,
    )

    result = callback(context)

    assert result.delivered
    (delivery,) = consume_all(names.queue, expected=1)
    report = delivery.json()
    assert list(report) == KEYS
    assert report == {
        "conversationId": result.message_id,
        "workflowName": "W_f",
        "workflowVersion": "1.2.3",
        "taskName": "MyTask",
        "dagRunId": "manual__2026-01-01",
        "logUrl": log_url,
    }
    assert uuid.UUID(hex=report["conversationId"]).hex == report["conversationId"]
    assert delivery.properties.delivery_mode == 2
    assert delivery.properties.content_type == "application/json"
    assert delivery.routing_key == names.routing_key


@pytest.mark.parametrize(
    ("context", "run_id", "log_url"),
    [
        ({"dag_run": SimpleNamespace(run_id="from-dag-run")}, "from-dag-run", None),
        ({"ti": TaskInstance("from-ti", "http://x/ti")}, "from-ti", "http://x/ti"),
        ({"run_id": "r", "task_instance": object()}, "r", None),
        ({}, None, None),
        (None, None, None),
        ("not a context", None, None),
    ],
)
def test_missing_context_values_give_a_report_with_what_is_known(context, run_id, log_url):
    report = failure_report_body(context, "W", "v", "T")
    assert list(report) == KEYS
    assert (report["dagRunId"], report["logUrl"]) == (run_id, log_url)
    assert (report["workflowName"], report["workflowVersion"], report["taskName"]) == (
        "W",
        "v",
        "T",
    )


def test_conversation_ids_are_unique():
    assert (
        len({failure_report_body({}, "W", "v", "T")["conversationId"] for _ in range(100)}) == 100
    )


def test_a_context_that_raises_everywhere_still_gives_a_report(target, names):
    class Exploding(dict):
        def get(self, key, default=None):
            raise RuntimeError("lazy context value broke")

    class BrokenTaskInstance:
        run_id = "r"

        @property
        def log_url(self):
            raise KeyError("[api] base_url")

    assert failure_report_body(Exploding(), "W", "v", "T")["dagRunId"] is None
    assert (
        failure_report_body({"task_instance": BrokenTaskInstance()}, "W", "v", "T")["logUrl"]
        is None
    )

    result = chat_ops_notification(
        Exploding(), workflow_name="W", workflow_version="v", task_name="T", target=target
    )
    assert result.delivered
    assert consume_all(names.queue, expected=1)[0].json()["dagRunId"] is None


def test_the_callback_never_raises(caplog):
    caplog.set_level(logging.ERROR, logger="dkist_processing_core.isb")

    result = chat_ops_notification(
        {}, workflow_name="W", workflow_version="v", task_name="T", target="not a target"
    )

    assert result is None
    assert any("could not be published" in r.getMessage() and r.exc_info for r in caplog.records)


def test_report_kept_in_outbox_when_the_broker_is_unreachable(names, tmp_path):
    from helpers.tcp_proxy import TcpProxy

    with TcpProxy() as proxy:
        proxy.refuse()
        target = isb_target(names, tmp_path / "outbox", port=proxy.port, publish_timeout=1.0)
        result = chat_ops_notification(
            {"run_id": "r"}, workflow_name="W", workflow_version="v", task_name="T", target=target
        )

    assert not result.delivered
    (kept,) = Outbox(target.outbox_dir).pending()
    stored = json.loads(kept.read_text())["body"]
    assert list(stored) == KEYS and stored["conversationId"] == result.message_id


def test_importing_the_callback_is_light():
    """Every DAG file imports it in the scheduler: no pika, settings or OpenTelemetry."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import dkist_processing_core.failure_callback"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "dkist_processing_core.failure_callback" in imported
    heavy = {
        m
        for m in imported
        if m.split(".")[0]
        in {"pika", "pydantic", "pydantic_settings", "opentelemetry", "loguru", "airflow"}
    }
    assert heavy == set()


DAG_FILE = """\
import functools
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from dkist_processing_core.failure_callback import chat_ops_notification
from dkist_processing_core.isb import IsbTarget

TARGET = IsbTarget(
    exchange={exchange!r}, queue={queue!r}, routing_key={routing_key!r},
    outbox_dir=Path({outbox!r}), publish_timeout=20.0,
)

with DAG(dag_id={dag_id!r}, schedule=None, catchup=False) as dag:
    BashOperator(
        task_id="Fail",
        bash_command="exit 1",
        on_failure_callback=functools.partial(
            chat_ops_notification, workflow_name="W", workflow_version="v9", task_name="Fail",
            target=TARGET,
        ),
    )
"""


def test_callback_in_a_real_airflow_dag_run(names, tmp_path, migrated_airflow_db):
    dags = tmp_path / "dags"
    dags.mkdir()
    dag_id = f"isb_callback_{uuid.uuid4().hex[:8]}"
    dag_file = dags / f"{dag_id}.py"
    dag_file.write_text(
        DAG_FILE.format(
            exchange=names.exchange,
            queue=names.queue,
            routing_key=names.routing_key,
            outbox=str(tmp_path / "outbox"),
            dag_id=dag_id,
        )
    )
    home = airflow_home(tmp_path / "airflow", migrated_airflow_db)
    env = {**os.environ, "AIRFLOW__API__BASE_URL": "http://airflow.example:8080/"}

    (run,) = run_dag(home, dags, dag_id, [{}], env, timeout=300)

    assert run.state == "failed", run.tail()
    run_id = run.run_id
    (delivery,) = consume_all(names.queue, expected=1)
    report = delivery.json()
    assert list(report) == KEYS
    assert report["dagRunId"] == run_id
    assert report["logUrl"].startswith(f"http://airflow.example:8080/dags/{dag_id}/runs/")
    assert report["logUrl"].endswith("/tasks/Fail?try_number=1")
    assert (report["workflowName"], report["workflowVersion"], report["taskName"]) == (
        "W",
        "v9",
        "Fail",
    )


def test_invalid_configuration_keeps_the_report_in_the_outbox(monkeypatch, tmp_path, caplog):
    # Issue 22: the report used to survive only as a log line; now it waits in the outbox.
    from dkist_processing_core import config

    monkeypatch.setattr(config, "_core_configuration", None)
    monkeypatch.setenv("MESH_CONFIG", "{not json")
    monkeypatch.setenv("ISB_OUTBOX_DIR", str(tmp_path / "outbox"))
    caplog.set_level(logging.ERROR, logger="dkist_processing_core.isb")

    result = chat_ops_notification(
        {"run_id": "run-7"}, workflow_name="W", workflow_version="v", task_name="T"
    )

    assert result is not None and not result.delivered
    (kept,) = Outbox(tmp_path / "outbox").pending()
    assert kept == result.outbox_path
    assert json.loads(kept.read_text())["body"]["dagRunId"] == "run-7"
    (record,) = caplog.records
    assert "MESH_CONFIG" in record.getMessage() and str(kept.parent) in record.getMessage()
    monkeypatch.setattr(config, "_core_configuration", None)
