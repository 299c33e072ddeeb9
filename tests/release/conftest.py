"""Fixtures for the release tests: built distributions and an offline dependency wheelhouse.

Artifacts are built once per test session and shared between the pytest-xdist workers.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from helpers.release import REPO_ROOT
from helpers.release import build_once
from helpers.release import pyproject
from helpers.release import run
from helpers.wheelhouse import download


@pytest.fixture(scope="session")
def built_dists(shared_tmp: Path) -> Path:
    """All five wheels and sdists, built by the documented command ``scripts/build_dists.py``."""

    def produce(folder: Path) -> None:
        result = run([sys.executable, REPO_ROOT / "scripts" / "build_dists.py", "--outdir", folder])
        assert result.returncode == 0, (
            f"scripts/build_dists.py failed:\n{result.stdout}{result.stderr}"
        )

    return build_once(shared_tmp, "release-dists", produce)


@pytest.fixture(scope="session")
def dependency_wheelhouse(request: pytest.FixtureRequest, shared_tmp: Path) -> Path:
    """Wheels of the third-party dependencies of core-telemetry and core-task, for offline installs.

    Downloaded once (from this machine's package index or mirror) into the pytest cache, keyed by
    the dependency list and the interpreter, so later runs need no index at all.
    """
    requirements = sorted(
        requirement
        for project in ("core-telemetry", "core-task")
        for requirement in pyproject(project)["project"]["dependencies"]
        if not requirement.startswith("dkist-processing-core-")
    )
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:16]
    try:
        cache_root = request.config.cache.mkdir("release-wheelhouse")
    except AttributeError:  # cache provider disabled (-p no:cacheprovider)
        cache_root = shared_tmp

    def produce(folder: Path) -> None:
        download(folder, requirements)

    return build_once(Path(cache_root), f"wheelhouse-{key}", produce)
