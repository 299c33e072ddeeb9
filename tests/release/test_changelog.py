"""Changelog fragments: the gate refuses names towncrier would skip; releases go per distribution.

That the towncrier sections are exactly the members is checked in tests/test_workspace.py.
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
from helpers.release import dist_name
from helpers.release import run
from helpers.release import version_file

SCRIPT = REPO_ROOT / "scripts" / "changelog.py"


def changelog(root: Path, *args: str):
    result = run([sys.executable, SCRIPT, "--root", root, *args])
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The towncrier-relevant part of the repository, with an empty changelog/ per section."""
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(REPO_ROOT / "meta_version.py", tmp_path / "meta_version.py")
    for member in MEMBERS:
        folder = tmp_path / "packages" / member
        folder.mkdir(parents=True)
        shutil.copy(PROJECT_DIRS[member] / "pyproject.toml", folder / "pyproject.toml")
        target = version_file(member, folder)
        target.parent.mkdir(parents=True)
        shutil.copy(version_file(member), target)
        (tmp_path / "changelog" / member).mkdir(parents=True)
    return tmp_path


def test_the_repository_changelog_passes_the_gate() -> None:
    status, output = changelog(REPO_ROOT, "check")
    assert status == 0, output


def test_well_named_fragments_in_every_section_pass(checkout: Path) -> None:
    (checkout / "changelog" / "7.feature.rst").write_text("Workspace change.\n")
    (checkout / "changelog" / "core-task" / "7.bugfix.rst").write_text("Task fix.\n")
    (checkout / "changelog" / "core-task" / "7.bugfix.1.rst").write_text("Second task fix.\n")
    (checkout / "changelog" / "core-build" / "12.removal.rst").write_text("Gone.\n")
    status, output = changelog(checkout, "check")
    assert status == 0, output
    draft = run(
        [sys.executable, "-m", "towncrier", "build", "--draft", "--version", "1"], cwd=checkout
    )
    output = draft.stdout
    for text in [
        "Workspace change. (#7)",
        "Task fix. (#7)",
        "Second task fix. (#7)",
        "Gone. (#12)",
    ]:
        assert text in output


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("7.feat.rst", "Invalid news fragment name: 7.feat.rst"),  # unknown type
        ("notes.rst", "Invalid news fragment name: notes.rst"),  # no number, no type
        # towncrier orphan fragments: the template needs a PR number (orphan_prefix = "")
        ("+orphan.misc.rst", "Issue name '+orphan' does not match"),
        ("fix-7.bugfix.rst", "Issue name 'fix-7' does not match"),  # issue_pattern
    ],
)
def test_names_towncrier_refuses_fail_the_gate(checkout: Path, name: str, message: str) -> None:
    # [tool.towncrier] makes towncrier itself strict about these: no hand-written rule involved
    (checkout / "changelog" / "core-task" / name).write_text("Something.\n")
    status, output = changelog(checkout, "check")
    assert status == 1, output
    assert message in output


@pytest.mark.parametrize(
    "name",
    [
        "7.feature.md",  # towncrier would take it, the seed template says .rst
        "7.feature.one.rst",  # counter must be a number
        "07.feature.rst",  # not a PR number (towncrier strips the zero)
    ],
)
def test_names_towncrier_accepts_but_the_template_refuses_fail_the_gate(
    checkout: Path, name: str
) -> None:
    (checkout / "changelog" / "core-task" / name).write_text("Something.\n")
    status, output = changelog(checkout, "check")
    assert status == 1, output
    assert f"changelog/core-task/{name}: not the fragment template" in output


def test_an_unknown_section_folder_fails_the_gate(checkout: Path) -> None:
    (checkout / "changelog" / "core-tsk").mkdir()
    (checkout / "changelog" / "core-tsk" / "7.feature.rst").write_text("Typo in the folder.\n")
    status, output = changelog(checkout, "check")
    assert status == 1, output
    assert "changelog/core-tsk/ is not a changelog section" in output


def test_an_empty_fragment_fails_the_gate(checkout: Path) -> None:
    (checkout / "changelog" / "core-task" / "7.doc.rst").write_text("  \n")
    status, output = changelog(checkout, "check")
    assert status == 1, output
    assert "7.doc.rst is empty" in output


def test_release_renders_one_distribution_and_removes_only_its_fragments(
    checkout: Path,
) -> None:
    assert run(["git", "init", "-q", checkout]).returncode == 0
    (checkout / "changelog" / "3.misc.rst").write_text("Workspace change.\n")
    (checkout / "changelog" / "core-task" / "7.feature.rst").write_text("Task feature.\n")
    (checkout / "changelog" / "core-telemetry" / "8.bugfix.rst").write_text("Telemetry fix.\n")

    status, output = changelog(checkout, "release", "core-task")
    assert status == 0, output

    text = (checkout / "CHANGELOG.rst").read_text()
    assert f"{dist_name('core-task')} {declared_version('core-task')} (" in text
    assert "Task feature. (#7)" in text
    assert "Telemetry fix." not in text and "Workspace change." not in text
    assert not (checkout / "changelog" / "core-task" / "7.feature.rst").exists()
    assert (checkout / "changelog" / "core-telemetry" / "8.bugfix.rst").exists()
    assert (checkout / "changelog" / "3.misc.rst").exists()

    status, output = changelog(checkout, "release", "meta", "--version", "7.1.0")
    assert status == 0, output
    text = (checkout / "CHANGELOG.rst").read_text()
    assert f"{dist_name('meta')} 7.1.0 (" in text
    assert "Workspace change. (#3)" in text
    assert "Telemetry fix." not in text
    assert (checkout / "changelog" / "core-telemetry" / "8.bugfix.rst").exists()


def test_release_draft_writes_nothing(checkout: Path) -> None:
    (checkout / "changelog" / "core-build" / "9.feature.rst").write_text("Build feature.\n")
    status, output = changelog(checkout, "release", "core-build", "--draft", "--version", "1.2.0")
    assert status == 0, output
    assert f"{dist_name('core-build')} 1.2.0 (" in output
    assert "Build feature. (#9)" in output
    assert not (checkout / "CHANGELOG.rst").exists()
    assert (checkout / "changelog" / "core-build" / "9.feature.rst").exists()
