"""Temporary folders beyond pytest's own ``tmp_path``.

``shared_tmp``: one folder common to every pytest-xdist worker of the session (the parent of the
workers' base temp folders), for artifacts built once and shared under a file lock
(:func:`helpers.release.build_once`): wheels, wheelhouses, venvs, a migrated Airflow database.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["shared_tmp"]


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp folder common to all xdist workers of this session."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
