"""The release check: a tag ``<member>-v<version>`` must name the version the member declares.

The artifacts of a release pass ``twine check --strict`` (tests/release/test_wheels.py).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from helpers.release import MEMBERS
from helpers.release import PROJECT_DIRS
from helpers.release import REPO_ROOT
from helpers.release import declared_version
from helpers.release import run
from helpers.release import version_file

SCRIPT = REPO_ROOT / "scripts" / "release_check.py"


def release_check(*args: str | Path, cwd: Path = REPO_ROOT) -> tuple[int, str]:
    result = run([sys.executable, SCRIPT, *args], cwd=cwd)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("project", MEMBERS)
def test_a_tag_with_the_declared_version_passes(project: str) -> None:
    status, output = release_check("--tag", f"{project}-v{declared_version(project)}")
    assert status == 0, output


def test_the_meta_distribution_is_tagged_without_a_prefix() -> None:
    status, output = release_check("--tag", f"v{declared_version('meta')}")
    assert status == 0, output


def test_a_tag_ahead_of_the_version_file_fails_and_says_how_to_fix_it() -> None:
    version = declared_version("core-task")
    status, output = release_check("--tag", "core-task-v99.0.0")
    assert status == 1, output
    assert f"dkist-processing-core-task is at {version}" in output
    assert "_version_task.py, not 99.0.0" in output
    assert "`hatch version 99.0.0` in packages/core-task" in output


def test_a_member_tag_is_not_read_as_the_meta_distribution() -> None:
    status, output = release_check("--tag", f"core-build-v{declared_version('meta')}")
    assert status == 1, output
    assert "dkist-processing-core-build is at" in output


@pytest.mark.parametrize("tag", ["core-tsk-v1.0.0", "release-1.0.0", "1.0.0"])
def test_a_tag_that_names_no_distribution_fails(tag: str) -> None:
    status, output = release_check("--tag", tag)
    assert status == 1, output
    assert "not a release tag; release tags are core-telemetry-vX.Y.Z" in output


@pytest.fixture
def tagged_checkout(tmp_path: Path) -> Path:
    """A git repository with the projects' pyproject and version files, one commit."""
    for project in [*MEMBERS, "meta"]:
        folder = tmp_path if project == "meta" else tmp_path / "packages" / project
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_DIRS[project] / "pyproject.toml", folder / "pyproject.toml")
        target = version_file(project, folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(version_file(project), target)
    git = ["git", "-C", tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"]):
        assert run([*git, *command]).returncode == 0
    return tmp_path


def test_the_tags_on_head_are_checked(tagged_checkout: Path) -> None:
    status, output = release_check("--root", tagged_checkout)
    assert status == 0 and "nothing to check" in output, output
    good, bad = f"core-task-v{declared_version('core-task')}", "core-workflow-v7.7.7"
    assert run(["git", "-C", tagged_checkout, "tag", good]).returncode == 0
    status, output = release_check("--root", tagged_checkout)
    assert status == 0, output
    assert run(["git", "-C", tagged_checkout, "tag", bad]).returncode == 0
    status, output = release_check("--root", tagged_checkout)
    assert status == 1, output
    assert f"{bad}: dkist-processing-core-workflow is at" in output
    assert good not in output.replace(f"{good},", "")
