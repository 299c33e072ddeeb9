"""(f) Wall time of the whole test suite: ``pytest -n auto`` against ``pytest -n 0``.

Skipped in quick mode. A failing suite still yields its time, marked in the note.
"""

from __future__ import annotations

import os

from _timing import REPO_ROOT
from _timing import Context
from _timing import Row
from _timing import median
from _timing import run_measured

__all__ = ["KEY", "TITLE", "run"]

KEY = "f"
TITLE = "test suite wall time"


def _suite(ctx: Context, workers: str, runs: int) -> tuple[list[float], list[int]]:
    seconds, codes = [], []
    for _ in range(runs):
        result = run_measured(
            [ctx.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers],
            cwd=REPO_ROOT,
            env=dict(os.environ),
            timeout=3600,
        )
        seconds.append(result.seconds)
        codes.append(result.returncode)
    return seconds, codes


def run(ctx: Context) -> list[Row]:
    runs = int(ctx.shared.get("test_runs", 1))
    rows = []
    for workers in ("auto", "0"):
        seconds, codes = _suite(ctx, workers, runs)
        failed = [code for code in codes if code != 0]
        note = (
            f"{len(failed)} of {runs} run(s) failed (exit {failed[0]})"
            if failed
            else "suite passed"
        )
        rows.append(
            Row(
                KEY,
                f"pytest -n {workers}",
                round(median(seconds), 1),
                "s",
                note=note,
                runs=runs,
                samples=seconds,
            )
        )
    rows.append(
        Row(
            KEY,
            "speed-up -n auto",
            round(rows[1].value / rows[0].value, 2),
            "x",
            note=f"{os.cpu_count()} CPUs",
            runs=runs,
        )
    )
    return rows
