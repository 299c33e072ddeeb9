"""hatch environment collector: a member's folder gets the workspace's environments.

hatch reads the ``pyproject.toml`` of the folder it runs in, so in ``packages/core-task`` it would
build environments for core-task alone, and fail: core-task depends on
``dkist-processing-core-telemetry``, which is not on the package index but in the next folder.
Each member's ``pyproject.toml`` therefore loads this collector::

    [tool.hatch.env.collectors.custom]
    path = "../../scripts/hatch_workspace.py"

and the collector hands hatch the root ``pyproject.toml``'s ``[tool.hatch.envs]`` as they are,
adjusted for the other folder: paths and ``{root}`` point at the workspace root, and the root's
dependency groups (which hatch only reads from the project it runs in) become
``extra-dependencies``. So ``hatch test``, ``hatch test -p``, ``hatch shell`` and
``hatch run gates:all`` behave the same in the root and in every member folder; ``hatch build`` and
``hatch version`` there still act on that member alone.
"""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path
from typing import Any

from hatch.env.collectors.plugin.interface import EnvironmentCollectorInterface

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workspace_members import group_requirements

WORKSPACE_ROOT = Path(__file__).resolve().parent.parent


def _rebase(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace("{root}", root)
    if isinstance(value, list):
        return [_rebase(item, root) for item in value]
    if isinstance(value, dict):
        return {key: _rebase(item, root) for key, item in value.items()}
    return value


def workspace_environments(
    project_root: Path, workspace_root: Path = WORKSPACE_ROOT
) -> dict[str, dict]:
    """The root's hatch environments, valid in the project at ``project_root``."""
    config = tomllib.loads((workspace_root / "pyproject.toml").read_text())
    environments = copy.deepcopy(config["tool"]["hatch"]["envs"])
    root = str(workspace_root)
    for environment in environments.values():
        members = environment.get("workspace", {}).get("members", [])
        for member in list(members):
            table = {"path": member} if isinstance(member, str) else member
            path = (workspace_root / table["path"]).resolve()
            if path == project_root.resolve():
                # hatch finds no workspace member at the path of the project it runs in (and
                # installing it as the project would happen before, so without, its siblings):
                # a one-character glob names the same folder, and it is installed with the others
                path = path.parent / f"[{path.name[0]}]{path.name[1:]}"
            members[members.index(member)] = {**table, "path": str(path)}
        groups = environment.pop("dependency-groups", [])
        extra = environment.setdefault("extra-dependencies", [])
        for group in groups:
            extra += [r for r in group_requirements(group, workspace_root) if r not in extra]
    return _rebase(environments, root)


class WorkspaceEnvironmentCollector(EnvironmentCollectorInterface):
    """Adds the workspace root's environments to a member's project."""

    PLUGIN_NAME = "dkist-processing-core-workspace"

    def finalize_config(self, config: dict[str, dict]) -> None:
        # the same merge hatch does with the root's own [tool.hatch.envs]: each table updates
        # hatch's defaults (the internal hatch-test environment, for one)
        for name, environment in workspace_environments(Path(self.root)).items():
            config.setdefault(name, {}).update(environment)


def get_environment_collector() -> type[EnvironmentCollectorInterface]:
    return WorkspaceEnvironmentCollector
