"""Refuse to run where the previous single-distribution product shares the package folder.

``dkist-processing-core`` 7.x and the split distributions (``dkist-processing-core-task`` and the
others) both install files into ``site-packages/dkist_processing_core/`` (``__init__.py``,
``task.py``, ``config.py``, ...). pip cannot see that, so whichever was installed last has
silently overwritten the other's files, and uninstalling one breaks the other. Both directions are
caught here and reported with one message:

- our ``__init__`` finds a ``dkist_processing_core-<7.x>.dist-info`` next to the package folder;
- our entry points (``run_task``, the CLI) find that ``dkist_processing_core/__init__.py`` is not
  ours (the old product's was installed over it).

The check reads one directory listing per package folder; nothing is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

__all__ = [
    "SPLIT_CORE_MARKER",
    "check_package_is_ours",
    "conflict_message",
    "previous_core_next_to",
]

#: Attribute that only the split core's ``dkist_processing_core/__init__.py`` defines.
SPLIT_CORE_MARKER = "_DKIST_SPLIT_CORE"
_PREVIOUS_DIST_INFO = "dkist_processing_core-"
_FIRST_SPLIT_MAJOR = 8


def previous_core_next_to(package_folders: Iterable[str]) -> tuple[str, str] | None:
    """``(version, folder)`` of a ``dkist-processing-core`` < 8 installed beside a package folder."""
    for package_folder in package_folders:
        site = os.path.dirname(os.path.abspath(package_folder))
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for name in names:
            if not (name.startswith(_PREVIOUS_DIST_INFO) and name.endswith(".dist-info")):
                continue
            version = name[len(_PREVIOUS_DIST_INFO) : -len(".dist-info")]
            major = version.partition(".")[0]
            if major.isdigit() and int(major) < _FIRST_SPLIT_MAJOR:
                return version, site
    return None


def conflict_message(previous_version: str, site: str) -> str:
    return (
        f"dkist-processing-core {previous_version} (the previous single-distribution product) and the "
        f"split core (dkist-processing-core-task and its sibling distributions, dkist-processing-core >= 8) "
        f"are both installed in {site}. They write the same files in dkist_processing_core/, so one has "
        "overwritten the other. Uninstall all of them (pip uninstall dkist-processing-core "
        "dkist-processing-core-task dkist-processing-core-telemetry dkist-processing-core-workflow "
        "dkist-processing-core-build) and install one product: either dkist-processing-core==7.x, or the "
        "split core (dkist-processing-core-task for workers, dkist-processing-core-build for CI, or "
        "dkist-processing-core>=8 for everything). See docs/migration.md."
    )


def check_package_is_ours() -> None:
    """Raise ImportError if ``dkist_processing_core/__init__.py`` is the previous product's."""
    package = sys.modules.get("dkist_processing_core")
    if package is None or getattr(package, SPLIT_CORE_MARKER, False):
        return
    folders = list(getattr(package, "__path__", []))
    found = previous_core_next_to(folders)
    version, site = (
        found if found is not None else ("7.x", os.path.dirname(folders[0]) if folders else "?")
    )
    raise ImportError(conflict_message(version, site), name="dkist_processing_core")
