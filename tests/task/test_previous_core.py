"""The split core next to the previous single-distribution product (dkist-processing-core 7.x).

Both write ``site-packages/dkist_processing_core/``. Installing the split core over 7.5.0 (a real
wheel from the package index, installed with ``--no-deps``) must not leave a silently mixed package:
importing it fails with one message that names both products and what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import venv
from pathlib import Path

import pytest
from dkist_processing_core import _ownership
from helpers.release import build_once
from helpers.release import build_wheel
from helpers.release import run

REPO_ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = "dkist-processing-core==7.5.0"


def _wheels(folder: Path) -> None:
    for project in ("core-telemetry", "core-task"):
        build_wheel(REPO_ROOT / "packages" / project, folder)
    result = run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--python-version",
            "3.13",
            "--only-binary=:all:",
            "--dest",
            folder,
            PREVIOUS,
        ]
    )
    assert result.returncode == 0, (
        f"pip download {PREVIOUS} needs this machine's package index:\n{result.stdout}{result.stderr}"
    )


@pytest.fixture(scope="session")
def conflict_wheels(tmp_path_factory) -> Path:
    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    return build_once(shared / "previous-core", "wheels", _wheels)


def _venv_with(tmp_path: Path, *wheel_groups: list[Path]) -> Path:
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    for wheels in wheel_groups:
        # 7.5.0 says Requires-Python >= 3.13; only its files matter here, never its code.
        result = run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                python,
                "install",
                "--quiet",
                "--no-deps",
                "--ignore-requires-python",
                "--disable-pip-version-check",
                *wheels,
            ]
        )
        assert result.returncode == 0, result.stderr
    return python


def test_split_core_installed_over_the_previous_product_refuses_to_import(
    conflict_wheels, tmp_path
):
    previous = sorted(conflict_wheels.glob("dkist_processing_core-7.5.0-*.whl"))
    ours = sorted(conflict_wheels.glob("dkist_processing_core_t*.whl"))
    assert previous and len(ours) == 2
    python = _venv_with(tmp_path, previous, ours)
    result = subprocess.run(
        [str(python), "-c", "import dkist_processing_core"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(
        "ImportError: dkist-processing-core 7.5.0 (the previous single-distribution product)"
    )
    assert (
        "dkist-processing-core-task" in message and "pip uninstall dkist-processing-core" in message
    )
    assert "docs/migration.md" in message


def test_split_core_alone_imports(conflict_wheels, tmp_path):
    python = _venv_with(tmp_path, sorted(conflict_wheels.glob("dkist_processing_core_t*.whl")))
    result = subprocess.run(
        [
            str(python),
            "-c",
            "import dkist_processing_core; print(dkist_processing_core._DKIST_SPLIT_CORE)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "True"), result.stderr


def test_entry_points_refuse_a_package_init_that_is_not_ours(monkeypatch, tmp_path):
    # The reverse situation: the previous product installed over the split core replaced our
    # __init__.py. (With the real 7.5.0 and its dependencies this is checked in tests/clients.)
    (tmp_path / "dkist_processing_core-7.5.0.dist-info").mkdir()
    package = tmp_path / "dkist_processing_core"
    package.mkdir()
    foreign = types.ModuleType("dkist_processing_core")
    foreign.__path__ = [str(package)]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dkist_processing_core", foreign)
    with pytest.raises(
        ImportError,
        match=r"dkist-processing-core 7.5.0 \(the previous single-distribution product\)",
    ):
        _ownership.check_package_is_ours()
    monkeypatch.setattr(foreign, "_DKIST_SPLIT_CORE", True, raising=False)
    _ownership.check_package_is_ours()


@pytest.mark.parametrize(
    "name",
    [
        "dkist_processing_core-8.0.0.dist-info",
        "dkist_processing_core_task-1.0.0.dist-info",
        "dkist_processing_core-7.5.0.egg-info",
    ],
)
def test_only_a_previous_product_dist_info_counts(tmp_path, name):
    (tmp_path / name).mkdir()
    assert _ownership.previous_core_next_to([str(tmp_path / "dkist_processing_core")]) is None
