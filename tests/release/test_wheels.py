"""The five built distributions: each holds only its own files, versions and pins as declared.

The artifacts come from the documented command ``python scripts/build_dists.py`` (fixture
``built_dists``), so these tests also prove that command builds everything.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers.release import MEMBERS
from helpers.release import PACKAGE
from helpers.release import PROJECT_DIRS
from helpers.release import REPO_ROOT
from helpers.release import declared_version
from helpers.release import dist_name
from helpers.release import pyproject
from helpers.release import run
from helpers.release import version_file
from helpers.release import wheel_metadata
from lock import PYTHON as OLDEST_PYTHON
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECTS = [*MEMBERS, "meta"]


def _artifact_stem(project: str) -> str:
    return f"{dist_name(project).replace('-', '_')}-{declared_version(project)}"


def wheel_of(built_dists: Path, project: str) -> Path:
    path = built_dists / f"{_artifact_stem(project)}-py3-none-any.whl"
    assert path.is_file(), (
        f"no wheel {path.name} in {sorted(p.name for p in built_dists.iterdir())}"
    )
    return path


def sdist_of(built_dists: Path, project: str) -> Path:
    path = built_dists / f"{_artifact_stem(project)}.tar.gz"
    assert path.is_file(), (
        f"no sdist {path.name} in {sorted(p.name for p in built_dists.iterdir())}"
    )
    return path


def payload(wheel: Path) -> set[str]:
    """Files a wheel installs into site-packages, without its .dist-info folder."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            name for name in archive.namelist() if ".dist-info/" not in name.split("/", 1)[0] + "/"
        }


def source_files(project: str) -> set[str]:
    """The member's ``src/`` tree as wheel paths, without caches."""
    src = PROJECT_DIRS[project] / "src"
    return {
        path.relative_to(src).as_posix()
        for path in src.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def requirement_key(requirement: Requirement) -> tuple:
    return (
        canonicalize_name(requirement.name),
        tuple(sorted(requirement.extras)),
        str(requirement.specifier),
        str(requirement.marker) if requirement.marker else "",
    )


def declared_requirements(project: str) -> set[tuple]:
    """Requires-Dist as the project's pyproject declares it (extras become markers)."""
    table = pyproject(project)["project"]
    keys = {requirement_key(Requirement(text)) for text in table.get("dependencies", [])}
    for extra, texts in table.get("optional-dependencies", {}).items():
        for text in texts:
            requirement = Requirement(f'{text}; extra == "{extra}"')
            keys.add(requirement_key(requirement))
    return keys


def internal_requirements(project: str) -> list[Requirement]:
    """Requirements on the workspace's own distributions, extras included."""
    table = pyproject(project)["project"]
    texts = list(table.get("dependencies", []))
    for extra_texts in table.get("optional-dependencies", {}).values():
        texts += extra_texts
    own = {canonicalize_name(dist_name(p)) for p in PROJECTS}
    return [r for r in map(Requirement, texts) if canonicalize_name(r.name) in own]


def test_one_wheel_and_one_sdist_per_project(built_dists: Path) -> None:
    expected = {wheel_of(built_dists, p).name for p in PROJECTS} | {
        sdist_of(built_dists, p).name for p in PROJECTS
    }
    assert {path.name for path in built_dists.iterdir() if path.is_file()} == expected


@pytest.mark.parametrize("project", MEMBERS)
def test_member_wheel_holds_exactly_its_own_source_tree(built_dists: Path, project: str) -> None:
    assert payload(wheel_of(built_dists, project)) == source_files(project)


def test_no_file_is_shipped_by_two_wheels(built_dists: Path) -> None:
    owners: dict[str, list[str]] = {}
    for project in PROJECTS:
        for name in payload(wheel_of(built_dists, project)):
            owners.setdefault(name, []).append(project)
    shared = {name: projects for name, projects in owners.items() if len(projects) > 1}
    assert shared == {}, f"files installed by more than one wheel: {shared}"


def test_only_core_task_ships_the_package_init(built_dists: Path) -> None:
    init = f"{PACKAGE}/__init__.py"
    shipping = [p for p in PROJECTS if init in payload(wheel_of(built_dists, p))]
    assert shipping == ["core-task"]


def test_every_module_lives_in_the_shared_package(built_dists: Path) -> None:
    for project in MEMBERS:
        outside = {
            n for n in payload(wheel_of(built_dists, project)) if not n.startswith(f"{PACKAGE}/")
        }
        assert outside == set(), f"{project} installs files outside {PACKAGE}/: {outside}"


@pytest.mark.parametrize("project", MEMBERS)
def test_wheel_ships_its_version_file_with_the_wheel_version(
    built_dists: Path, project: str
) -> None:
    wheel = wheel_of(built_dists, project)
    relative = version_file(project).relative_to(PROJECT_DIRS[project] / "src").as_posix()
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(relative).decode()
    version = wheel_metadata(wheel)["Version"]
    assert f'__version__ = "{version}"' in text
    assert version == declared_version(project)


def test_each_member_has_its_own_version_file() -> None:
    paths = [version_file(p).name for p in MEMBERS]
    assert len(set(paths)) == len(paths), f"members share a version file name: {paths}"


@pytest.mark.parametrize("project", PROJECTS)
def test_requires_dist_is_what_the_pyproject_declares(built_dists: Path, project: str) -> None:
    metadata = wheel_metadata(wheel_of(built_dists, project))
    built = {requirement_key(Requirement(text)) for text in metadata.get_all("Requires-Dist") or []}
    assert built == declared_requirements(project)


@pytest.mark.parametrize("project", PROJECTS)
def test_internal_pins_are_compatible_ranges_that_hold_the_current_versions(project: str) -> None:
    """``>=X.Y,<X+1`` on each sibling, and the sibling's version in this checkout satisfies it."""
    versions = {canonicalize_name(dist_name(p)): Version(declared_version(p)) for p in PROJECTS}
    for requirement in internal_requirements(project):
        current = versions[canonicalize_name(requirement.name)]
        operators = {spec.operator: Version(spec.version) for spec in requirement.specifier}
        assert set(operators) == {">=", "<"}, (
            f"{project}: {requirement} is not a `>=X.Y,<X+1` range"
        )
        assert operators["<"] == Version(f"{operators['>='].major + 1}"), (
            f"{project}: {requirement} should stop at the next major version"
        )
        assert current in requirement.specifier, (
            f"{project}: {requirement} excludes {requirement.name} {current} of this checkout; "
            "widen the range when bumping the sibling's version"
        )


def test_meta_wheel_ships_no_code_and_pins_all_four_members(built_dists: Path) -> None:
    wheel = wheel_of(built_dists, "meta")
    assert payload(wheel) == set()
    required = {
        canonicalize_name(Requirement(t).name)
        for t in wheel_metadata(wheel).get_all("Requires-Dist")
    }
    assert required == {canonicalize_name(dist_name(p)) for p in MEMBERS}


@pytest.mark.parametrize("project", MEMBERS)
def test_member_sdist_holds_only_its_own_project(built_dists: Path, project: str) -> None:
    sdist = sdist_of(built_dists, project)
    root = sdist.name.removesuffix(".tar.gz") + "/"
    with tarfile.open(sdist) as archive:
        names = {m.name.removeprefix(root) for m in archive.getmembers() if m.isfile()}
    sources = {name.removeprefix("src/") for name in names if name.startswith("src/")}
    assert sources == source_files(project)
    assert names - {f"src/{s}" for s in sources} <= {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        ".gitignore",
    }


def test_meta_sdist_holds_no_member_files(built_dists: Path) -> None:
    sdist = sdist_of(built_dists, "meta")
    root = sdist.name.removesuffix(".tar.gz") + "/"
    with tarfile.open(sdist) as archive:
        names = {m.name.removeprefix(root) for m in archive.getmembers() if m.isfile()}
    assert names <= {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        ".gitignore",
        "meta_version.py",
    }
    assert {"pyproject.toml", "meta_version.py", "PKG-INFO"} <= names


def _requires(built_dists: Path, project: str) -> set[str]:
    metadata = wheel_metadata(wheel_of(built_dists, project))
    return {canonicalize_name(Requirement(t).name) for t in metadata.get_all("Requires-Dist") or []}


def test_py_typed_ships_once_in_a_wheel_that_every_install_contains(built_dists: Path) -> None:
    """PEP 561: one marker in the shared folder types the whole package; it must always be there.

    Two wheels cannot both ship ``dkist_processing_core/py.typed`` (one file, two owners), so the
    marker belongs to the distribution that every other one requires, directly or not.
    """
    marker = f"{PACKAGE}/py.typed"
    owners = [p for p in PROJECTS if marker in payload(wheel_of(built_dists, p))]
    assert len(owners) == 1, f"py.typed shipped by {owners}"
    owner = canonicalize_name(dist_name(owners[0]))
    by_name = {canonicalize_name(dist_name(p)): p for p in PROJECTS}

    def closure(project: str) -> set[str]:
        seen: set[str] = set()
        todo = [project]
        while todo:
            for name in _requires(built_dists, todo.pop()) & set(by_name):
                if name not in seen:
                    seen.add(name)
                    todo.append(by_name[name])
        return seen | {canonicalize_name(dist_name(project))}

    without = [p for p in PROJECTS if owner not in closure(p)]
    assert without == [], (
        f"{owners[0]} ships py.typed, but installing {without} alone does not install {owners[0]}: "
        "move the marker to the distribution every other one depends on (core-telemetry)"
    )


# --------------------------------------------------------------------------- release hygiene
LICENSE = (REPO_ROOT / "LICENSE").read_text()


@pytest.mark.parametrize("project", PROJECTS)
def test_wheel_and_sdist_ship_the_bsd_license(built_dists: Path, project: str) -> None:
    assert "BSD 3-Clause License" in LICENSE and "NSO / DKIST Data Center" in LICENSE
    wheel = wheel_of(built_dists, project)
    with zipfile.ZipFile(wheel) as archive:
        licenses = [n for n in archive.namelist() if ".dist-info/licenses/" in n]
        assert [n.rsplit("/", 1)[1] for n in licenses] == ["LICENSE"], licenses
        assert archive.read(licenses[0]).decode() == LICENSE
    metadata = wheel_metadata(wheel)
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    sdist = sdist_of(built_dists, project)
    root = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"{root}/LICENSE")
        assert member is not None and member.read().decode() == LICENSE


@pytest.mark.parametrize("project", PROJECTS)
def test_metadata_names_the_project_urls_and_every_supported_python(
    built_dists: Path, project: str
) -> None:
    metadata = wheel_metadata(wheel_of(built_dists, project))
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Repository", "Changelog"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = metadata.get_all("Classifier") or []
    versions = [
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    # the versions CI tests (the hatch-test matrix) and the lock resolves for
    matrix = pyproject("meta")["tool"]["hatch"]["envs"]["hatch-test"]["matrix"][0]["python"]
    assert sorted(versions) == sorted(matrix) and min(versions) == OLDEST_PYTHON
    assert metadata["Requires-Python"] == f">={OLDEST_PYTHON}"


def test_twine_check_strict_passes_every_artifact(built_dists: Path) -> None:
    artifacts = sorted(path for path in built_dists.iterdir() if path.is_file())
    result = run([sys.executable, "-m", "twine", "check", "--strict", *artifacts])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == len(artifacts) == 2 * len(PROJECTS)


def test_each_member_folder_carries_the_root_license() -> None:
    for project in MEMBERS:
        assert (PROJECT_DIRS[project] / "LICENSE").read_text() == LICENSE, (
            f"packages/{project}/LICENSE differs from LICENSE: copy it (each member builds alone)"
        )
