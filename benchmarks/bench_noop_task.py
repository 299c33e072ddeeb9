"""(c) A no-op task as a worker runs it: one process, spawn to exit, and its peak RSS.

``python -m dkist_processing_core.run_task --module bench_noop --task NoOp ...`` with
``RECIPE_RUN_ID`` set and no telemetry endpoint, in the lean worker venv of benchmark (a) when it
ran. A ``--compare-venv`` without ``run_task`` (the single-distribution product) runs the same
task with ``python -c "with NoOp(...) as task: task()"``, which is what its DAGs did.

A third figure runs the same task with both OTLP endpoints pointing at a port where nothing
listens: what an unreachable collector adds to every task at exit (about 20 s before issue 14;
now the flush bound of 5 s at most, see ``dkist_processing_core.telemetry``).
"""

from __future__ import annotations

import socket
from pathlib import Path

from _timing import BenchmarkError
from _timing import Context
from _timing import Row
from _timing import median
from _timing import minimal_env
from _timing import run_measured

__all__ = ["KEY", "TITLE", "measure", "run"]

KEY = "c"
TITLE = "no-op task process"

TASK_MODULE = """\
from dkist_processing_core import TaskBase


class NoOp(TaskBase):
    def run(self):
        pass
"""

IN_PROCESS = (
    "from bench_noop import NoOp\n"
    "with NoOp(recipe_run_id=1, workflow_name='Bench_NoOp', workflow_version='0.0.0') as task:\n"
    "    task()\n"
)


def _has_run_task(python: Path) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('dkist_processing_core.run_task') is None)"
    return run_measured([python, "-c", probe], env=minimal_env()).returncode == 0


def _port_where_nothing_listens() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(python: Path, folder: Path, runs: int, **extra_env: str) -> dict:
    if _has_run_task(python):
        command = [
            python,
            "-m",
            "dkist_processing_core.run_task",
            "--module=bench_noop",
            "--task=NoOp",
            "--workflow-name=Bench_NoOp",
            "--workflow-version=0.0.0",
        ]
        how = "python -m dkist_processing_core.run_task"
    else:
        command = [python, "-c", IN_PROCESS]
        how = "python -c 'with NoOp(...) as task: task()'"
    env = minimal_env(RECIPE_RUN_ID="1", PYTHONPATH=str(folder), **extra_env)
    runs_done = []
    for _ in range(runs):
        result = run_measured(command, env=env, cwd=folder)
        if result.returncode != 0:
            raise BenchmarkError(
                f"{python}: the no-op task exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        runs_done.append(result)
    return {
        "seconds": median([r.seconds for r in runs_done]),
        "rss_mb": median([r.peak_rss_mb for r in runs_done]),
        "samples": [r.seconds for r in runs_done],
        "how": how,
    }


def run(ctx: Context) -> list[Row]:
    folder = ctx.workdir / "noop-task"
    folder.mkdir(exist_ok=True)
    (folder / "bench_noop.py").write_text(TASK_MODULE)
    python = ctx.shared.get("worker_python", ctx.python)
    where = "lean worker venv" if "worker_python" in ctx.shared else f"{python}"
    ours = measure(python, folder, ctx.runs)
    endpoint = f"127.0.0.1:{_port_where_nothing_listens()}"
    unreachable = measure(
        python,
        folder,
        ctx.runs,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=endpoint,
    )
    other = measure(ctx.compare_python, folder, ctx.runs) if ctx.compare_python else None
    note = f"{where}; {ours['how']}" + (f"; compare: {other['how']}" if other else "")
    return [
        Row(
            KEY,
            "spawn->exit",
            round(ours["seconds"], 3),
            "s",
            "<= 0.5",
            round(other["seconds"], 3) if other else None,
            note,
            ctx.runs,
            ours["samples"],
        ),
        Row(
            KEY,
            "spawn->exit, OTLP collector unreachable",
            round(unreachable["seconds"], 3),
            "s",
            "<= 8",
            None,
            f"{where}; both endpoints at a port where nothing listens (about 20 s before issue 14)",
            ctx.runs,
            unreachable["samples"],
        ),
        Row(
            KEY,
            "peak RSS",
            round(ours["rss_mb"], 1),
            "MB",
            "",
            round(other["rss_mb"], 1) if other else None,
            note,
            ctx.runs,
        ),
    ]
