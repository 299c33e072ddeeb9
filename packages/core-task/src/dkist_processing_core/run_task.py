"""Run one task the way a worker does: ``python -m dkist_processing_core.run_task``.

The exported Airflow DAG, the local runner and the notebook all go through this module, so a task
behaves the same everywhere. The recipe run id comes from the environment variable
``RECIPE_RUN_ID`` (rendered there by Airflow from ``dag_run.conf``) and is parsed with ``int()``:
a value such as ``"1; rm -rf /"`` is refused with exit status 2 before any pipeline code is imported.

Exit status: 0 the task succeeded, 1 the task raised, 2 the invocation was wrong (bad recipe run
id, invalid configuration variable, task not importable or not a TaskBase subclass).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dkist_processing_core.task import TaskBase

__all__ = ["RECIPE_RUN_ID_VARIABLE", "InvocationError", "load_task_class", "main", "parse_recipe_run_id", "run_task"]

RECIPE_RUN_ID_VARIABLE = "RECIPE_RUN_ID"


class InvocationError(ValueError):
    """The task cannot be started as asked (bad recipe run id, unknown task)."""


def parse_recipe_run_id(raw: object) -> int:
    """Parse a recipe run id given as text or int; it must be a non-negative integer."""
    if isinstance(raw, bool):
        raise InvocationError(f"recipe run id must be a non-negative integer, got {raw!r}")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str):
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise InvocationError(f"recipe run id must be a non-negative integer, got {raw!r}") from None
    else:
        raise InvocationError(f"recipe run id must be a non-negative integer, got {raw!r}")
    if value < 0:
        raise InvocationError(f"recipe run id must be a non-negative integer, got {raw!r}")
    return value


def load_task_class(module_name: str, class_name: str) -> type[TaskBase]:
    """Import ``module_name`` and return its TaskBase subclass ``class_name``."""
    from dkist_processing_core.task import TaskBase

    try:
        module = import_module(module_name)
    except Exception as error:  # missing, or broken at import (SyntaxError, NameError, ...)
        raise InvocationError(f"cannot import task module {module_name!r}: {type(error).__name__}: {error}") from None
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
    """Run one task in this process: pre_run, run, post_run; rollback and re-raise on failure."""
    cls = load_task_class(task_module, task_class)
    _run(cls, parse_recipe_run_id(recipe_run_id), workflow_name, workflow_version)


def _run(cls: type[TaskBase], recipe_run_id: int, workflow_name: str, workflow_version: str) -> None:
    with cls(recipe_run_id=recipe_run_id, workflow_name=workflow_name, workflow_version=workflow_version) as task:
        try:
            task()
        except BaseException:
            try:
                task.rollback()
            except Exception:
                logging.getLogger(__name__).exception("rollback of task %s failed", cls.__name__)
            raise


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
        default=None,
        help=f"overrides ${RECIPE_RUN_ID_VARIABLE} (for manual runs)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raw_id = args.recipe_run_id if args.recipe_run_id is not None else os.environ.get(RECIPE_RUN_ID_VARIABLE)
    try:
        if raw_id is None:
            raise InvocationError(f"no recipe run id: set ${RECIPE_RUN_ID_VARIABLE} or pass --recipe-run-id")
        recipe_run_id = parse_recipe_run_id(raw_id)
        _check_configuration()
        cls = load_task_class(args.module, args.task)
    except InvocationError as error:
        print(f"dkist-processing-core: {error}", file=sys.stderr)
        return 2
    try:
        _run(cls, recipe_run_id, args.workflow_name, args.workflow_version)
    except Exception as error:
        traceback.print_exc()
        print(f"dkist-processing-core: task {args.task} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except SystemExit as error:  # the task was rolled back: its work did not finish
        print(
            f"dkist-processing-core: task {args.task} called sys.exit({error.code!r}); "
            "a task signals failure by raising an exception",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
