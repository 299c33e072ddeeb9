"""The workspace's projects, read from their ``pyproject.toml`` files: the one list of members.

Every folder ``packages/<member>/`` with a ``pyproject.toml`` is a member: its distribution name is
``[project] name``, its version what hatchling reads (``hatch version``), its import layer
``[tool.dkist-processing-core] layer`` (telemetry 1 <- task 2 <- workflow 3 <- build 4). The root
is the meta distribution ("meta"). The scripts, the tests and the docs read this module.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from hatchling.metadata.core import ProjectMetadata
from hatchling.plugin.manager import PluginManager

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dkist_processing_core"
META = "meta"


class WorkspaceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Project:
    """One distribution of the workspace: a member (``core-task``) or the meta distribution."""

    key: str
    path: Path

    @cached_property
    def pyproject(self) -> dict:
        return tomllib.loads((self.path / "pyproject.toml").read_text())

    @property
    def dist(self) -> str:
        return self.pyproject["project"]["name"]

    @property
    def version(self) -> str:
        return ProjectMetadata(str(self.path), PluginManager()).version

    @property
    def version_file(self) -> Path:
        return self.path / self.pyproject["tool"]["hatch"]["version"]["path"]

    @property
    def layer(self) -> int:
        """The import layer (1 = lowest); 0 for the meta distribution, which has no code."""
        if self.key == META:
            return 0
        layer = self.pyproject.get("tool", {}).get("dkist-processing-core", {}).get("layer")
        if type(layer) is not int or layer < 1:
            raise WorkspaceError(
                f"{self.path / 'pyproject.toml'} has no [tool.dkist-processing-core] layer = N"
            )
        return layer

    @property
    def source_tree(self) -> Path:
        return self.path / "src" / PACKAGE

    @property
    def tag_prefix(self) -> str:
        """Release tags are ``<member>-v<version>``, ``v<version>`` for the meta distribution."""
        return "v" if self.key == META else f"{self.key}-v"

    def public_modules(self) -> list[str]:
        """Dotted names of the member's public modules (no part starting with ``_``), sorted."""
        names = []
        for path in sorted(self.source_tree.rglob("*.py")):
            parts = path.relative_to(self.source_tree).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if not any(part.startswith("_") for part in parts):
                names.append(".".join([PACKAGE, *parts]))
        return names


def members(root: Path = REPO_ROOT) -> list[Project]:
    """The members, lowest layer first (telemetry, task, workflow, build)."""
    found = [Project(p.parent.name, p.parent) for p in (root / "packages").glob("*/pyproject.toml")]
    found.sort(key=lambda project: project.layer)
    if not found or len({p.layer for p in found}) != len(found):
        raise WorkspaceError(f"one layer per member: {[(p.key, p.layer) for p in found]}")
    return found


def meta(root: Path = REPO_ROOT) -> Project:
    return Project(META, root)


def projects(root: Path = REPO_ROOT) -> list[Project]:
    """Every distribution the workspace releases: the members, then the meta."""
    return [*members(root), meta(root)]


def by_key(key: str, root: Path = REPO_ROOT) -> Project:
    return next(project for project in projects(root) if project.key == key)
