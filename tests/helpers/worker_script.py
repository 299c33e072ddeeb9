"""The worker program run the way an Airflow worker runs an exported task: ``bash -c WORKER_COMMAND``.

The interpreter that runs Airflow (``DKIST_WORKER_PYTHON``) is this test interpreter; a worker's
``python3`` is this test interpreter too (a wrapper script, so that it keeps its real path);
whether ``uv`` is on the worker's PATH is the test's choice: :func:`worker_path` is a folder with
``python3`` (and ``uv`` for ``installer="uv"``) followed by ``/usr/bin:/bin``. Tools a test needs are looked up here and fail the test, never skip it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dkist_processing_core.worker import WORKER_COMMAND
from dkist_processing_core.worker import read_events

__all__ = [
    "EXAMPLE_REQUIREMENT",
    "INSTALLERS",
    "cache_outcomes",
    "installers_used",
    "script_env",
    "uv_executable",
    "worker_path",
]

INSTALLERS = ("uv", "pip")
#: The example pipeline at a version of ``example_wheelhouse`` (:mod:`helpers.wheelhouse`).
EXAMPLE_REQUIREMENT = "dkist-processing-example[frozen]=={version}"


def uv_executable() -> Path:
    """uv of the test environment (requirements-test.txt), else the one on PATH; fails if none."""
    found = Path(sys.executable).with_name("uv")
    if not found.is_file():
        found = Path(shutil.which("uv") or "")
    assert found.is_file(), (
        f"uv not found: run `{sys.executable} -m pip install uv` (requirements-test.txt)"
    )
    return found


def worker_path(folder: Path, installer: str) -> str:
    """PATH of a worker with this test's python3 first, and uv on it only for ``installer="uv"``."""
    assert installer in INSTALLERS, installer
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    if installer == "uv":
        (folder / "uv").unlink(missing_ok=True)
        (folder / "uv").symlink_to(uv_executable())
    system = ["/usr/bin", "/bin"]
    if installer == "pip":
        found = [entry for entry in system if (Path(entry) / "uv").exists()]
        assert not found, (
            f"uv is installed in {found}: a worker without uv cannot be simulated here"
        )
    return os.pathsep.join([str(folder), *system])


def script_env(tmp_path: Path, installer: str = "pip", **variables: str) -> dict[str, str]:
    """The environment a BashOperator gives the script (node values, worker settings) plus ``variables``."""
    from helpers.task_modules import clean_environment

    env = clean_environment()
    env.update(
        PATH=worker_path(tmp_path / f"worker-bin-{installer}", installer),
        TMPDIR=str(tmp_path / "tmp"),
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        UV_NO_CONFIG="1",
        DKIST_WORKER_PYTHON=sys.executable,
        DKIST_PIP_TIMEOUT="15",
        DKIST_PIP_RETRIES="0",
        RECIPE_RUN_ID="7",
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a worker's default: the script decides
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(variables)
    # What Airflow gives every task: the DAG id, `{workflow}_{version}` (version from the requirement).
    version = env.get("DKIST_REQUIREMENT", "").rpartition("==")[2] or "1.0.0"
    env.setdefault("AIRFLOW_CTX_DAG_ID", f"w_{version}")
    return env


def run_script(env: dict[str, str], *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``bash -c WORKER_COMMAND`` with ``env``, as the BashOperator runs it."""
    return subprocess.run(
        ["bash", "-c", WORKER_COMMAND],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_script(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-c", WORKER_COMMAND],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def cache_outcomes(output: str) -> list[str]:
    """The cache outcome of every environment setup the output reports, in order."""
    return [str(fields["cache"]) for event, fields in read_events(output) if event == "setup"]


def installers_used(output: str) -> list[str]:
    """The installer that ran in every environment setup the output reports (``none`` for a hit)."""
    return [str(fields["installer"]) for event, fields in read_events(output) if event == "setup"]
