"""One way the tests make wheels and wheelhouses for offline installs.

- :func:`versioned_copy`: a copy of a project at another version (its static ``version`` in
  pyproject.toml, or the ``__version__`` line of the file hatch reads it from);
- :func:`build_wheels`: the wheels of projects of this checkout (``helpers.release.build_wheel``, two
  at a time), a project given as a folder or as ``(folder, version)``;
- :func:`download`: ``pip download --only-binary=:all:`` from this machine's package index, with
  this interpreter's pip or another's;
- :func:`build_wheelhouse`: both, so that ``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS=<folder>`` are all
  an install needs;
- ``example_wheelhouse`` (fixture): core-telemetry, core-task, the example pipeline at 1.0.0 and
  2.0.0 and every dependency, built once per session for all xdist workers.

Wheelhouses are built under a file lock once (:func:`helpers.release.build_once`); the callers choose
the folder (``shared_tmp`` for a session, a cache folder to keep it across runs).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.release import PROJECT_DIRS
from helpers.release import REPO_ROOT
from helpers.release import build_once
from helpers.release import build_wheel
from helpers.release import run

__all__ = [
    "CORE_TASK",
    "EXAMPLE_VERSIONS",
    "build_wheels",
    "build_wheelhouse",
    "download",
    "example_wheelhouse",
    "versioned_copy",
]

#: What every task venv installs of ours: core-task and the core-telemetry it requires.
CORE_TASK = (PROJECT_DIRS["core-telemetry"], PROJECT_DIRS["core-task"])
#: The versions of the example pipeline in ``example_wheelhouse``.
EXAMPLE_VERSIONS = ("1.0.0", "2.0.0")

Project = Path | tuple[Path, str]


def versioned_copy(source: Path, target: Path, version: str) -> Path:
    """Copy the project folder ``source`` to ``target`` and set its version there."""
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dist", "*.egg-info")
    )
    config = tomllib.loads((target / "pyproject.toml").read_text())
    if "version" in config["project"]:
        path, line = target / "pyproject.toml", r'^version = "[^"]*"$'
        replacement = f'version = "{version}"'
    else:
        path = target / config["tool"]["hatch"]["version"]["path"]
        line, replacement = r"^__version__\s*=\s*[\"'][^\"']*[\"']", f'__version__ = "{version}"'
    text, count = re.subn(line, replacement, path.read_text(), flags=re.MULTILINE)
    assert count == 1, f"expected one version line in {path}"
    path.write_text(text)
    return target


def build_wheels(projects: Iterable[Project], folder: Path) -> list[Path]:
    """The wheel of each project in ``folder``, in the order given."""
    projects = list(projects)
    with tempfile.TemporaryDirectory(prefix="wheels-") as scratch:
        sources = []
        for number, project in enumerate(projects):
            if isinstance(project, tuple):
                source, version = project
                project = versioned_copy(source, Path(scratch) / f"{number}-{source.name}", version)
            sources.append(project)
        outdirs = [Path(scratch) / f"wheel-{number}" for number in range(len(sources))]
        for outdir in outdirs:
            outdir.mkdir()
        with ThreadPoolExecutor(max_workers=2) as pool:
            built = list(pool.map(build_wheel, sources, outdirs))
        return [Path(shutil.move(wheel, folder / wheel.name)) for wheel in built]


def download(
    folder: Path, arguments: Iterable[str | Path], python: str | Path = sys.executable
) -> None:
    """``pip download --only-binary=:all: ARGUMENTS`` into ``folder``: requirements, wheels, options.

    Uses this machine's package index (pip's own configuration) once.
    """
    command = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", folder]
    result = run([*command, *arguments])
    assert result.returncode == 0, (
        f"pip download into {folder} failed (it needs the package index once):\n"
        f"{result.stdout}{result.stderr}"
    )


def build_wheelhouse(folder: Path, projects: Iterable[Project]) -> list[Path]:
    """The projects' wheels and every third-party dependency in ``folder``; returns the wheels."""
    wheels = build_wheels(projects, folder)
    # One resolution cannot hold two versions of a distribution: the first wheel of each stands for
    # its versions (they share their dependencies).
    first = {wheel.name.split("-")[0]: wheel for wheel in reversed(wheels)}
    download(folder, first.values())
    return wheels


@pytest.fixture(scope="session")
def example_wheelhouse(shared_tmp: Path) -> Path:
    """core-telemetry, core-task, the example pipeline at EXAMPLE_VERSIONS and every dependency."""
    examples = [(REPO_ROOT / "examples", version) for version in EXAMPLE_VERSIONS]
    return build_once(
        shared_tmp,
        "example-wheelhouse",
        lambda folder: build_wheelhouse(folder, [*CORE_TASK, *examples]),
    )
