"""Shared helpers of the benchmarks: child processes measured for wall time and peak RSS, medians.

Peak RSS of a child comes from ``os.wait4`` (the kernel's ``ru_maxrss`` for exactly that process,
in KiB on Linux), so nothing has to be added to the measured program.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

__all__ = [
    "BenchmarkError",
    "Context",
    "ProcessRun",
    "Row",
    "median",
    "minimal_env",
    "repeat",
    "run_measured",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchmarkError(RuntimeError):
    """A benchmark cannot run here (missing code, failed child); the message says what to do."""


@dataclass
class ProcessRun:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Row:
    """One line of the results table."""

    bench: str
    metric: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""  # e.g. "<= 0.15"
    compare: float | int | None = None  # the same figure measured with --compare-venv
    note: str = ""
    runs: int = 0
    samples: list[float] = field(default_factory=list)

    def meets_target(self) -> bool | None:
        if not self.target or not isinstance(self.value, int | float):
            return None
        operator, _, bound = self.target.partition(" ")
        limit = float(bound)
        return self.value <= limit if operator == "<=" else self.value >= limit

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["meets_target"] = self.meets_target()
        data["ratio"] = ratio(self.value, self.compare)
        return data


def ratio(value: object, compare: object) -> float | None:
    if isinstance(value, int | float) and isinstance(compare, int | float) and value:
        return compare / value
    return None


@dataclass
class Context:
    """What every benchmark gets: mode, repeat count, interpreters and a scratch folder."""

    quick: bool
    runs: int
    workdir: Path
    python: Path = field(default_factory=lambda: Path(sys.executable))
    compare_python: Path | None = None
    # filled in by earlier benchmarks for later ones
    shared: dict[str, Any] = field(default_factory=dict)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def repeat(function: Callable[[], float], runs: int) -> list[float]:
    return [function() for _ in range(runs)]


def minimal_env(**extra: str) -> dict[str, str]:
    """A clean environment: no OTLP endpoint, mesh config or pip settings leak into a measurement."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def run_measured(
    command: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> ProcessRun:
    """Run ``command``; return its wall time (spawn to exit), peak RSS and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            [str(part) for part in command], stdout=out, stderr=err, env=env, cwd=cwd
        )
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ProcessRun(
            seconds=seconds,
            peak_rss_mb=usage.ru_maxrss / 1024,
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def check(run: ProcessRun, what: str) -> ProcessRun:
    if run.returncode != 0:
        raise BenchmarkError(
            f"{what} exited {run.returncode}:\n{run.stdout[-2000:]}{run.stderr[-4000:]}"
        )
    return run
