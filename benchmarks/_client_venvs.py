"""The Python 3.13 venvs that tests/clients builds: dkist-processing-core 7.5.0 ("old") and ours.

Both hold the same pinned client pipelines and the same Airflow (``tests/clients/pins-py313.txt``);
only the core differs, so figures measured in them compare the cores side by side. Built once and
cached under ``~/.cache/dkist-processing-core-tests`` (a cold build needs the package index).
"""

from __future__ import annotations

import sys
from pathlib import Path

from _timing import REPO_ROOT

__all__ = ["client_venvs"]


def client_venvs(workdir: Path) -> dict[str, Path] | str:
    """Interpreters ``{"7.5.0": ..., "ours": ...}``, or why they cannot be had here."""
    for folder in ("tests", "scripts"):  # the test helpers, and the scripts they use
        sys.path.insert(0, str(REPO_ROOT / folder))
    from helpers.client_venvs import OLD_CORE
    from helpers.client_venvs import pinned_venv
    from helpers.client_venvs import python313
    from helpers.release import build_core_wheels

    try:
        python313()
        wheels = build_core_wheels(workdir / "core-wheels")
        return {"7.5.0": pinned_venv("old", [OLD_CORE]), "ours": pinned_venv("new", wheels)}
    except AssertionError as error:  # the helpers' way of saying what is missing
        return str(error).splitlines()[0]
