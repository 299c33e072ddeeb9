"""Helpers for the release tests (tests/release/): project facts, builds, clean pip environments.

Building is the slow part, so ``build_once`` lets one process build while the other pytest-xdist
workers wait on a file lock and then reuse the result.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import Parser
from pathlib import Path

import workspace_members

__all__ = [
    "MEMBERS",
    "PACKAGE",
    "PROJECT_DIRS",
    "REPO_ROOT",
    "build_once",
    "build_wheel",
    "clean_pip_env",
    "declared_version",
    "dist_name",
    "pyproject",
    "run",
    "version_file",
    "wheel_metadata",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = workspace_members.PACKAGE

# short name (as scripts/build_dists.py names them) -> project folder, from packages/*/pyproject.toml
PROJECT_DIRS = {project.key: project.path for project in workspace_members.projects(REPO_ROOT)}
# the members, lowest layer first
MEMBERS = [project.key for project in workspace_members.members(REPO_ROOT)]

_VERSION_LINE = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)


def pyproject(project: str) -> dict:
    return tomllib.loads((PROJECT_DIRS[project] / "pyproject.toml").read_text())


def dist_name(project: str) -> str:
    return pyproject(project)["project"]["name"]


def version_file(project: str, project_dir: Path | None = None) -> Path:
    """The file hatch reads the project's version from (``[tool.hatch.version] path``)."""
    relative = pyproject(project)["tool"]["hatch"]["version"]["path"]
    return (project_dir or PROJECT_DIRS[project]) / relative


def declared_version(project: str, project_dir: Path | None = None) -> str:
    match = _VERSION_LINE.search(version_file(project, project_dir).read_text())
    assert match, f"no __version__ line in {version_file(project, project_dir)}"
    return match.group(1)


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def clean_pip_env(**extra: str) -> dict[str, str]:
    """Environment for a pip that sees no index, no mirror and no constraints from this machine."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra)
    return env


def run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )


def build_wheel(project_dir: Path, outdir: Path) -> Path:
    """Build one project's wheel with the dev interpreter's hatchling (no download)."""
    before = set(outdir.glob("*.whl"))
    result = run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--wheel",
            "--outdir",
            outdir,
            project_dir,
        ]
    )
    assert result.returncode == 0, f"building {project_dir} failed:\n{result.stdout}{result.stderr}"
    (wheel,) = set(outdir.glob("*.whl")) - before
    return wheel


def build_core_wheels(outdir: Path) -> list[Path]:
    """This checkout's five wheels in ``outdir``, by the documented ``scripts/build_dists.py``."""
    script = REPO_ROOT / "scripts" / "build_dists.py"
    result = run([sys.executable, script, "--wheel-only", "--outdir", outdir])
    assert result.returncode == 0, f"scripts/build_dists.py failed:\n{result.stdout}{result.stderr}"
    wheels = sorted(outdir.glob("*.whl"))
    assert len(wheels) == 5, f"expected five wheels, got {[w.name for w in wheels]}"
    return wheels


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(root: Path, name: str, produce: Callable[[Path], None]) -> Path:
    """Run ``produce(folder)`` once for all processes sharing ``root``; return the folder."""
    root.mkdir(parents=True, exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with _file_lock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            produce(folder)
            done.touch()
    return folder
