"""Public API of dkist-processing-core.

This file belongs to the ``dkist-processing-core-task`` distribution alone. The other distributions
(telemetry, workflow, build) put their modules into the same ``dkist_processing_core`` folder (or,
in editable installs, into folders of their own that ``extend_path`` merges in). Public names load
on first access so that ``from dkist_processing_core import TaskBase`` stays cheap on a worker.

Importing the package fails with one clear message where the previous single-distribution product
(``dkist-processing-core`` < 8) is installed in the same place (see ``_ownership``).
"""

from __future__ import annotations

import pkgutil
from typing import TYPE_CHECKING
from typing import Any

__path__ = pkgutil.extend_path(__path__, __name__)

#: Tells our entry points that this __init__ is the split core's (see _ownership).
_DKIST_SPLIT_CORE = True


def _refuse_previous_core_beside_us() -> None:
    from dkist_processing_core._ownership import conflict_message
    from dkist_processing_core._ownership import previous_core_next_to

    found = previous_core_next_to(__path__)
    if found is not None:
        raise ImportError(conflict_message(*found), name=__name__)


_refuse_previous_core_beside_us()

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow
    from dkist_processing_core.node import Node
    from dkist_processing_core.resource_queue import ResourceQueue
    from dkist_processing_core.task import TaskBase

__all__ = ["Node", "ResourceQueue", "TaskBase", "Workflow", "__version__"]

# public name -> (module that defines it, distribution that ships the module)
_LAZY_NAMES: dict[str, tuple[str, str]] = {
    "TaskBase": ("dkist_processing_core.task", "dkist-processing-core-task"),
    "ResourceQueue": ("dkist_processing_core.resource_queue", "dkist-processing-core-task"),
    "Workflow": ("dkist_processing_core._workflow_model", "dkist-processing-core-workflow"),
    "Node": ("dkist_processing_core.node", "dkist-processing-core-workflow"),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from dkist_processing_core._version_task import __version__

        return __version__
    try:
        module_name, dist = _LAZY_NAMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    from dkist_processing_core._lazy import load_module

    module = load_module(module_name, dist, f"dkist_processing_core.{name}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
