"""Task modules on disk and subprocesses that import them, for tests of the task runtime.

A task class must be importable by its module path (workers import it by name), so tests write
small modules into their ``tmp_path`` and put that folder on ``PYTHONPATH`` of a subprocess (or on
``sys.path`` with ``monkeypatch.syspath_prepend`` in-process). Module names get a unique suffix so
that in-process imports of different tests never collide.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

__all__ = [
    "clean_environment",
    "run_python",
    "run_task_process",
    "unique_module_name",
    "write_module",
]

# Variables that steer dkist-processing-core; a test process starts without any of them.
_PREFIXES = (
    "OTEL_",
    "DKIST_",
    "NOMAD_",
    "ISB_",
    "LOGURU_",
    "MESH_",
    "RETRY_",
    "PIP_",
    "SYSTEM_METRIC_",
)
_NAMES = {
    "BUILD_VERSION",
    "MAX_FILE_DESCRIPTORS",
    "IS_NOTEBOOK_EXECUTION_ENVIRONMENT",
    "RECIPE_RUN_ID",
}


def unique_module_name(prefix: str = "tasks") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def write_module(directory: Path, name: str, source: str) -> Path:
    """Write ``source`` (dedented) as ``directory/name.py`` and return the path."""
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def clean_environment(*python_paths: Path, **variables: str) -> dict[str, str]:
    """This process's environment without dkist-processing-core's variables, plus ``variables``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not (key.upper().startswith(_PREFIXES) or key.upper() in _NAMES)
    }
    if python_paths:
        env["PYTHONPATH"] = os.pathsep.join(str(path) for path in python_paths)
    env.update(variables)
    return env


def run_python(
    code: str,
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    timeout: float = 120,
    python: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with ``python -c`` and return the finished process."""
    return subprocess.run(
        [python or sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_task_process(
    module: str,
    task: str,
    env: dict[str, str],
    *,
    workflow_name: str = "Test_Workflow",
    workflow_version: str = "1.0.0",
    extra_args: tuple[str, ...] = (),
    cwd: Path | None = None,
    timeout: float = 120,
    python: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m dkist_processing_core.run_task`` the way a worker runs it."""
    command = [
        python or sys.executable, "-m", "dkist_processing_core.run_task",
        "--module", module, "--task", task,
        "--workflow-name", workflow_name, "--workflow-version", workflow_version,
        *extra_args,
    ]  # fmt: skip
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
