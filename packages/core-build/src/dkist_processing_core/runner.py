"""Run one workflow on this machine, without an Airflow server: the public face of the engines.

:func:`run_workflow` picks an engine by name (``local``: every task in its own process as a worker
runs it; ``airflow``: Airflow's own ``dag.test()`` on a throw-away metadata database; see
:mod:`dkist_processing_core.engines`), checks that the options given are ones that engine takes,
and returns its :class:`RunSummary`. :func:`run_local` and :func:`run_airflow` are the two engines
by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core.engines import ENGINES
from dkist_processing_core.engines import engine_class
from dkist_processing_core.engines._common import RunError
from dkist_processing_core.engines._common import RunInterrupted
from dkist_processing_core.engines._common import RunSummary
from dkist_processing_core.engines._common import TaskResult
from dkist_processing_core.engines._common import TaskState
from dkist_processing_core.engines._common import default_log_root
from dkist_processing_core.engines._common import local_run_id
from dkist_processing_core.errors import UsageError
from dkist_processing_core.recipe_run_id import parse_recipe_run_id

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow

__all__ = [
    "ENGINES",
    "RunError",
    "RunInterrupted",
    "RunSummary",
    "TaskResult",
    "TaskState",
    "default_log_root",
    "local_run_id",
    "run_airflow",
    "run_local",
    "run_workflow",
]


def run_workflow(
    workflow: Workflow, recipe_run_id: int | str, engine: str = "local", **options: Any
) -> RunSummary:
    """Run ``workflow`` for ``recipe_run_id`` with ``engine`` and its ``options``.

    An option the engine does not take is a :class:`UsageError` that names the engine it is for.
    """
    recipe_run_id = parse_recipe_run_id(recipe_run_id)
    chosen = engine_class(engine)
    foreign = sorted(set(options) - chosen.options)
    if foreign:
        owners = sorted({name for name in ENGINES if foreign[0] in engine_class(name).options})
        flags = " and ".join("--" + option.replace("_", "-") for option in foreign)
        where = f"--engine {' or '.join(owners)} only" if owners else "no engine"
        raise UsageError(f"{flags} {'apply' if len(foreign) > 1 else 'applies'} to {where}")
    return chosen(**options).run(workflow, recipe_run_id)


def run_local(workflow: Workflow, recipe_run_id: int | str, **options: Any) -> RunSummary:
    """:func:`run_workflow` with the ``local`` engine."""
    return run_workflow(workflow, recipe_run_id, "local", **options)


def run_airflow(workflow: Workflow, recipe_run_id: int | str, **options: Any) -> RunSummary:
    """:func:`run_workflow` with the ``airflow`` engine."""
    return run_workflow(workflow, recipe_run_id, "airflow", **options)
