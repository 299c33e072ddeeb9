"""The workspace's projects, read from their ``pyproject.toml`` files: the one list of members.

Every folder ``packages/<member>/`` with a ``pyproject.toml`` is a member. Its distribution name
comes from ``[project] name``, its version from the file ``[tool.hatch.version] path`` names, and
its import layer from its own table::

    [tool.dkist-processing-core]
    layer = 2   # telemetry 1 <- task 2 <- workflow 3 <- build 4

A module may import from its own member and from members of lower layers (the import-layer
contract, ``scripts/lint_imports.py``). The root ``pyproject.toml`` is the meta distribution
("meta"). The build, changelog and lint scripts, the test helpers, the hatch environment collector
and the documentation read this module instead of keeping their own lists.

    python scripts/workspace_members.py        # print the projects as a table
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

__all__ = [
    "META",
    "PACKAGE",
    "REPO_ROOT",
    "Project",
    "WorkspaceError",
    "by_key",
    "group_requirements",
    "members",
    "meta",
    "projects",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dkist_processing_core"
META = "meta"
TOOL_TABLE = "dkist-processing-core"
_VERSION_LINE = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)


class WorkspaceError(RuntimeError):
    """A project's ``pyproject.toml`` lacks what the workspace needs from it."""


@dataclass(frozen=True)
class Project:
    """One distribution of the workspace: a member (``core-task``) or the meta distribution."""

    key: str
    path: Path

    @cached_property
    def pyproject(self) -> dict:
        return tomllib.loads((self.path / "pyproject.toml").read_text())

    @property
    def is_member(self) -> bool:
        return self.key != META

    @property
    def dist(self) -> str:
        """The distribution name, e.g. ``dkist-processing-core-task``."""
        return self.pyproject["project"]["name"]

    @property
    def layer(self) -> int:
        """The import layer (1 = lowest); 0 for the meta distribution, which has no code."""
        if not self.is_member:
            return 0
        try:
            layer = self.pyproject["tool"][TOOL_TABLE]["layer"]
        except KeyError:
            raise WorkspaceError(
                f"{self.path / 'pyproject.toml'} has no [tool.{TOOL_TABLE}] layer = N"
            ) from None
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < 1:
            raise WorkspaceError(f"[tool.{TOOL_TABLE}] layer of {self.key} must be an integer >= 1")
        return layer

    @property
    def version_file(self) -> Path:
        """The file hatch reads the version from (``[tool.hatch.version] path``)."""
        return self.path / self.pyproject["tool"]["hatch"]["version"]["path"]

    @property
    def version(self) -> str:
        match = _VERSION_LINE.search(self.version_file.read_text())
        if not match:
            raise WorkspaceError(f"no __version__ line in {self.version_file}")
        return match.group(1)

    @property
    def source_tree(self) -> Path:
        """The member's ``src/dkist_processing_core`` folder."""
        return self.path / "src" / PACKAGE

    @property
    def changelog_section(self) -> str:
        """Folder of this project's fragments under ``changelog/`` ("" for the meta distribution)."""
        return self.key if self.is_member else ""

    @property
    def tag_prefix(self) -> str:
        """Release tags are ``<member>-v<version>``, ``v<version>`` for the meta distribution."""
        return f"{self.key}-v" if self.is_member else "v"

    def public_modules(self) -> list[str]:
        """Dotted names of the member's public modules (no part starting with ``_``), sorted."""
        names = []
        for path in sorted(self.source_tree.rglob("*.py")):
            parts = list(path.relative_to(self.source_tree).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(part.startswith("_") for part in parts):
                continue
            names.append(".".join([PACKAGE, *parts]))
        return names


def members(root: Path = REPO_ROOT) -> list[Project]:
    """The members, lowest layer first (telemetry, task, workflow, build)."""
    found = [
        Project(path.parent.name, path.parent)
        for path in sorted((root / "packages").glob("*/pyproject.toml"))
    ]
    if not found:
        raise WorkspaceError(f"no packages/*/pyproject.toml under {root}")
    found.sort(key=lambda project: (project.layer, project.key))
    layers = [project.layer for project in found]
    if len(set(layers)) != len(layers):
        raise WorkspaceError(f"two members share a layer: {[(p.key, p.layer) for p in found]}")
    return found


def meta(root: Path = REPO_ROOT) -> Project:
    """The meta distribution at the workspace root."""
    return Project(META, root)


def projects(root: Path = REPO_ROOT) -> list[Project]:
    """Every distribution the workspace releases: the members (lowest layer first), then the meta."""
    return [*members(root), meta(root)]


def by_key(key: str, root: Path = REPO_ROOT) -> Project:
    """The project named ``key`` (``core-task``, ``meta``, ...); KeyError naming the choices."""
    for project in projects(root):
        if project.key == key:
            return project
    raise KeyError(f"unknown project {key!r}; choose from {[p.key for p in projects(root)]}")


def group_requirements(group: str, root: Path = REPO_ROOT) -> list[str]:
    """The requirement strings of a dependency group, ``include-group`` entries expanded."""
    groups = tomllib.loads((root / "pyproject.toml").read_text()).get("dependency-groups", {})
    if group not in groups:
        raise WorkspaceError(f"no dependency group {group!r} in {root / 'pyproject.toml'}")
    result: list[str] = []
    for entry in groups[group]:
        if isinstance(entry, dict):
            result += [
                r for r in group_requirements(entry["include-group"], root) if r not in result
            ]
        elif entry not in result:
            result.append(entry)
    return result


def main() -> int:
    for project in projects():
        print(f"{project.key:16} layer {project.layer}  {project.dist} {project.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
