"""Run one task the way a worker does: ``python -m dkist_processing_core.run_task``.

The worker program (:mod:`dkist_processing_core.worker`) starts a task through this module inside
the task venv, and the local runner in its own environment, so a task behaves the same on both. The recipe run id comes
from the environment variable ``RECIPE_RUN_ID`` and is read by the one parser of
:mod:`dkist_processing_core.recipe_run_id`: a value such as ``"1; rm -rf /"`` is refused with exit
status 2 before any pipeline code is imported.

Exit status: 0 the task succeeded, 1 the task raised, 2 the invocation was wrong (bad recipe run
id, invalid configuration variable, task not importable or not a TaskBase subclass).

The task runs exactly as the previous product's worker ran it, ``with Task(...) as task: task()``;
``rollback()`` is a manual operation and is never called here.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib import import_module
from typing import TYPE_CHECKING

from dkist_processing_core.errors import UsageError
from dkist_processing_core.recipe_run_id import RECIPE_RUN_ID_VARIABLE
from dkist_processing_core.recipe_run_id import RecipeRunIdError
from dkist_processing_core.recipe_run_id import parse_recipe_run_id

if TYPE_CHECKING:
    from dkist_processing_core.task import TaskBase

__all__ = ["InvocationError", "load_task_class", "main", "run_task"]


class InvocationError(UsageError, ValueError):
    """The task cannot be started as asked (unknown task, invalid configuration)."""


def load_task_class(module_name: str, class_name: str) -> type[TaskBase]:
    """Import ``module_name`` and return its TaskBase subclass ``class_name``."""
    from dkist_processing_core.task import TaskBase

    try:
        module = import_module(module_name)
    except Exception as error:  # missing, or broken at import (SyntaxError, NameError, ...)
        raise InvocationError(
            f"cannot import task module {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    task_class = getattr(module, class_name, None)
    if not (isinstance(task_class, type) and issubclass(task_class, TaskBase)):
        raise InvocationError(f"{module_name}.{class_name} is not a TaskBase subclass")
    return task_class


def run_task(
    task_module: str,
    task_class: str,
    recipe_run_id: int | str,
    workflow_name: str,
    workflow_version: str,
) -> None:
    """Run one task in this process: pre_run, run, post_run; an exception propagates unchanged."""
    cls = load_task_class(task_module, task_class)
    _run(cls, parse_recipe_run_id(recipe_run_id), workflow_name, workflow_version)


def _run(
    cls: type[TaskBase],
    recipe_run_id: int,
    workflow_name: str,
    workflow_version: str,
    task_errors: list[BaseException] | None = None,
) -> None:
    """``with cls(...) as task: task()``; the task's own exception is appended to ``task_errors``.

    The caller needs it because an exception raised by a subclass's ``__exit__`` replaces it.
    """
    with cls(
        recipe_run_id=recipe_run_id, workflow_name=workflow_name, workflow_version=workflow_version
    ) as task:
        try:
            task()
        except BaseException as error:
            if task_errors is not None:
                task_errors.append(error)
            raise


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _check_configuration() -> None:
    """Read the settings from the environment now, so that a bad variable is an invocation error."""
    from dkist_processing_core.config import ConfigurationError
    from dkist_processing_core.config import core_configuration

    try:
        core_configuration()
    except ConfigurationError as error:
        raise InvocationError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dkist_processing_core.run_task",
        description=f"Run one dkist-processing-core task; the recipe run id comes from ${RECIPE_RUN_ID_VARIABLE}.",
    )
    parser.add_argument("--module", required=True, help="module that defines the task class")
    parser.add_argument("--task", required=True, help="name of the TaskBase subclass")
    parser.add_argument("--workflow-name", required=True)
    parser.add_argument("--workflow-version", required=True)
    parser.add_argument(
        "--recipe-run-id",
        default=os.environ.get(RECIPE_RUN_ID_VARIABLE),
        help=f"overrides ${RECIPE_RUN_ID_VARIABLE} (for manual runs)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the task the arguments name; return the exit status (0, 1 or 2, see the module docstring)."""
    args = _parser().parse_args(argv)
    from dkist_processing_core._ownership import check_package_is_ours

    try:
        check_package_is_ours()
    except ImportError as error:
        print(f"dkist-processing-core: {error}", file=sys.stderr)
        return 2
    try:
        if args.recipe_run_id is None:
            raise InvocationError(
                f"no recipe run id: set ${RECIPE_RUN_ID_VARIABLE} or pass --recipe-run-id"
            )
        recipe_run_id = parse_recipe_run_id(args.recipe_run_id)
        _check_configuration()
        cls = load_task_class(args.module, args.task)
    except (InvocationError, RecipeRunIdError) as error:
        print(f"dkist-processing-core: {error}", file=sys.stderr)
        return 2
    task_errors: list[BaseException] = []
    try:
        _run(cls, recipe_run_id, args.workflow_name, args.workflow_version, task_errors)
    except (Exception, SystemExit) as error:
        task_error = task_errors[0] if task_errors else error
        if isinstance(task_error, SystemExit):
            message = f"called sys.exit({task_error.code!r}); a task signals failure by raising an exception"
        else:
            traceback.print_exc()
            message = f"failed: {_describe(task_error)}"
        if task_error is not error:
            message += f" (and leaving the task then raised {_describe(error)})"
        print(f"dkist-processing-core: task {args.task} {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
