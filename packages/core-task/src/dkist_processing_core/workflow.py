"""``dkist_processing_core.workflow``: workflow and DAG names everywhere, ``Workflow`` where it is installed.

Every task of dkist-processing-common imports :func:`dag_name` from here, so this module belongs
to core-task and works on a lean worker (core-task and core-telemetry only): :func:`dag_name`,
:func:`workflow_name_from_details` and :class:`NamingError` come from :mod:`.naming`. The
workflow model (``Workflow``, ``WorkflowError``, ``WorkflowCycleError``, the limits) belongs to
core-workflow (module ``_workflow_model``) and is loaded on first access; where core-workflow is
not installed, asking for one of its names raises ImportError naming the distribution to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._lazy import load_module
from dkist_processing_core.naming import NamingError
from dkist_processing_core.naming import dag_name
from dkist_processing_core.naming import workflow_name_from_details

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import (
        DEFAULT_MAX_ACTIVE_RUNS as DEFAULT_MAX_ACTIVE_RUNS,
    )
    from dkist_processing_core._workflow_model import MAX_ACTIVE_RUNS_LIMIT as MAX_ACTIVE_RUNS_LIMIT
    from dkist_processing_core._workflow_model import MAX_TAG_LENGTH as MAX_TAG_LENGTH
    from dkist_processing_core._workflow_model import Workflow as Workflow
    from dkist_processing_core._workflow_model import WorkflowCycleError as WorkflowCycleError
    from dkist_processing_core._workflow_model import WorkflowError as WorkflowError

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

_MODEL_MODULE = "dkist_processing_core._workflow_model"
_MODEL_DISTRIBUTION = "dkist-processing-core-workflow"


def __getattr__(name: str) -> Any:
    """A name of the workflow model (core-workflow), imported on first access.

    Any other name the model module has is found too, as it was when this module was core-workflow's.
    """
    if name.startswith("__"):  # import machinery and tools probing dunders: never the model
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        model = load_module(_MODEL_MODULE, _MODEL_DISTRIBUTION, f"{__name__}.{name}")
    except ImportError:
        if name in __all__:
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(model, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
