"""Workflow: a named, versioned directed graph of tasks, exported as an Airflow DAG or a notebook.

Every mistake is reported by the call that makes it: a bad name or version by the constructor, a
bad task, a duplicate, an unknown upstream or a cycle by :meth:`Workflow.add_node`. Upstreams must
be added before the tasks that depend on them, so the graph stays acyclic as it grows.
"""

from __future__ import annotations

import heapq
import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core.naming import MAX_VERSION_LENGTH
from dkist_processing_core.naming import NamingError
from dkist_processing_core.naming import dag_name
from dkist_processing_core.naming import validate_name_part
from dkist_processing_core.naming import workflow_name as build_workflow_name
from dkist_processing_core.naming import workflow_name_from_details
from dkist_processing_core.node import Node
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


def _dedup(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


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
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ACTIVE_RUNS_LIMIT:
        raise WorkflowError(
            f"max_active_runs must be an int >= 1 and <= {MAX_ACTIVE_RUNS_LIMIT}, got {value!r:.40}"
        )
    return value


class Workflow:
    """A named and versioned graph of tasks.

    Data form: ``Workflow(input_data=, output_data=, category=, workflow_package=, detail=None,
    tags=None, workflow_version=None)`` -> name ``{input}_to_{output}_{category}[_{detail}]``.
    Seed form: ``Workflow(process_category=, process_name=, workflow_package=,
    workflow_version=None)`` -> name ``{process_category}_{process_name}``.

    ``workflow_version`` defaults to ``BUILD_VERSION`` (read when the workflow is made).
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
        configuration = _fresh_configuration()
        if workflow_version is None:
            workflow_version = configuration.build_version
        self.workflow_version = validate_name_part(
            workflow_version, "workflow version", MAX_VERSION_LENGTH
        )
        self.dag_name = dag_name(self.workflow_name, self.workflow_version)
        self.max_active_runs = _validate_max_active_runs(max_active_runs)
        if process_category is not None:
            built_in_tags = [self.workflow_version, process_category, process_name]
        else:
            built_in_tags = [self.workflow_version, input_data, output_data, category]
        self.tags: list[str] = _dedup([*_validate_tags(tags), *built_in_tags])
        self.distribution = pipeline_distribution(self.workflow_package)
        self.pip_timeout = configuration.pip_timeout
        self.pip_retries = configuration.pip_retries
        self.nodes: list[Node] = []

    @property
    def dag_id(self) -> str:
        """Alias of :attr:`dag_name`."""
        return self.dag_name

    def add_node(
        self,
        task: type[TaskBase],
        upstreams: type[TaskBase] | list[type[TaskBase]] | None = None,
        resource_queue: ResourceQueue | str | None = None,
        pip_extras: list[str] | None = None,
    ) -> Node:
        """Add ``task`` after its ``upstreams`` (which must already be in the workflow)."""
        node = Node(
            workflow_name=self.workflow_name,
            workflow_version=self.workflow_version,
            workflow_package=self.workflow_package,
            task=task,
            resource_queue=resource_queue,
            upstreams=upstreams,
            pip_extras=pip_extras,
            distribution=self.distribution,
            pip_timeout=self.pip_timeout,
            pip_retries=self.pip_retries,
        )
        for existing in self.nodes:
            if existing.task is node.task:
                raise WorkflowError(f"{node.task_id} is already in workflow {self.workflow_name!r}")
            if existing.task_id == node.task_id:
                raise WorkflowError(
                    f"{node.module_path}.{node.task_id} has the same task id as "
                    f"{existing.module_path}.{existing.task_id} in workflow {self.workflow_name!r}; "
                    "task class names must be unique within a workflow"
                )
        known = {existing.task for existing in self.nodes}
        for upstream in node.upstreams:
            if upstream is node.task:
                raise WorkflowError(
                    f"{node.task_id} lists itself as an upstream, which would make a cycle in "
                    f"workflow {self.workflow_name!r}"
                )
            if upstream not in known:
                name = getattr(upstream, "__name__", repr(upstream))
                raise WorkflowError(
                    f"{node.task_id} lists upstream {name}, which is not in workflow "
                    f"{self.workflow_name!r}; add {name} before {node.task_id}"
                )
        self.nodes.append(node)
        return node

    def topological_sort(self) -> list[Node]:
        """Nodes in dependency order; among ready nodes, the one added first comes first."""
        self._check_nodes()
        index = {node.task: position for position, node in enumerate(self.nodes)}
        waiting_on = {node.task: len(node.upstreams) for node in self.nodes}
        downstreams: dict[Any, list[Node]] = {node.task: [] for node in self.nodes}
        for node in self.nodes:
            for upstream in node.upstreams:
                downstreams[upstream].append(node)
        ready = [position for position, node in enumerate(self.nodes) if not node.upstreams]
        heapq.heapify(ready)
        ordered: list[Node] = []
        while ready:
            node = self.nodes[heapq.heappop(ready)]
            ordered.append(node)
            for downstream in downstreams[node.task]:
                waiting_on[downstream.task] -= 1
                if waiting_on[downstream.task] == 0:
                    heapq.heappush(ready, index[downstream.task])
        if len(ordered) != len(self.nodes):
            stuck = ", ".join(node.task_id for node in self.nodes if waiting_on[node.task] > 0)
            raise WorkflowError(
                f"workflow {self.workflow_name!r} has a cycle among the tasks {stuck}"
            )
        return ordered

    def _check_nodes(self) -> None:
        """Check ``nodes`` as a whole (it is a plain list, so it may have been changed directly)."""
        seen: dict[str, Node] = {}
        for node in self.nodes:
            if not isinstance(node, Node):
                raise WorkflowError(
                    f"workflow {self.workflow_name!r} holds {node!r}, which is not a Node"
                )
            if node.task_id in seen:
                raise WorkflowError(
                    f"{node.task_id} is in workflow {self.workflow_name!r} more than once"
                )
            seen[node.task_id] = node
        tasks = {node.task for node in self.nodes}
        for node in self.nodes:
            for upstream in node.upstreams:
                if upstream not in tasks:
                    raise WorkflowError(
                        f"{node.task_id} lists upstream {upstream.__name__}, which is not in workflow "
                        f"{self.workflow_name!r}"
                    )

    def check_dag(self) -> None:
        """Raise WorkflowError if the workflow is empty, has a cycle or refers to unknown tasks."""
        if not self.nodes:
            raise WorkflowError(
                f"workflow {self.workflow_name!r} has no tasks; add them with add_node()"
            )
        self.topological_sort()

    def dag_file_source(self) -> str:
        """Source text of the Airflow DAG file (what :meth:`export_dag` writes)."""
        from dkist_processing_core.export.dag import dag_file_source

        return dag_file_source(self)

    def notebook_source(self) -> str:
        """JSON text of the notebook (what :meth:`export_notebook` writes)."""
        from dkist_processing_core.export.notebook import notebook_source

        return notebook_source(self)

    def export_dag(self, path: str | Path | None = None) -> Path:
        """Write ``{dag_name}.py`` into folder ``path`` (default ``dags/``) and return its path."""
        from dkist_processing_core.export import write_text_atomically

        source = self.dag_file_source()
        return write_text_atomically(
            Path("dags") if path is None else Path(path), f"{self.dag_name}.py", source
        )

    def export_notebook(self, path: str | Path | None = None) -> Path:
        """Write ``{dag_name}.ipynb`` into folder ``path`` (default ``notebooks/``) and return its path."""
        from dkist_processing_core.export import write_text_atomically

        source = self.notebook_source()
        folder = Path("notebooks") if path is None else Path(path)
        return write_text_atomically(folder, f"{self.dag_name}.ipynb", source)

    def load(self) -> Any:
        """The Airflow ``DAG`` of this workflow, built from the same file :meth:`export_dag` writes."""
        from dkist_processing_core.export.dag import load_dag

        return load_dag(self)

    def __repr__(self) -> str:
        return (
            f"Workflow(name={self.workflow_name!r}, version={self.workflow_version!r}, "
            f"package={self.workflow_package!r}, nodes={[node.task_id for node in self.nodes]})"
        )


def _fresh_configuration() -> Any:
    """The configuration as the environment says now (tests and builds change BUILD_VERSION)."""
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration

    return DKISTProcessingCoreConfiguration()
