"""Node: one task of a workflow, its upstreams and the resources it runs with; a read-only value.

A Node checks its task when it is made (a TaskBase subclass that a worker can import by module
path, with sane ``retries``/``retry_delay_seconds``) and its settings (resource queue, pip extras),
so that everything a renderer later writes into a DAG file or a notebook is a validated value. It
knows nothing of the workflow it belongs to (name, version, package: the workflow has them) nor of
Airflow or notebooks (:mod:`dkist_processing_core.export` renders them).
"""

from __future__ import annotations

import math
import re
import sys
from functools import cache
from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import distribution
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._pinned import canonical_name
from dkist_processing_core._pinned import is_name
from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.resource_queue import ResourceQueue

if TYPE_CHECKING:
    from collections.abc import Iterable

    from dkist_processing_core.task import TaskBase

__all__ = [
    "DOTTED_NAME_RE",
    "FROZEN_EXTRA",
    "MAX_TASK_NAME_LENGTH",
    "Node",
    "WorkflowCycleError",
    "WorkflowError",
    "pipeline_distribution",
    "validate_package_name",
]

#: Extra that every pipeline distribution is expected to define: its pinned (frozen) dependencies.
#: pip warns and carries on when a distribution does not define it.
FROZEN_EXTRA = "frozen"
#: Task class names become Airflow task ids and notebook cell ids.
MAX_TASK_NAME_LENGTH = 100

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_IDENTIFIER_RE = re.compile(_IDENTIFIER)
#: A dotted Python module or package name such as ``my_pipeline.workflows``.
DOTTED_NAME_RE = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*")
_MAX_EXTRA_LENGTH = 64
_MAX_RETRY_DELAY_SECONDS = 7 * 24 * 3600
_MAX_RETRIES = 1000


class WorkflowError(DKISTProcessingCoreError, ValueError):
    """A workflow or one of its nodes is not valid; the message says what to change."""


class WorkflowCycleError(WorkflowError):
    """The tasks of a workflow depend on each other in a circle; the message names them."""


def validate_package_name(value: object, what: str = "workflow_package") -> str:
    """Return ``value`` if it is a dotted Python package name such as ``my_pipeline.workflows``."""
    if value is None or value == "":
        raise WorkflowError(
            f"{what} is {value!r}: pass the dotted name of the package that holds the workflow, "
            "usually __package__ from a module inside that package. __package__ is None or '' "
            "when the file is run as a script (python my_file.py); run it as a module "
            "(python -m my_pipeline.workflows) or import it instead. (Seed form called positionally? "
            "Use keywords: process_category=, process_name=, workflow_package=.)"
        )
    if not isinstance(value, str):
        raise WorkflowError(
            f"{what} must be a dotted package name (str), got {type(value).__name__} {value!r}"
        )
    if not DOTTED_NAME_RE.fullmatch(value):
        raise WorkflowError(
            f"{what} {value!r} is not a dotted Python package name "
            "(ASCII identifiers separated by '.', e.g. 'my_pipeline.workflows')"
        )
    return value


_distributions_of_top_level_packages = cache(packages_distributions)


@cache
def _installed_distribution_name(name: str) -> str | None:
    try:
        return distribution(name).metadata["Name"]
    except PackageNotFoundError:
        return None


def _outside_installed_packages(top_level: str) -> bool:
    """True if the imported package lives outside every site-packages folder (a source tree on
    ``sys.path``): no distribution's RECORD can list it, so there is nothing to look up."""
    module = sys.modules.get(top_level)
    paths = list(getattr(module, "__path__", []) or []) or [getattr(module, "__file__", None)]
    folders = [Path(path).parts for path in paths if path]
    return bool(folders) and not any(
        "site-packages" in parts or "dist-packages" in parts for parts in folders
    )


def pipeline_distribution(workflow_package: str) -> str:
    """Name of the distribution (the pip-installable pipeline) that ships ``workflow_package``.

    Looked up with :func:`importlib.metadata.packages_distributions` for the top-level import
    name (skipped for a package imported from outside every site-packages folder: no RECORD lists
    it). When that finds nothing (editable installs, a source tree on ``sys.path``) or several
    distributions none of which is named like the package, the fallback is the top-level package
    name with ``_`` replaced by ``-`` (``dkist_processing_visp`` -> ``dkist-processing-visp``).
    """
    top_level = validate_package_name(workflow_package).partition(".")[0]
    chosen = top_level.replace("_", "-")
    installed_name = _installed_distribution_name(chosen)
    if installed_name is not None:
        # The usual case: the pipeline is distributed under its package's name. Reading that one
        # distribution's metadata avoids packages_distributions(), which reads every RECORD file
        # of the environment (about 0.5 s in a build environment with Airflow).
        return installed_name
    if _outside_installed_packages(top_level):
        return chosen
    candidates = sorted(set(_distributions_of_top_level_packages().get(top_level, [])))
    if len(candidates) == 1:
        chosen = candidates[0]
    else:
        for candidate in candidates:
            if canonical_name(candidate) == canonical_name(top_level):
                chosen = candidate
                break
    if not is_name(chosen):
        raise WorkflowError(
            f"distribution name {chosen!r} of package {top_level!r} is not a valid PEP 508 name"
        )
    return chosen


def _validate_task(task: object) -> type[TaskBase]:
    """The task must be a TaskBase subclass that a worker can import as ``module.ClassName``."""
    from dkist_processing_core.task import TaskBase

    if not isinstance(task, type) or not issubclass(task, TaskBase):
        raise WorkflowError(f"task must be a subclass of TaskBase, got {task!r}")
    checked: type[TaskBase] = task
    if task is TaskBase:
        raise WorkflowError("task must be a subclass of TaskBase, not TaskBase itself")
    name = task.__name__
    if not (_IDENTIFIER_RE.fullmatch(name) and len(name) <= MAX_TASK_NAME_LENGTH):
        raise WorkflowError(
            f"task class name {name!r} is not allowed: use an ASCII Python identifier of at most "
            f"{MAX_TASK_NAME_LENGTH} characters (it becomes the Airflow task id)"
        )
    module_name = task.__module__
    if module_name == "__main__":
        raise WorkflowError(
            f"task {name} is defined in __main__ (a file run as a script); workers import tasks by "
            "module path, so define it in a module of the pipeline package"
        )
    if not (isinstance(module_name, str) and DOTTED_NAME_RE.fullmatch(module_name)):
        raise WorkflowError(
            f"task {name} has the module path {module_name!r}, which is not a dotted Python module name"
        )
    if task.__qualname__ != name:
        raise WorkflowError(
            f"task {name} is defined inside a function or class ({module_name}.{task.__qualname__}); "
            f"workers import tasks as module.ClassName, so define it at the top level of {module_name}"
        )
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = import_module(module_name)
        except Exception as error:
            raise WorkflowError(
                f"task {name}: its module {module_name!r} cannot be imported ({error})"
            ) from None
    if getattr(module, name, None) is not task:
        raise WorkflowError(
            f"task {name} cannot be imported as {module_name}.{name}: that name does not refer to "
            "this class; workers import tasks by module path"
        )
    return checked


def _validate_retries(task: type[TaskBase]) -> tuple[int, int | float]:
    retries = getattr(task, "retries", 0)
    if (
        isinstance(retries, bool)
        or not isinstance(retries, int)
        or not 0 <= retries <= _MAX_RETRIES
    ):
        raise WorkflowError(
            f"task {task.__name__}: retries must be an int from 0 to {_MAX_RETRIES}, got {retries!r}"
        )
    delay = getattr(task, "retry_delay_seconds", 60)
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or not 0 <= delay <= _MAX_RETRY_DELAY_SECONDS
    ):
        raise WorkflowError(
            f"task {task.__name__}: retry_delay_seconds must be a number from 0 to "
            f"{_MAX_RETRY_DELAY_SECONDS}, got {delay!r}"
        )
    return retries, delay


def _validate_resource_queue(value: object, task_name: str) -> ResourceQueue:
    if value is None:
        return ResourceQueue.DEFAULT
    try:
        if not isinstance(value, str):  # ResourceQueue is a StrEnum: its members are str too
            raise ValueError(value)
        return ResourceQueue(value)
    except ValueError:
        allowed = ", ".join(queue.value for queue in ResourceQueue)
        raise WorkflowError(
            f"task {task_name}: resource_queue {value!r} is not one of {allowed}"
        ) from None


def _validate_pip_extras(value: object, task_name: str) -> list[str]:
    if value is None:
        return []
    items: Iterable[Any] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    try:
        items = list(items)
    except TypeError:
        raise WorkflowError(
            f"task {task_name}: pip_extras must be a list of extra names, got {value!r}"
        ) from None
    extras: list[str] = []
    for extra in items:
        if not (isinstance(extra, str) and len(extra) <= _MAX_EXTRA_LENGTH and is_name(extra)):
            raise WorkflowError(
                f"task {task_name}: pip extra {extra!r} is not a valid extra name (ASCII letters, digits, "
                f"'.', '_' and '-', starting and ending with a letter or digit, at most {_MAX_EXTRA_LENGTH})"
            )
        if extra not in extras:
            extras.append(extra)
    return extras


def _as_task_list(upstreams: object) -> list[Any]:
    if upstreams is None:
        return []
    if isinstance(upstreams, type):
        return [upstreams]
    if isinstance(upstreams, list | tuple):
        return list(upstreams)
    raise WorkflowError(
        f"upstreams must be None, a task class or a list of task classes, got {upstreams!r}"
    )


class Node:
    """One task of a workflow: the task class, its upstream task classes, resource queue and extras.

    Read-only: the properties return copies, so changing what they return changes nothing.
    """

    __slots__ = (
        "_pip_extras",
        "_resource_queue",
        "_retries",
        "_retry_delay_seconds",
        "_task",
        "_upstreams",
    )

    def __init__(
        self,
        task: type[TaskBase],
        upstreams: type[TaskBase] | list[type[TaskBase]] | None = None,
        resource_queue: ResourceQueue | str | None = None,
        pip_extras: list[str] | None = None,
    ) -> None:
        self._task: type[TaskBase] = _validate_task(task)
        self._retries, self._retry_delay_seconds = _validate_retries(self._task)
        self._resource_queue = _validate_resource_queue(resource_queue, self.task_id)
        self._pip_extras = tuple(_validate_pip_extras(pip_extras, self.task_id))
        found: list[type[TaskBase]] = []
        for upstream in _as_task_list(upstreams):
            if not isinstance(upstream, type):
                raise WorkflowError(
                    f"{self.task_id} lists upstream {upstream!r}, which is not a task class"
                )
            if upstream not in found:
                found.append(upstream)
        self._upstreams = tuple(found)

    @property
    def task(self) -> type[TaskBase]:
        """The TaskBase subclass this node runs."""
        return self._task

    @property
    def upstreams(self) -> list[type[TaskBase]]:
        """Task classes that must succeed before this one starts, in the order given."""
        return list(self._upstreams)

    @property
    def resource_queue(self) -> ResourceQueue:
        """Queue (and pool) of the worker that runs the task."""
        return self._resource_queue

    @property
    def pip_extras(self) -> list[str]:
        """Extras of the pipeline distribution this task needs, as given (without ``frozen``)."""
        return list(self._pip_extras)

    @property
    def retries(self) -> int:
        """The task's ``retries``, checked."""
        return self._retries

    @property
    def retry_delay_seconds(self) -> int | float:
        """The task's ``retry_delay_seconds``, checked."""
        return self._retry_delay_seconds

    @property
    def task_id(self) -> str:
        """Airflow task id: the task's class name."""
        return self._task.__name__

    @property
    def module_path(self) -> str:
        """Module a worker imports the task class from."""
        return self._task.__module__

    @property
    def upstream_task_ids(self) -> list[str]:
        """Task ids (class names) of the upstream tasks, in the order given."""
        return [upstream.__name__ for upstream in self._upstreams]

    @property
    def install_extras(self) -> list[str]:
        """Extras installed with the pipeline: ``frozen`` first, then the node's pip extras."""
        return [FROZEN_EXTRA, *(extra for extra in self._pip_extras if extra != FROZEN_EXTRA)]

    def __repr__(self) -> str:
        return (
            f"Node(task={self.module_path}.{self.task_id}, upstreams={self.upstream_task_ids}, "
            f"resource_queue={self._resource_queue.value!r}, pip_extras={list(self._pip_extras)!r})"
        )
