"""(b) ``from dkist_processing_core import TaskBase`` in a fresh process: time and peak RSS.

Runs in the lean worker venv of benchmark (a) when it ran (what a worker has), else in the
benchmark's own interpreter. The import is timed inside the child; RSS is the child's VmHWM
after the import (the interpreter itself included, as a worker pays it). Also lists which of the
heavy modules the import pulled in (there should be none).
"""

from __future__ import annotations

import json
from pathlib import Path

from _timing import BenchmarkError
from _timing import Context
from _timing import Row
from _timing import median
from _timing import minimal_env
from _timing import run_measured

__all__ = ["KEY", "TITLE", "measure", "run"]

KEY = "b"
TITLE = "TaskBase import"
HEAVY_MODULES = [
    "airflow",
    "nbformat",
    "nbconvert",
    "grpc",
    "pika",
    "opentelemetry.exporter",
    "docker",
]

SNIPPET = f"""
import json, sys, time
start = time.perf_counter()
from dkist_processing_core import TaskBase
seconds = time.perf_counter() - start
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
heavy = sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)
print(json.dumps({{"seconds": seconds, "rss_mb": hwm, "modules": len(sys.modules), "heavy": heavy}}))
"""


def measure(python: Path, runs: int) -> dict:
    samples = []
    for _ in range(runs):
        result = run_measured([python, "-c", SNIPPET], env=minimal_env())
        if result.returncode != 0:
            raise BenchmarkError(f"{python}: importing TaskBase failed:\n{result.stderr[-3000:]}")
        sample = json.loads(result.stdout.strip().splitlines()[-1])
        sample["process_s"] = result.seconds
        samples.append(sample)
    return {
        "seconds": median([s["seconds"] for s in samples]),
        "rss_mb": median([s["rss_mb"] for s in samples]),
        "process_s": median([s["process_s"] for s in samples]),
        "modules": median([s["modules"] for s in samples]),
        "heavy": samples[-1]["heavy"],
        "samples": [s["seconds"] for s in samples],
    }


def run(ctx: Context) -> list[Row]:
    python = ctx.shared.get("worker_python", ctx.python)
    where = "lean worker venv" if "worker_python" in ctx.shared else f"{python}"
    ours = measure(python, ctx.runs)
    other = measure(ctx.compare_python, ctx.runs) if ctx.compare_python else None
    pick = (lambda key: round(other[key], 3)) if other else (lambda key: None)
    return [
        Row(
            KEY,
            "import time",
            round(ours["seconds"], 3),
            "s",
            "<= 0.15",
            pick("seconds"),
            where,
            ctx.runs,
            ours["samples"],
        ),
        Row(
            KEY,
            "peak RSS",
            round(ours["rss_mb"], 1),
            "MB",
            "<= 40",
            pick("rss_mb"),
            where,
            ctx.runs,
        ),
        Row(
            KEY,
            "process spawn->exit",
            round(ours["process_s"], 3),
            "s",
            "",
            pick("process_s"),
            where,
            ctx.runs,
        ),
        Row(KEY, "modules loaded", int(ours["modules"]), "", "", pick("modules"), where, ctx.runs),
        Row(
            KEY,
            "heavy modules loaded",
            ", ".join(ours["heavy"]) or "none",
            note=f"compare: {', '.join(other['heavy']) or 'none'}" if other else "",
            runs=ctx.runs,
        ),
    ]
