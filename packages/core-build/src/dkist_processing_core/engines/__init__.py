"""Engines that run one workflow on this machine: ``local`` and ``airflow``, with room for more.

An engine is a class of the :class:`~dkist_processing_core.engines._common.Engine` shape: a
``name``, the ``options`` its constructor takes, and ``run(workflow, recipe_run_id)`` returning a
:class:`~dkist_processing_core.engines._common.RunSummary`. :data:`ENGINES` names the module of
each; a new engine is a module with one class and a line here. Nothing is imported until asked.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from dkist_processing_core.errors import UsageError

if TYPE_CHECKING:
    from dkist_processing_core.engines._common import Engine

__all__ = ["ENGINES", "engine_class"]

#: engine name -> (module, class)
ENGINES: dict[str, tuple[str, str]] = {
    "local": ("dkist_processing_core.engines.local", "LocalEngine"),
    "airflow": ("dkist_processing_core.engines.airflow", "AirflowEngine"),
}


def engine_class(name: str) -> type[Engine]:
    """The engine called ``name``; UsageError naming the engines there are otherwise."""
    try:
        module, class_name = ENGINES[name]
    except KeyError:
        raise UsageError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None
    engine: type[Engine] = getattr(import_module(module), class_name)
    return engine
