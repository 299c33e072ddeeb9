"""hatch environment collector: a member's folder gets the workspace root's environments.

hatch reads only the ``pyproject.toml`` of the folder it runs in (its workspaces are configured
per environment, with no notion of a parent), so in ``packages/core-task`` it would build an
environment of core-task alone and fail on core-telemetry, which is not on the index. Each member
loads this collector (``[tool.hatch.env.collectors.custom]``): it hands hatch the root's
``[tool.hatch.envs]`` with ``{root}`` and the members' paths pointing at the root and the root's
dependency groups expanded (hatch reads groups only from its own project). ``hatch build`` and
``hatch version`` there still act on the member alone.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from hatch.env.collectors.plugin.interface import EnvironmentCollectorInterface
from packaging.dependency_groups import resolve_dependency_groups

ROOT = Path(__file__).resolve().parent.parent


def workspace_environments(project_root: Path, root: Path = ROOT) -> dict[str, dict]:
    """The root's hatch environments, valid in the project at ``project_root``."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    text = json.dumps(config["tool"]["hatch"]["envs"]).replace("{root}", str(root))
    environments: dict[str, dict] = json.loads(text)
    for environment in environments.values():
        for member in environment.get("workspace", {}).get("members", []):
            path = (root / member["path"]).resolve()
            if path == project_root.resolve():
                # hatch finds no workspace member at the path of the project it runs in, and
                # installing it as that project happens before, so without, its siblings: a
                # one-character glob names the same folder
                path = path.parent / f"[{path.name[0]}]{path.name[1:]}"
            member["path"] = str(path)
        groups = environment.pop("dependency-groups", [])
        if groups:
            required = resolve_dependency_groups(config["dependency-groups"], *groups)
            environment["extra-dependencies"] = list(dict.fromkeys(required))
    return environments


class WorkspaceEnvironmentCollector(EnvironmentCollectorInterface):
    """Adds the workspace root's environments to a member's project."""

    PLUGIN_NAME = "dkist-processing-core-workspace"

    def finalize_config(self, config: dict[str, dict]) -> None:
        # the merge hatch does with the root's own tables: each updates hatch's defaults
        for name, environment in workspace_environments(Path(self.root)).items():
            config.setdefault(name, {}).update(environment)


def get_environment_collector() -> type[EnvironmentCollectorInterface]:
    return WorkspaceEnvironmentCollector
