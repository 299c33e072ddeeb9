"""Names of a higher distribution, loaded on first access (PEP 562) by the public modules of core-task.

core-task owns the public ``dkist_processing_core`` package and ``dkist_processing_core.workflow``,
because a lean worker imports them; some of their names are defined by core-workflow, which a
worker does not install. Those are imported by module name when first asked for, so core-task
never imports a layer above it, and a missing distribution is an ImportError that says what to
install.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["load_module"]


def load_module(module_name: str, distribution: str, wanted: str) -> ModuleType:
    """Import ``module_name`` of ``distribution``; ImportError naming the distribution if it is missing."""
    try:
        return import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ImportError(
            f"{wanted} is provided by the distribution {distribution!r}, which is not "
            f"installed here. Install it with: pip install {distribution}",
            name=module_name,
        ) from None
