"""7.5.0 and the split core in one Python 3.13 environment, with every dependency present.

Both write ``site-packages/dkist_processing_core/``; pip and uv replace each other's files without a
word. Whichever was installed second, our code refuses to run with one message that names both
products and what to do (dkist_processing_core._ownership). The environments are throw-away copies
of the cached client pins (uv hard-links from its cache: a few seconds each).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clients.support import client_env
from helpers.client_venvs import OLD_CORE
from helpers.client_venvs import PINS
from helpers.client_venvs import python313
from helpers.client_venvs import uv_binary
from helpers.release import run

pytestmark = pytest.mark.clients

MESSAGE = (
    "dkist-processing-core 7.5.0 (the previous single-distribution product) and the split core"
)


def _venv(folder: Path, *installs: list[str]) -> Path:
    result = run([uv_binary(), "venv", "--quiet", "--python", python313(), folder])
    assert result.returncode == 0, result.stderr
    python = folder / "bin" / "python"
    for arguments in (["-r", str(PINS)], *installs):
        base = [
            uv_binary(),
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "--no-deps",
            *arguments,
        ]
        result = run([*base, "--offline"])
        if result.returncode != 0:
            result = run(base)
        assert result.returncode == 0, result.stderr
    return python


def _members(core_wheels: list[Path]) -> list[str]:
    """The four member wheels, without the meta distribution (named dkist-processing-core too)."""
    return [str(wheel) for wheel in core_wheels if wheel.name.startswith("dkist_processing_core_")]


def test_split_core_installed_over_7_5_0_refuses_to_import(
    tmp_path: Path, core_wheels: list[Path]
) -> None:
    python = _venv(tmp_path / "venv", [OLD_CORE], _members(core_wheels))
    result = run([python, "-c", "import dkist_processing_core"], env=client_env())
    assert result.returncode == 1
    assert MESSAGE in result.stderr.strip().splitlines()[-1], result.stderr[-3000:]


def test_meta_distribution_8_replaces_7_5_0_cleanly(
    tmp_path: Path, core_wheels: list[Path]
) -> None:
    # Same distribution name: the installer removes 7.5.0 before it installs 8.x and its parts.
    python = _venv(tmp_path / "venv", [OLD_CORE], [*map(str, core_wheels)])
    result = run(
        [
            python,
            "-c",
            "import dkist_processing_core, dkist_processing_common.config; print(dkist_processing_core._DKIST_SPLIT_CORE)",
        ],
        env=client_env(),
    )
    assert (result.returncode, result.stdout.strip().splitlines()[-1:]) == (0, ["True"]), (
        result.stderr[-3000:]
    )


def test_7_5_0_installed_over_the_split_core_is_refused_by_our_entry_points(
    tmp_path: Path, core_wheels: list[Path]
) -> None:
    # 7.5.0's own __init__ now runs (and imports fine, its dependencies are all here); our
    # run_task and CLI, which 7.5.0 does not have, notice that the package is not ours.
    python = _venv(tmp_path / "venv", _members(core_wheels), ["--reinstall", OLD_CORE])
    env = client_env(RECIPE_RUN_ID="1")
    worker = run(
        [
            python,
            "-m",
            "dkist_processing_core.run_task",
            "--module=dkist_processing_test.tasks",
            "--task=NoOpTask",
            "--workflow-name=W",
            "--workflow-version=1",
        ],
        env=env,
        cwd=tmp_path,
    )
    assert worker.returncode == 2, worker.stderr[-3000:]
    assert MESSAGE in worker.stderr
    cli = run([python.parent / "dkist-processing-core", "config"], env=env, cwd=tmp_path)
    assert cli.returncode == 2, cli.stderr[-3000:]
    assert MESSAGE in cli.stderr
