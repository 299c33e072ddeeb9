"""(g) Task start of the example pipeline: pip, uv cold/warm and a venv-cache hit (see task_start.py).

The full benchmark, with a real pipeline, is ``python benchmarks/task_start.py --real``; this one
runs the example pipeline only (quick mode: one run per scenario).
"""

from __future__ import annotations

import statistics

from _timing import Context
from _timing import Row

__all__ = ["KEY", "TITLE", "run"]

KEY = "g"
TITLE = "task start (example)"


def run(ctx: Context) -> list[Row]:
    import task_start

    runs = 1 if ctx.quick else max(1, min(ctx.runs, 3))
    samples = task_start.Bench(
        task_start.example_pipeline(ctx.workdir / "task-start"), ctx.workdir / "task-start-run"
    ).run(runs)
    pip = statistics.median(samples["pip fresh"])
    direct = statistics.median(samples["direct"])
    rows = []
    for scenario in (
        "pip fresh (7.5.0's script)",
        "pip fresh",
        "uv fresh, cold",
        "uv fresh, warm",
        "cache hit",
    ):
        value = statistics.median(samples[scenario])
        rows.append(
            Row(
                KEY,
                scenario,
                round(value, 3),
                "s",
                compare=round(pip, 3),
                note=f"command start to run(); overhead over direct start {value - direct:+.3f} s",
                runs=len(samples[scenario]),
                samples=samples[scenario],
            )
        )
    overhead = statistics.median(samples["cache hit"]) - direct
    rows.append(
        Row(
            KEY,
            "cache hit overhead",
            round(overhead, 3),
            "s",
            "<= 0.3",
            note="cache hit minus direct start",
            runs=runs,
        )
    )
    return rows
