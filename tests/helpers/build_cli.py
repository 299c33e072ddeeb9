"""The ``dkist-processing-core`` CLI as a real subprocess, for the build tests (owner: build helper).

Every run gets an environment without the product's variables (see ``helpers.task_modules``), the
build fixture pipelines on ``PYTHONPATH``, and the test's own scratch, outbox and Airflow folders,
so tests never share state under ``pytest -n auto`` and nothing is written outside ``tmp_path``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BROKEN_PACKAGE",
    "EXAMPLE_PACKAGE",
    "FAILING_PACKAGE",
    "HOSTILE_PACKAGE",
    "FIXTURES",
    "Cli",
    "CliResult",
    "cli_command",
    "tree",
]

FIXTURES = Path(__file__).resolve().parent.parent / "build" / "fixtures"
EXAMPLE_PACKAGE = "dkist_processing_example.workflows"
BROKEN_PACKAGE = "build_fixture_broken.workflows"
FAILING_PACKAGE = "build_fixture_failing.workflows"
HOSTILE_PACKAGE = "build_fixture_hostile.workflows"


def cli_command() -> list[str]:
    """The installed console script next to this interpreter (what users run)."""
    script = Path(sys.executable).parent / "dkist-processing-core"
    if script.exists():
        return [str(script)]
    found = shutil.which("dkist-processing-core")
    assert found, (
        "the dkist-processing-core console script is not installed: pip install -e packages/core-build"
    )
    return [found]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@dataclass
class Cli:
    """Runs ``dkist-processing-core`` in a subprocess with a test's environment and working folder."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, timeout: float = 300, **extra_env: str) -> CliResult:
        env = dict(self.env)
        env.update(extra_env)
        completed = subprocess.run(
            [*cli_command(), *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(completed.returncode, completed.stdout, completed.stderr)


def tree(folder: Path) -> list[str]:
    """Every path below ``folder``, relative, sorted (for before/after comparisons)."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
