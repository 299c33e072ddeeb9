"""Discover, validate and export every workflow of a pipeline package.

A pipeline keeps its workflows in a package (for example ``my_pipeline.workflows``) whose public
modules hold :class:`~dkist_processing_core.workflow.Workflow` objects. This module finds them all
and turns them into artifacts:

- :func:`validate_workflows` exports every workflow to a temporary folder and loads the files in
  one Airflow ``DagBag``, then fails with one report of *every* problem (import errors, cycles,
  empty workflows, duplicate DAG ids, DAG files Airflow rejects). Nothing outside the temporary
  folder is written.
- :func:`export_dags`, :func:`export_notebooks` and :func:`export_notebook_dockerfile` write into a
  target folder all at once or not at all, beside the files already there (a file of the same
  name is replaced).

``package`` is the module object (``import my_pipeline.workflows``) or its dotted name.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING

from dkist_processing_core._dagbag_loader import DagBagLoader
from dkist_processing_core._dagbag_loader import LoaderError
from dkist_processing_core._discovery import Found
from dkist_processing_core._discovery import PackageLike
from dkist_processing_core._discovery import Problem
from dkist_processing_core._discovery import UnknownPackageError
from dkist_processing_core._discovery import WorkflowNotFoundError
from dkist_processing_core._discovery import WorkflowValidationError
from dkist_processing_core._discovery import discover
from dkist_processing_core._discovery import discover_workflows
from dkist_processing_core._discovery import find_workflow
from dkist_processing_core._dockerfile import DEFAULT_BASE_IMAGE
from dkist_processing_core._dockerfile import NOTEBOOK_FOLDER
from dkist_processing_core._dockerfile import base_image_for
from dkist_processing_core._dockerfile import notebook_dockerfile
from dkist_processing_core._export_target import ExportTargetError
from dkist_processing_core._export_target import staged_export
from dkist_processing_core._mermaid import mermaid_flowchart

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "ExportTargetError",
    "Problem",
    "UnknownPackageError",
    "WorkflowNotFoundError",
    "WorkflowValidationError",
    "discover_workflows",
    "export_dags",
    "export_notebook_dockerfile",
    "export_notebooks",
    "find_workflow",
    "mermaid_flowchart",
    "validate_workflows",
]

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------- validation
def _dagbag_loader(what: str) -> DagBagLoader:
    """The DagBag child, started now; ImportError naming what to install when Airflow is missing."""
    from dkist_processing_core.export.dag import airflow_missing_message

    missing = airflow_missing_message(what)
    if missing:
        raise ImportError(missing, name="airflow")
    return DagBagLoader()


def _workflow_problems(found: list[Found]) -> tuple[list[Found], list[Problem]]:
    """Check each workflow and find duplicate DAG ids; return the exportable ones and the problems."""
    from dkist_processing_core._workflow_model import WorkflowError

    problems: list[Problem] = []
    healthy: list[Found] = []
    by_dag_id: dict[str, list[Found]] = {}
    for item in found:
        by_dag_id.setdefault(item.workflow.dag_name, []).append(item)
    for dag_id, items in by_dag_id.items():
        if len(items) > 1:
            where = ", ".join(item.location for item in items)
            problems.append(
                Problem(
                    "duplicate dag_id", dag_id, f"{len(items)} workflows have this DAG id: {where}"
                )
            )
    for item in found:
        workflow = item.workflow
        subject = f"{workflow.dag_name} ({item.location})"
        try:
            workflow.check_dag()
        except WorkflowError as error:
            if not workflow.nodes:
                kind = "empty workflow"
            elif "cycle" in str(error).lower():
                kind = "cycle"
            else:
                kind = "invalid workflow"
            problems.append(Problem(kind, subject, str(error)))
            continue
        if by_dag_id[workflow.dag_name][0] is item:
            healthy.append(item)
    return healthy, problems


def _export_problem(item: Found, what: str, error: Exception) -> Problem:
    subject = f"{item.workflow.dag_name} ({item.location})"
    return Problem(
        "export error",
        subject,
        f"{what}: {type(error).__name__}: {error}",
        "".join(traceback.format_exception(error)),
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()


def _dagbag_problems(
    loader: DagBagLoader, folder: Path, exported: dict[str, Found]
) -> list[Problem]:
    """Load every file of ``folder`` in Airflow's DagBag and compare the DAGs with their workflows."""
    try:
        bag = loader.load(folder)
    except LoaderError as error:
        return [Problem("DAG files not loaded", str(folder), _last_line(str(error)), str(error))]
    problems: list[Problem] = []
    failed_files = set()
    for path, trace in sorted(bag.import_errors.items()):
        file_name = Path(path).name
        failed_files.add(file_name)
        item = exported.get(file_name)
        subject = f"{item.workflow.dag_name} ({item.location})" if item else file_name
        problems.append(
            Problem("DAG file rejected by Airflow", subject, _last_line(str(trace)), str(trace))
        )
    for file_name, item in exported.items():
        if file_name in failed_files:
            continue
        workflow = item.workflow
        subject = f"{workflow.dag_name} ({item.location})"
        actual = bag.dags.get(workflow.dag_name)
        if actual is None:
            problems.append(
                Problem(
                    "DAG file rejected by Airflow",
                    subject,
                    f"{file_name} defines no DAG {workflow.dag_name!r}",
                )
            )
            continue
        expected = {node.task_id: sorted(node.upstream_task_ids) for node in workflow.nodes}
        if expected != actual:
            problems.append(
                Problem(
                    "DAG differs from its workflow",
                    subject,
                    f"tasks and upstreams in the DAG {actual} differ from the workflow's {expected}",
                )
            )
    return problems


def validate_workflows(
    workflow_package: PackageLike, export_path: str | Path | None = None
) -> list[Workflow]:
    """Check every workflow of a package the way Airflow will see it; return them all.

    Each workflow is checked (empty, cycles), DAG ids must be unique across the package, and the
    exported DAG files must load in an Airflow ``DagBag`` as the same graph. Raises
    :class:`WorkflowValidationError` listing every problem found. The files are written to a
    temporary folder that is removed afterwards; with ``export_path`` the validated files are
    also written there (like :func:`export_dags`).
    """
    with (
        _dagbag_loader("validate_workflows") as loader,  # imports Airflow meanwhile
        tempfile.TemporaryDirectory(prefix="dkist-validate-") as temporary,
    ):
        name, found, problems = discover(workflow_package)
        healthy, workflow_problems = _workflow_problems(found)
        problems += workflow_problems
        folder = Path(temporary)
        exported = _export_each(healthy, folder, "export_dag", problems)
        if exported:
            problems += _dagbag_problems(loader, folder, exported)
        if problems:
            raise WorkflowValidationError(name, problems)
        if export_path is not None:
            with staged_export(export_path) as staging:
                for file_name in exported:
                    shutil.copy2(folder / file_name, staging / file_name)
    return [item.workflow for item in found]


# ---------------------------------------------------------------------------------- exports
def _checked_workflows(package: PackageLike) -> tuple[str, list[Found]]:
    name, found, problems = discover(package)
    healthy, workflow_problems = _workflow_problems(found)
    problems += workflow_problems
    if problems:
        raise WorkflowValidationError(name, problems)
    if not found:
        raise WorkflowValidationError(
            name, [Problem("no workflows", name, "no Workflow objects in its public modules")]
        )
    return name, healthy


def _export_each(
    found: list[Found],
    folder: Path,
    method: str,
    problems: list[Problem],
    progress: Progress | None = None,
) -> dict[str, Found]:
    """Call ``workflow.<method>(folder)`` for each workflow; ``{file name: workflow}`` of those
    written, a problem in ``problems`` for each that failed."""
    written: dict[str, Found] = {}
    for number, item in enumerate(found, start=1):
        try:
            path: Path = getattr(item.workflow, method)(folder)
        except Exception as error:
            problems.append(_export_problem(item, method, error))
            continue
        written[path.name] = item
        if progress is not None:
            progress(f"[{number}/{len(found)}] {item.workflow.dag_name}: {path.name}")
    return written


def export_dags(
    workflow_package: PackageLike,
    path: str | Path,
    *,
    validate: bool = True,
    progress: Progress | None = None,
) -> list[Path]:
    """Write the Airflow DAG file of every workflow into folder ``path``; return the files.

    The workflows are checked first and, with ``validate`` (default), the files are loaded in an
    Airflow ``DagBag`` before they reach ``path``. See the module docstring for how ``path`` is
    written.
    """
    # the DagBag's child imports Airflow while the pipeline is imported and the files written
    with _dagbag_loader("export_dags") if validate else contextlib.nullcontext() as loader:
        name, found = _checked_workflows(workflow_package)
        with staged_export(path) as staging:
            problems: list[Problem] = []
            exported = _export_each(found, staging, "export_dag", problems, progress)
            if loader is not None and not problems:
                if progress is not None:
                    progress(f"loading {len(exported)} DAG file(s) in an Airflow DagBag")
                problems += _dagbag_problems(loader, staging, exported)
            if problems:
                raise WorkflowValidationError(name, problems)
    return [Path(path).absolute() / file_name for file_name in exported]


def export_notebooks(
    workflow_package: PackageLike,
    path: str | Path,
    *,
    progress: Progress | None = None,
) -> list[Path]:
    """Write the notebook (``{dag_id}.ipynb``) of every workflow into folder ``path``; return the files."""
    name, found = _checked_workflows(workflow_package)
    with staged_export(path) as staging:
        written = _stage_notebooks(name, found, staging, progress)
    return [Path(path).absolute() / file_name for file_name in written]


def _stage_notebooks(
    name: str, found: list[Found], folder: Path, progress: Progress | None
) -> dict[str, Found]:
    problems: list[Problem] = []
    written = _export_each(found, folder, "export_notebook", problems, progress)
    if problems:
        raise WorkflowValidationError(name, problems)
    return written


def _pinned(distribution: str, extras: str) -> str:
    try:
        return f"{distribution}[{extras}]=={installed_version(distribution)}"
    except PackageNotFoundError:
        raise WorkflowValidationError(
            distribution,
            [
                Problem(
                    "not installed",
                    distribution,
                    "the image pins the installed version of this distribution; install it here first "
                    "(pip install -e <pipeline>)",
                )
            ],
        ) from None


def _requires_python(distribution_name: str) -> str | None:
    from importlib.metadata import metadata

    try:
        values = metadata(distribution_name).get_all("Requires-Python")
        return str(values[0]) if values else None
    except PackageNotFoundError:
        return None


def export_notebook_dockerfile(
    workflow_package: PackageLike,
    path: str | Path,
    *,
    base_image: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write a Jupyter image definition into folder ``path``: ``Dockerfile`` and ``notebooks/``.

    The image starts from ``base_image`` (default: the Jupyter image with the oldest Python the
    pipeline's ``Requires-Python`` allows), installs the pipeline distribution(s) at their installed
    versions (with the ``frozen`` extra) and ``dkist-processing-core-task[notebook]``, copies the
    notebooks and sets ``IS_NOTEBOOK_EXECUTION_ENVIRONMENT=true``. Returns the Dockerfile's path.
    """
    from dkist_processing_core._version_build import __version__

    name, found = _checked_workflows(workflow_package)
    distributions = list(dict.fromkeys(item.workflow.distribution for item in found))
    requirements = [_pinned(distribution, "frozen") for distribution in distributions]
    requirements.append(_pinned("dkist-processing-core-task", "notebook"))
    if base_image is None:
        try:
            base_image = base_image_for(
                [_requires_python(distribution) for distribution in distributions]
            )
        except ValueError as error:
            raise WorkflowValidationError(
                name, [Problem("no base image", name, str(error))]
            ) from None
    text = notebook_dockerfile(
        requirements, generator=f"dkist-processing-core-build {__version__}", base_image=base_image
    )
    with staged_export(path) as staging:
        _stage_notebooks(name, found, staging / NOTEBOOK_FOLDER, progress)
        (staging / "Dockerfile").write_text(text, encoding="utf-8")
        if progress is not None:
            progress("Dockerfile")
    return Path(path).absolute() / "Dockerfile"
