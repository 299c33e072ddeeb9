"""What the renderers read of a workflow: the shape of :class:`dkist_processing_core._workflow_model.Workflow`.

The renderers depend on this shape, not on the ``_workflow_model`` module, whose thin methods
(``export_dag``, ``export_notebook``, ``load``) call them: the dependency points one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from typing import Protocol

if TYPE_CHECKING:
    from dkist_processing_core.node import Node

__all__ = ["WorkflowModel"]


class WorkflowModel(Protocol):
    """A checked, named and versioned graph of nodes."""

    workflow_name: str
    workflow_version: str
    dag_name: str
    tags: list[str]
    max_active_runs: int

    @property
    def distribution(self) -> str: ...

    def check_dag(self) -> None: ...

    def topological_sort(self) -> list[Node]: ...

    def export_dag(self, path: str | Path | None = None) -> Path: ...
