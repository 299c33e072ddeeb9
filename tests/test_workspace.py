"""The workspace's own sources of truth: members, development dependencies, the lock, the gates.

Every list of members (build, changelog, layer contract, type checker, hatch workspace, docs) comes
from ``packages/*/pyproject.toml`` or is checked against it here; the lock must be what uv resolves
from the pyproject files (these tests need the package index); the hatch environments work from
every member folder.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import lock
import pytest
import workspace_members
from packaging.dependency_groups import resolve_dependency_groups
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Upper bounds on third-party packages are allowed only where a release is known to break us.
KNOWN_BREAKS = {
    # pytest-dev/pytest-xdist#1386: `--dist loadgroup` silently does nothing on pytest 9.2
    "pytest": "<9.2",
    # apache-airflow-providers-celery (3.26) imports celery.backends.database.retry, gone in 5.7
    "celery": "<5.7",
    # the DAG files and runner use the airflow.sdk API of Airflow 3 (SPEC: Airflow 3.x)
    "apache-airflow": "<4",
}


def test_members_are_the_folders_under_packages_ordered_by_their_layer() -> None:
    members = workspace_members.members(ROOT)
    assert [m.key for m in members] == [
        "core-telemetry",
        "core-task",
        "core-workflow",
        "core-build",
    ]
    assert [m.layer for m in members] == [1, 2, 3, 4]
    assert {m.path.name for m in members} == {
        p.parent.name for p in ROOT.glob("packages/*/pyproject.toml")
    }
    for member in members:
        assert member.dist == f"dkist-processing-core-{member.key.removeprefix('core-')}"
        assert member.version_file.is_file() and member.source_tree.is_dir()
    assert workspace_members.meta(ROOT).dist == "dkist-processing-core"


def test_a_member_without_a_layer_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "packages" / "core-new"
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "dkist-processing-core-new"\n')
    with pytest.raises(
        workspace_members.WorkspaceError, match=r"no \[tool.dkist-processing-core\] layer"
    ):
        workspace_members.members(tmp_path)


def test_tool_configurations_name_exactly_the_members() -> None:
    """Tools that cannot read the members' tables list them; each list must match."""
    members = workspace_members.members(ROOT)
    sources = [f"packages/{m.key}/src" for m in members]
    mypy = CONFIG["tool"]["mypy"]
    assert mypy["files"] == sources
    assert mypy["mypy_path"].split(",") == sources
    hatch_members = CONFIG["tool"]["hatch"]["envs"]["default"]["workspace"]["members"]
    assert [m["path"] for m in hatch_members] == [f"packages/{m.key}" for m in members] + [
        "examples"
    ]
    assert (
        CONFIG["tool"]["hatch"]["envs"]["hatch-test"]["workspace"]
        == CONFIG["tool"]["hatch"]["envs"]["default"]["workspace"]
    )
    sections = {s["path"]: s["name"] for s in CONFIG["tool"]["towncrier"]["section"]}
    assert sections == {"": "Workspace"} | {m.key: m.dist for m in members}
    (layers,) = [c for c in CONFIG["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert len(layers["layers"]) == len(members)
    for member in members:
        collector = member.pyproject["tool"]["hatch"]["env"]["collectors"]["custom"]
        assert (
            member.path / collector["path"]
        ).resolve() == ROOT / "scripts" / "hatch_workspace.py"


def _pins(path: Path) -> dict[tuple[str, str], str]:
    """(name, marker) -> version of every ``name==version`` line of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "-e ", " ")):
            requirement = Requirement(line.split("  #", 1)[0])
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name), str(requirement.marker or "")] = (
                specifier.version
            )
    return pins


def test_the_lock_is_what_uv_resolves_from_the_pyproject_files() -> None:
    assert lock.check(ROOT) == []


@pytest.fixture
def workspace_copy(tmp_path: Path) -> Path:
    """What the lock is resolved from: the pyproject files and the projects they install."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for folder in ["packages", "examples", "requirements"]:
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "requirements-test.txt", tmp_path)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_a_bound_the_lock_does_not_meet_makes_it_stale(workspace_copy: Path) -> None:
    _edit(workspace_copy / "pyproject.toml", '"pytest>=8,<9.2"', '"pytest>=8,<9.1"')
    diff = lock.check(workspace_copy)
    assert any(line.startswith("-pytest==9.1.") for line in diff), diff
    assert any(line.startswith("+pytest==9.0.") for line in diff), diff


def test_a_new_or_removed_dependency_makes_the_lock_stale(workspace_copy: Path) -> None:
    _edit(workspace_copy / "pyproject.toml", '    "talus>=1.3",\n', '    "toolz>=0.12",\n')
    diff = lock.check(workspace_copy)
    for change in ["+toolz==", "-talus=="]:  # in both files: the test group is in both
        assert len([line for line in diff if line.startswith(change)]) == 2, diff


def test_a_lock_edited_by_hand_is_stale(workspace_copy: Path) -> None:
    constraints = workspace_copy / "requirements" / "constraints.txt"
    text = re.sub(r"^pytest==\S+", "pytest==9.2.0", constraints.read_text(), count=1, flags=re.M)
    constraints.write_text(text)
    assert any(line.startswith("-pytest==9.2.0") for line in lock.check(workspace_copy))


def _declared_requirements() -> list[Requirement]:
    """Every requirement of every member, extra, the example pipeline and dependency group."""
    tables = [p.pyproject["project"] for p in workspace_members.projects(ROOT)]
    tables.append(tomllib.loads((ROOT / "examples" / "pyproject.toml").read_text())["project"])
    texts = [text for table in tables for text in table.get("dependencies", [])]
    texts += [
        t for table in tables for ts in table.get("optional-dependencies", {}).values() for t in ts
    ]
    texts += resolve_dependency_groups(CONFIG["dependency-groups"], *CONFIG["dependency-groups"])
    return [Requirement(text) for text in texts]


def test_upper_bounds_only_where_a_break_is_known() -> None:
    own = {canonicalize_name(p.dist) for p in workspace_members.projects(ROOT)}
    found = {}
    for requirement in _declared_requirements():
        name = canonicalize_name(requirement.name)
        upper = [str(s) for s in requirement.specifier if s.operator in ("<", "<=", "==", "~=")]
        if upper and name not in own:
            found.setdefault(name, set()).update(upper)
    assert found == {name: {bound} for name, bound in KNOWN_BREAKS.items()}, (
        "an upper bound needs a known break: add it with its reason to KNOWN_BREAKS and next to "
        "the requirement, or drop it"
    )


def test_every_environment_installs_from_the_lock() -> None:
    """hatch through UV_CONSTRAINT; the README's pip through requirements-test.txt's pins."""
    envs = CONFIG["tool"]["hatch"]["envs"]
    for name in envs:
        env, chain = envs[name], [name]
        while "env-vars" not in env and "template" in env:  # gates -> default, ...
            chain.append(env["template"])
            env = envs[env["template"]]
        assert env["env-vars"]["UV_CONSTRAINT"] == "{root}/requirements/constraints.txt", chain
        # pip would ignore UV_CONSTRAINT (hatch's own environments use uv by default)
        assert env.get("installer", "uv") == "uv", chain
    # the test group bounds pytest; hatch's own test dependencies (pytest~=9.0) must not come back
    assert envs["hatch-test"]["dependencies"] == []
    locked, readme = _pins(ROOT / lock.FILES[0]), _pins(ROOT / lock.FILES[1])
    assert readme and {key: locked.get(key) for key in readme} == readme


def test_the_readme_test_environment_is_the_members_and_the_test_group() -> None:
    lines = (ROOT / "requirements-test.txt").read_text().splitlines()
    members = CONFIG["tool"]["hatch"]["envs"]["default"]["workspace"]["members"]
    assert sorted(line for line in lines if line.startswith("-e ")) == sorted(
        f"-e {member['path']}" for member in members
    )
    pinned = {name for name, _marker in _pins(ROOT / "requirements-test.txt")}
    test_group = resolve_dependency_groups(CONFIG["dependency-groups"], "test")
    assert {canonicalize_name(Requirement(text).name) for text in test_group} <= pinned
    assert not {"sphinx", "mypy"} & pinned  # the docs and lint groups are the hatch envs' only


def _hatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    hatch = Path(sys.executable).with_name("hatch")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HATCH_", "UV_"))}
    return subprocess.run(
        [str(hatch), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("folder", ["core-task", "core-build"])
def test_a_member_folder_gets_the_workspace_environments(folder: str) -> None:
    """What `hatch test` / `hatch shell` in packages/<member> install (nothing is installed here)."""
    result = _hatch("env", "show", "--json", cwd=ROOT / "packages" / folder)
    assert result.returncode == 0, result.stderr
    envs = json.loads(result.stdout)
    root_envs = json.loads(_hatch("env", "show", "--json", cwd=ROOT).stdout)
    assert set(root_envs) <= set(envs)
    features = {
        m["path"]: m.get("features", [])
        for m in CONFIG["tool"]["hatch"]["envs"]["default"]["workspace"]["members"]
    }
    for name in ("default", "hatch-test.py3.11", "hatch-test.py3.13", "gates"):
        env = envs[name]
        # every member (this one too) and the example are workspace members, as in the root
        assert env["skip-install"] is True
        found = {}
        for member in env["workspace"]["members"]:
            (path,) = glob.glob(member["path"])  # this member's own folder is named by a glob
            found[path] = member.get("features", [])
        assert found == {str(ROOT / p): f for p, f in features.items()}
        assert env["env-vars"]["UV_CONSTRAINT"] == str(ROOT / "requirements" / "constraints.txt")
    test_env = envs["hatch-test.py3.11"]
    assert [str(Requirement(r)) for r in test_env["extra-dependencies"]] == [
        str(Requirement(r)) for r in resolve_dependency_groups(CONFIG["dependency-groups"], "test")
    ]
    # the same commands as in the root, run in the root (where pytest finds its configuration)
    assert test_env["scripts"] == root_envs["hatch-test.py3.11"]["scripts"]
    assert test_env["scripts"]["run"][0].startswith(f"cd {ROOT} && env -u UV_CONSTRAINT pytest")
    assert envs["gates"]["scripts"]["all"] == root_envs["gates"]["scripts"]["all"]


def test_the_hatch_test_matrix_is_the_supported_pythons() -> None:
    matrix = CONFIG["tool"]["hatch"]["envs"]["hatch-test"]["matrix"]
    assert [sorted(m["python"]) for m in matrix] == [["3.11", "3.12", "3.13"]]
    # the classifiers say the same (tests/release/test_wheels.py); the lock resolves for the oldest and, through markers, every newer one
    assert CONFIG["project"]["requires-python"] == f">={lock.PYTHON}" == ">=3.11"


def test_ci_runs_every_gate() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    gates = CONFIG["tool"]["hatch"]["envs"]["gates"]["scripts"]
    assert "hatch run gates:all" in ci
    assert set(gates["all"]) == set(gates) - {"all"}


def test_public_api_docstrings_are_checked_by_the_linter() -> None:
    lint = CONFIG["tool"]["ruff"]["lint"]
    assert "D1" in lint["select"]
    assert lint["per-file-ignores"] == {"!packages/*/src/**": ["D1"]}


@pytest.mark.parametrize("requirement", ["pytest>=8,<9.2", "celery[redis]>=5.5,<5.7"])
def test_known_breaks_carry_their_reason_next_to_the_requirement(requirement: str) -> None:
    files = [ROOT / "pyproject.toml", *ROOT.glob("packages/*/pyproject.toml")]
    for path in files:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if f'"{requirement}"' in line:
                name = Requirement(requirement).name
                comment = " ".join(lines[max(0, number - 3) : number])
                assert "#" in comment and (name in comment or "5.7" in comment), (path, line)
                return
    raise AssertionError(f"{requirement} not declared")
