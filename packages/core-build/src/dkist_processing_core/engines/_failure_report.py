"""The failure report of a local run: what Airflow's ``on_failure_callback`` sends, from a local task."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow
    from dkist_processing_core.engines._common import TaskResult
    from dkist_processing_core.node import Node

__all__ = ["failure_context", "report_on_isb"]


def failure_context(
    workflow: Workflow, run_id: str, recipe_run_id: int, node: Node, result: TaskResult
) -> dict[str, Any]:
    """The parts of an Airflow task context that the failure report reads."""
    log_url = result.log_path.as_uri() if result.log_path is not None else None
    task_instance = SimpleNamespace(
        dag_id=workflow.dag_name,
        task_id=node.task_id,
        run_id=run_id,
        try_number=result.attempts,
        max_tries=node.retries + 1,
        state="failed",
        log_url=log_url,
        hostname=os.uname().nodename,
    )
    dag_run = SimpleNamespace(
        dag_id=workflow.dag_name,
        run_id=run_id,
        run_type="local",
        conf={"recipe_run_id": recipe_run_id},
    )
    return {
        "run_id": run_id,
        "dag_run": dag_run,
        "task_instance": task_instance,
        "ti": task_instance,
        "params": {},
        "log_path": str(result.log_path) if result.log_path else None,
    }


def report_on_isb(workflow: Workflow, node: Node, context: dict[str, Any]) -> str:
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
