"""Workflow: a named, versioned directed graph of tasks, exported as an Airflow DAG or a notebook.

Every mistake is reported by the call that makes it: a bad name or version by the constructor, a
bad task, a duplicate, an unknown upstream or a cycle by :meth:`Workflow.add_node`. Upstreams must
be added before the tasks that depend on them, so the graph stays acyclic as it grows. The model
reads the configuration one way (``core_configuration()``, cached) and does no I/O beyond
checking that its package can be imported.
"""

from __future__ import annotations

import heapq
import importlib.util
import re
import sys
from graphlib import CycleError
from graphlib import TopologicalSorter
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._atomic import write_atomically
from dkist_processing_core.naming import MAX_VERSION_LENGTH
from dkist_processing_core.naming import NamingError
from dkist_processing_core.naming import dag_name
from dkist_processing_core.naming import validate_name_part
from dkist_processing_core.naming import workflow_name as build_workflow_name
from dkist_processing_core.naming import workflow_name_from_details
from dkist_processing_core.node import Node
from dkist_processing_core.node import WorkflowCycleError
from dkist_processing_core.node import WorkflowError
from dkist_processing_core.node import pipeline_distribution
from dkist_processing_core.node import validate_package_name
from dkist_processing_core.resource_queue import ResourceQueue

if TYPE_CHECKING:
    from dkist_processing_core.task import TaskBase

__all__ = [
    "DEFAULT_MAX_ACTIVE_RUNS",
    "MAX_ACTIVE_RUNS_LIMIT",
    "MAX_TAG_LENGTH",
    "NamingError",
    "Workflow",
    "WorkflowCycleError",
    "WorkflowError",
    "dag_name",
    "workflow_name_from_details",
]

#: Concurrent DAG runs (recipe runs) of one workflow version; Airflow's own default.
DEFAULT_MAX_ACTIVE_RUNS = 16
#: Largest max_active_runs: far above any real need, far below the 32-bit column the scheduler
#: stores it in (10**30 used to validate and then break `airflow dags reserialize`).
MAX_ACTIVE_RUNS_LIMIT = 10_000
#: Airflow's limit on the length of a DAG tag.
MAX_TAG_LENGTH = 100
_TAG_RE = re.compile(r"[A-Za-z0-9._:/+@=-](?:[A-Za-z0-9 ._:/+@=-]*[A-Za-z0-9._:/+@=-])?")


def _validate_tags(tags: object) -> list[str]:
    if tags is None:
        return []
    items = [tags] if isinstance(tags, str) else tags
    if not isinstance(items, list | tuple):
        raise WorkflowError(f"tags must be a string or a list of strings, got {tags!r}")
    for tag in items:
        if not (isinstance(tag, str) and len(tag) <= MAX_TAG_LENGTH and _TAG_RE.fullmatch(tag)):
            raise WorkflowError(
                f"tag {tag!r} is not allowed: use at most {MAX_TAG_LENGTH} ASCII letters, digits, inner "
                "spaces and the characters . _ : / + @ = -"
            )
    return list(items)


def _check_importable(package: str) -> None:
    if package in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as error:
        raise WorkflowError(f"workflow_package {package!r} cannot be imported ({error})") from None
    if spec is None:
        raise WorkflowError(
            f"workflow_package {package!r} cannot be imported: no such package on sys.path; "
            "pass __package__ from a module inside the pipeline package"
        )


def _validate_max_active_runs(value: object) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_ACTIVE_RUNS_LIMIT
    ):
        raise WorkflowError(
            f"max_active_runs must be an int >= 1 and <= {MAX_ACTIVE_RUNS_LIMIT}, got {value!r:.40}"
        )
    return value


class Workflow:
    """A named and versioned graph of tasks; a value that knows its graph, names and versions.

    Data form: ``Workflow(input_data=, output_data=, category=, workflow_package=, detail=None,
    tags=None, workflow_version=None)`` -> name ``{input}_to_{output}_{category}[_{detail}]``.
    Seed form: ``Workflow(process_category=, process_name=, workflow_package=,
    workflow_version=None)`` -> name ``{process_category}_{process_name}``.

    ``workflow_version`` defaults to ``BUILD_VERSION``. The nodes are read-only from outside:
    :meth:`add_node` is the one way to change the graph. Rendering is in
    :mod:`dkist_processing_core.export`; :meth:`export_dag`, :meth:`export_notebook` and
    :meth:`load` are kept as methods because client pipelines call them.
    """

    def __init__(
        self,
        input_data: str | None = None,
        output_data: str | None = None,
        category: str | None = None,
        workflow_package: str | None = None,
        detail: str | None = None,
        tags: str | list[str] | None = None,
        workflow_version: str | None = None,
        *,
        process_category: str | None = None,
        process_name: str | None = None,
        max_active_runs: int = DEFAULT_MAX_ACTIVE_RUNS,
    ) -> None:
        self.workflow_name = build_workflow_name(
            input_data,
            output_data,
            category,
            detail,
            process_category=process_category,
            process_name=process_name,
        )
        self.workflow_package = validate_package_name(workflow_package)
        _check_importable(self.workflow_package)
        if workflow_version is None:
            from dkist_processing_core.config import core_configuration

            workflow_version = core_configuration().build_version
        self.workflow_version = validate_name_part(
            workflow_version, "workflow version", MAX_VERSION_LENGTH
        )
        self.dag_name = dag_name(self.workflow_name, self.workflow_version)
        self.max_active_runs = _validate_max_active_runs(max_active_runs)
        # Every part was validated by build_workflow_name: none is None here.
        parts = (
            (process_category, process_name)
            if process_category is not None
            else (input_data, output_data, category)
        )
        built_in_tags = [self.workflow_version, *(str(part) for part in parts)]
        self.tags: list[str] = list(dict.fromkeys([*_validate_tags(tags), *built_in_tags]))
        self._nodes: list[Node] = []
        # Indexes of _nodes, so that add_node's checks cost the same for the 5,000th node as the first.
        self._by_task: dict[type[TaskBase], Node] = {}
        self._by_task_id: dict[str, Node] = {}

    @property
    def dag_id(self) -> str:
        """Alias of :attr:`dag_name`."""
        return self.dag_name

    @property
    def nodes(self) -> list[Node]:
        """The nodes in the order they were added (a copy: change the graph with :meth:`add_node`)."""
        return list(self._nodes)

    @property
    def distribution(self) -> str:
        """The pip-installable distribution that ships :attr:`workflow_package` (looked up once)."""
        return pipeline_distribution(self.workflow_package)

    def add_node(
        self,
        task: type[TaskBase],
        upstreams: type[TaskBase] | list[type[TaskBase]] | None = None,
        resource_queue: ResourceQueue | str | None = None,
        pip_extras: list[str] | None = None,
    ) -> Node:
        """Add ``task`` after its ``upstreams`` (which must already be in the workflow)."""
        node = Node(task, upstreams=upstreams, resource_queue=resource_queue, pip_extras=pip_extras)
        if node.task in self._by_task:
            raise WorkflowError(f"{node.task_id} is already in workflow {self.workflow_name!r}")
        existing = self._by_task_id.get(node.task_id)
        if existing is not None:
            raise WorkflowError(
                f"{node.module_path}.{node.task_id} has the same task id as "
                f"{existing.module_path}.{existing.task_id} in workflow {self.workflow_name!r}; "
                "task class names must be unique within a workflow"
            )
        for upstream in node.upstreams:
            if upstream is node.task:
                raise WorkflowCycleError(
                    f"{node.task_id} lists itself as an upstream, which would make a cycle in "
                    f"workflow {self.workflow_name!r}"
                )
            if upstream not in self._by_task:
                name = getattr(upstream, "__name__", repr(upstream))
                raise WorkflowError(
                    f"{node.task_id} lists upstream {name}, which is not in workflow "
                    f"{self.workflow_name!r}; add {name} before {node.task_id}"
                )
        self._nodes.append(node)
        self._by_task[node.task] = node
        self._by_task_id[node.task_id] = node
        return node

    def topological_sort(self) -> list[Node]:
        """Nodes in dependency order; among ready nodes, the one added first comes first.

        graphlib does the bookkeeping and finds cycles (:class:`WorkflowCycleError`).
        """
        position = {node.task_id: index for index, node in enumerate(self._nodes)}
        sorter: TopologicalSorter[str] = TopologicalSorter()
        for node in self._nodes:
            unknown = [task_id for task_id in node.upstream_task_ids if task_id not in position]
            if unknown:
                raise WorkflowError(
                    f"{node.task_id} lists upstream {unknown[0]}, which is not in workflow "
                    f"{self.workflow_name!r}"
                )
            sorter.add(node.task_id, *node.upstream_task_ids)
        try:
            sorter.prepare()
        except CycleError as error:
            circle = ", ".join(sorted(set(error.args[1]), key=position.__getitem__))
            raise WorkflowCycleError(
                f"workflow {self.workflow_name!r} has a cycle among the tasks {circle}"
            ) from None
        ready: list[int] = []
        ordered: list[Node] = []
        while sorter.is_active():
            for task_id in sorter.get_ready():
                heapq.heappush(ready, position[task_id])
            node = self._nodes[heapq.heappop(ready)]
            ordered.append(node)
            sorter.done(node.task_id)
        return ordered

    def check_dag(self) -> None:
        """Raise WorkflowError if the workflow is empty, has a cycle or refers to unknown tasks."""
        if not self._nodes:
            raise WorkflowError(
                f"workflow {self.workflow_name!r} has no tasks; add them with add_node()"
            )
        self.topological_sort()

    def export_dag(self, path: str | Path | None = None) -> Path:
        """Write ``{dag_name}.py`` into folder ``path`` (default ``dags/``) and return its path."""
        from dkist_processing_core.export.dag import render_dag

        folder = Path("dags") if path is None else Path(path)
        return _write_into(folder, f"{self.dag_name}.py", render_dag(self))

    def export_notebook(self, path: str | Path | None = None) -> Path:
        """Write ``{dag_name}.ipynb`` into folder ``path`` (default ``notebooks/``) and return its path."""
        from dkist_processing_core.export.notebook import render_notebook

        folder = Path("notebooks") if path is None else Path(path)
        return _write_into(folder, f"{self.dag_name}.ipynb", render_notebook(self))

    def load(self) -> Any:
        """The Airflow ``DAG`` of this workflow, built from the same file :meth:`export_dag` writes."""
        from dkist_processing_core.export.dag import load_dag

        return load_dag(self)

    def __repr__(self) -> str:
        return (
            f"Workflow(name={self.workflow_name!r}, version={self.workflow_version!r}, "
            f"package={self.workflow_package!r}, nodes={[node.task_id for node in self._nodes]})"
        )


def _write_into(folder: Path, file_name: str, text: str) -> Path:
    """Write ``text`` to ``folder/file_name`` at once (the folder is created if need be)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomically(folder / file_name, text)
