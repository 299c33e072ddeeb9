"""Mermaid ``flowchart`` text of a workflow's task graph (for docs, reviews and ``graph``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dkist_processing_core.resource_queue import ResourceQueue

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow

__all__ = ["mermaid_flowchart"]

_DIRECTIONS = ("TD", "TB", "BT", "LR", "RL")


def _label(node) -> str:  # type: ignore[no-untyped-def]
    details = []
    if node.resource_queue != ResourceQueue.DEFAULT:
        details.append(f"queue: {node.resource_queue.value}")
    if node.retries:
        details.append(f"retries: {node.retries}")
    # Task ids are Python identifiers and queue names are fixed words, so nothing needs escaping.
    return (
        node.task_id if not details else f"{node.task_id}<br/><small>{', '.join(details)}</small>"
    )


def mermaid_flowchart(workflow: Workflow, direction: str = "TD") -> str:
    """Mermaid text: one box per task (queue and retries noted), one arrow per dependency.

    Nodes appear in topological order (the workflow is checked first); the text is stable for
    the same workflow.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}, got {direction!r}")
    workflow.check_dag()
    nodes = workflow.topological_sort()
    lines = [
        f"---\ntitle: {workflow.dag_name}\n---",
        f"flowchart {direction}",
    ]
    lines += [f'    {node.task_id}["{_label(node)}"]' for node in nodes]
    lines += [
        f"    {upstream} --> {node.task_id}"
        for node in nodes
        for upstream in node.upstream_task_ids
    ]
    return "\n".join(lines) + "\n"
