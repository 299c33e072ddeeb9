"""The Jupyter notebook of a workflow, for manual processing.

nbformat v4: a first cell ``recipe_run_id: int = `` tagged ``parameters`` (fill it in, or let
papermill inject it), then one code cell per node in topological order that runs the task
in-process the way a worker does (``with Task(...) as t: t()``), with the previous product's
commented lines for a manual run (``t.is_task_manual = True``) and a manual ``t.rollback()``.
Cell ids are derived from the node order, so the JSON is byte-identical for the same workflow.
nbformat is imported only here, inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from dkist_processing_core.export._model import WorkflowModel
    from dkist_processing_core.node import Node

__all__ = ["PARAMETERS_SOURCE", "build_notebook", "notebook_cell_source", "render_notebook"]

PARAMETERS_SOURCE = "recipe_run_id: int = "

_CELL = """\
# {task_id}: {after}; resource queue {queue!r}
from {module} import {task_id}

with {task_id}(recipe_run_id=recipe_run_id, workflow_name={workflow_name!r}, workflow_version={workflow_version!r}) as t:
    # t.is_task_manual = True
    t()
    # t.rollback()"""


def _nbformat() -> Any:
    try:
        import nbformat
    except ImportError:
        raise ImportError(
            "exporting a notebook needs nbformat; install it with: "
            "pip install 'dkist-processing-core-workflow[notebook]'",
            name="nbformat",
        ) from None
    return nbformat


def notebook_cell_source(workflow: WorkflowModel, node: Node) -> str:
    """Source of the cell that runs ``node``'s task in-process."""
    after = "after " + ", ".join(node.upstream_task_ids) if node.upstreams else "no upstream tasks"
    return _CELL.format(
        task_id=node.task_id,
        after=after,
        queue=node.resource_queue.value,
        module=node.module_path,
        workflow_name=workflow.workflow_name,
        workflow_version=workflow.workflow_version,
    )


def build_notebook(workflow: WorkflowModel) -> Any:
    """The workflow's notebook as an ``nbformat.NotebookNode`` (validated)."""
    from dkist_processing_core.export import GENERATOR

    nbformat = _nbformat()
    workflow.check_dag()
    nodes = workflow.topological_sort()
    cells = [
        nbformat.v4.new_code_cell(
            source=PARAMETERS_SOURCE,
            id="parameters",
            metadata={"tags": ["parameters"]},
        )
    ]
    for position, node in enumerate(nodes, start=1):
        cell_id = f"task-{position}-{node.task_id}"[:64]
        cells.append(
            nbformat.v4.new_code_cell(source=notebook_cell_source(workflow, node), id=cell_id)
        )
    notebook = nbformat.v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "dkist_processing_core": {
                "generator": GENERATOR,
                "workflow_name": workflow.workflow_name,
                "workflow_version": workflow.workflow_version,
                "dag_id": workflow.dag_name,
                "distribution": workflow.distribution,
                "tasks": [node.task_id for node in nodes],
            },
        },
    )
    nbformat.validate(notebook)
    return notebook


def render_notebook(workflow: WorkflowModel) -> str:
    """JSON text of the workflow's notebook."""
    nbformat = _nbformat()
    text: str = nbformat.writes(build_notebook(workflow), version=4)
    return text + "\n"
