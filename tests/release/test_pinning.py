"""Independent versions: core-task and core-telemetry mix within the declared range, and only there.

Version-bumped copies of both members are built into wheels (telemetry 1.0.0 / 1.1.0 / 2.0.0,
task 1.0.0 / 1.1.0, every task requiring telemetry as its pyproject declares). Each case installs
into a fresh venv, offline (``--no-index``) from those wheels plus a wheelhouse of the third-party
dependencies, then runs a task the way a worker does: ``python -m dkist_processing_core.run_task``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers.release import PROJECT_DIRS
from helpers.release import build_once
from helpers.release import clean_pip_env
from helpers.release import dist_name
from helpers.release import run
from helpers.release import wheel_metadata
from helpers.wheelhouse import build_wheels
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

VERSIONS = {"core-telemetry": ["1.0.0", "1.1.0", "2.0.0"], "core-task": ["1.0.0", "1.1.0"]}
TASK = dist_name("core-task")
TELEMETRY = dist_name("core-telemetry")

PIPELINE_MODULE = """\
import os
from pathlib import Path

from dkist_processing_core import TaskBase


class WriteMarker(TaskBase):
    def run(self):
        Path(os.environ["PINNING_MARKER"]).write_text(
            f"{self.recipe_run_id} {self.workflow_name} {self.workflow_version}"
        )
"""

# the worker's "must not be here" list (SPEC: lean installs)
HEAVY_DISTRIBUTIONS = [
    "apache-airflow",
    "apache-airflow-core",
    "nbformat",
    "nbconvert",
    "nbclient",
    "jupyter-core",
]


@pytest.fixture(scope="session")
def pinned_wheels(shared_tmp: Path) -> Path:
    """Wheels of core-telemetry and core-task at the versions in ``VERSIONS``."""

    def produce(folder: Path) -> None:
        build_wheels(
            [
                (PROJECT_DIRS[project], version)
                for project, versions in VERSIONS.items()
                for version in versions
            ],
            folder,
        )

    return build_once(shared_tmp, "pinned-wheels", produce)


def fresh_venv(path: Path) -> Path:
    """A venv without pip (pip runs from outside with ``--python``): created in milliseconds."""
    result = run([sys.executable, "-m", "venv", "--without-pip", path])
    assert result.returncode == 0, result.stderr
    return path / "bin" / "python"


def offline_install(python: Path, *requirements: str, find_links: list[Path]):
    links = [arg for folder in find_links for arg in ("--find-links", str(folder))]
    return run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-index",
            *links,
            *requirements,
        ],
        env=clean_pip_env(),
    )


def installed_versions(python: Path) -> dict[str, str]:
    script = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    result = run([python, "-c", script])
    assert result.returncode == 0, result.stderr
    import json

    return {canonicalize_name(name): version for name, version in json.loads(result.stdout).items()}


def run_task_in(python: Path, workdir: Path) -> tuple[int, str, str]:
    """Run ``WriteMarker`` through the worker entry point; return (exit status, marker text, output)."""
    (workdir / "pinning_pipeline.py").write_text(PIPELINE_MODULE)
    marker = workdir / "marker.txt"
    # a minimal environment: no OTLP endpoint, no mesh config -> telemetry is a no-op
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "PYTHONPATH": str(workdir),
        "RECIPE_RUN_ID": "42",
        "PINNING_MARKER": str(marker),
    }
    result = run(
        [
            python,
            "-m",
            "dkist_processing_core.run_task",
            "--module",
            "pinning_pipeline",
            "--task",
            "WriteMarker",
            "--workflow-name",
            "Pinning_Check",
            "--workflow-version",
            "9.9.9",
        ],
        cwd=workdir,
        env=env,
    )
    text = marker.read_text() if marker.exists() else ""
    return result.returncode, text, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("task_version", "telemetry_version"),
    [("1.0.0", "1.1.0"), ("1.1.0", "1.0.0")],
    ids=["older-task-newer-telemetry", "newer-task-older-telemetry"],
)
def test_mixed_versions_within_the_range_install_and_run_a_task(
    tmp_path: Path,
    pinned_wheels: Path,
    dependency_wheelhouse: Path,
    task_version: str,
    telemetry_version: str,
) -> None:
    python = fresh_venv(tmp_path / "venv")
    result = offline_install(
        python,
        f"{TASK}=={task_version}",
        f"{TELEMETRY}=={telemetry_version}",
        find_links=[pinned_wheels, dependency_wheelhouse],
    )
    assert result.returncode == 0, f"offline install failed:\n{result.stdout}{result.stderr}"
    versions = installed_versions(python)
    assert versions[canonicalize_name(TASK)] == task_version
    assert versions[canonicalize_name(TELEMETRY)] == telemetry_version

    status, marker, output = run_task_in(python, tmp_path)
    assert status == 0, f"run_task exited {status}:\n{output}"
    assert marker == "42 Pinning_Check 9.9.9"


def test_worker_venv_holds_no_airflow_or_notebook_stack(
    tmp_path: Path, pinned_wheels: Path, dependency_wheelhouse: Path
) -> None:
    python = fresh_venv(tmp_path / "venv")
    result = offline_install(python, TASK, find_links=[pinned_wheels, dependency_wheelhouse])
    assert result.returncode == 0, f"offline install failed:\n{result.stdout}{result.stderr}"
    versions = installed_versions(python)
    assert {canonicalize_name(d) for d in HEAVY_DISTRIBUTIONS} & set(versions) == set()
    # the resolver picks the newest telemetry the task allows, not 2.0.0
    assert versions[canonicalize_name(TELEMETRY)] == "1.1.0"
    assert versions[canonicalize_name(TASK)] == "1.1.0"


def test_incompatible_pair_is_refused_by_the_resolver_naming_the_range(
    tmp_path: Path, pinned_wheels: Path, dependency_wheelhouse: Path
) -> None:
    task_wheel = pinned_wheels / f"{TASK.replace('-', '_')}-1.0.0-py3-none-any.whl"
    (declared,) = [
        Requirement(text)
        for text in wheel_metadata(task_wheel).get_all("Requires-Dist")
        if canonicalize_name(Requirement(text).name) == canonicalize_name(TELEMETRY)
    ]
    assert "2.0.0" not in declared.specifier, (
        f"the test needs a range that excludes 2.0.0, got {declared}"
    )

    python = fresh_venv(tmp_path / "venv")
    result = offline_install(
        python,
        f"{TASK}==1.0.0",
        f"{TELEMETRY}==2.0.0",
        find_links=[pinned_wheels, dependency_wheelhouse],
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"pip installed an incompatible pair:\n{output}"
    assert "ResolutionImpossible" in output or "conflicting dependencies" in output, output
    assert f"{TASK} 1.0.0 depends on {TELEMETRY}" in output, output
    for spec in declared.specifier:
        assert str(spec) in output, f"pip's refusal does not name {spec}:\n{output}"
    assert installed_versions(python).get(canonicalize_name(TASK)) is None
