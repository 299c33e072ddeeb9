"""Find every Workflow object of a pipeline package, and the errors of finding them.

``package`` is the module object (``import my_pipeline.workflows``) or its dotted name. Public
submodules are imported recursively (names starting with ``_`` are skipped); every module that
fails to import is a :class:`Problem`, and all problems are reported together in one
:class:`WorkflowValidationError`.
"""

from __future__ import annotations

import pkgutil
import traceback
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.errors import UsageError
from dkist_processing_core.node import DOTTED_NAME_RE

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow

__all__ = [
    "Found",
    "PackageLike",
    "Problem",
    "UnknownPackageError",
    "WorkflowNotFoundError",
    "WorkflowValidationError",
    "discover",
    "discover_workflows",
    "find_workflow",
]

PackageLike = ModuleType | str


# ----------------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline package's workflows."""

    kind: str  # "import error", "empty workflow", "cycle", "invalid workflow", "duplicate dag_id", ...
    subject: str  # module name or DAG id
    message: str
    detail: str = ""  # a traceback, when there is one

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.message}"


class UnknownPackageError(UsageError, LookupError):
    """The pipeline package cannot be found in this environment."""


class WorkflowNotFoundError(UsageError, LookupError):
    """No workflow (or more than one) of the package matches the requested name."""


class WorkflowValidationError(DKISTProcessingCoreError):
    """The workflows of a package have problems; ``problems`` lists all of them."""

    def __init__(self, package: str, problems: list[Problem]) -> None:
        self.package = package
        self.problems = list(problems)
        lines = [f"{len(self.problems)} problem(s) with the workflows of {package}:"]
        lines += [f"  - {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


# -------------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class Found:
    """A workflow object and where it was found."""

    workflow: Workflow
    location: str  # "module:attribute"


def _resolve_package(package: PackageLike) -> ModuleType:
    if isinstance(package, ModuleType):
        return package
    if not isinstance(package, str):
        raise TypeError(
            f"package must be a module or a dotted module name, got {type(package).__name__}"
        )
    if not DOTTED_NAME_RE.fullmatch(package):
        raise UnknownPackageError(
            f"{package!r} is not a dotted Python package name (such as my_pipeline.workflows)"
        )
    try:
        return import_module(package)
    except ModuleNotFoundError as error:
        if error.name is not None and (
            package == error.name or package.startswith(error.name + ".")
        ):
            raise UnknownPackageError(
                f"package {package!r} is not importable here ({error}); install the pipeline in this "
                "environment (pip install -e <pipeline>) or check the name"
            ) from None
        raise


def _import_problem(module_name: str, error: BaseException) -> Problem:
    detail = "".join(traceback.format_exception(error))
    return Problem("import error", module_name, f"{type(error).__name__}: {error}", detail)


def discover(package: PackageLike) -> tuple[str, list[Found], list[Problem]]:
    from dkist_processing_core._workflow_model import Workflow

    try:
        root = _resolve_package(package)
    except UnknownPackageError:
        raise
    except Exception as error:  # the package itself raises on import
        name = package if isinstance(package, str) else getattr(package, "__name__", repr(package))
        return name, [], [_import_problem(name, error)]

    found: list[Found] = []
    problems: list[Problem] = []
    seen: set[int] = set()

    def collect(module: ModuleType) -> None:
        for attribute, value in list(vars(module).items()):
            if isinstance(value, Workflow) and id(value) not in seen:
                seen.add(id(value))
                found.append(Found(value, f"{module.__name__}:{attribute}"))

    collect(root)
    # Import one level at a time, so a subpackage is walked only once it imported cleanly.
    pending = list(_public_names_one_level(root))
    while pending:
        name = pending.pop(0)
        try:
            module = import_module(name)
        except Exception as error:
            problems.append(_import_problem(name, error))
            continue
        collect(module)
        pending[0:0] = list(_public_names_one_level(module))
    return root.__name__, found, problems


def _public_names_one_level(module: ModuleType) -> list[str]:
    paths = getattr(module, "__path__", None)
    if paths is None:
        return []
    return [
        info.name
        for info in pkgutil.iter_modules(paths, prefix=module.__name__ + ".")
        if not info.name.rpartition(".")[2].startswith("_")
    ]


def discover_workflows(package: PackageLike) -> list[Workflow]:
    """Every Workflow object in the public modules of ``package`` (recursively), each once.

    Order: by module name, then by definition order within a module. Modules whose name (or a
    parent package's name) starts with ``_`` are skipped. Raises :class:`WorkflowValidationError`
    listing every module that fails to import.
    """
    name, found, problems = discover(package)
    if problems:
        raise WorkflowValidationError(name, problems)
    return [item.workflow for item in found]


def find_workflow(package: PackageLike, name: str | None = None) -> Workflow:
    """The workflow of ``package`` whose DAG id or workflow name is ``name``.

    With ``name`` None the package must hold exactly one workflow.
    """
    workflows = discover_workflows(package)
    package_name = package if isinstance(package, str) else package.__name__
    choices = ", ".join(workflow.dag_name for workflow in workflows) or "none"
    if name is None:
        if len(workflows) == 1:
            return workflows[0]
        raise WorkflowNotFoundError(
            f"{package_name} has {len(workflows)} workflows; name one of: {choices}"
        )
    by_dag_id = [workflow for workflow in workflows if workflow.dag_name == name]
    matches = by_dag_id or [workflow for workflow in workflows if workflow.workflow_name == name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise WorkflowNotFoundError(
            f"{package_name} has no workflow {name!r}; choose one of: {choices}"
        )
    raise WorkflowNotFoundError(
        f"{name!r} names {len(matches)} workflows of {package_name}; choose one DAG id of: "
        + ", ".join(workflow.dag_name for workflow in matches)
    )
