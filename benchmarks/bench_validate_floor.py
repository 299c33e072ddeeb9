"""(h) ``dkist-processing-core validate`` and ``export-dags`` of 50 workflows x 20 tasks against Airflow's floor.

The floor is what any validation that loads the DAG files in Airflow pays: a fresh interpreter
that imports Airflow's ``DagBag`` and fills it with the 50 exported files. Each command is a fresh
process too (the console script, as a pipeline's CI runs it), so the difference is what this product
adds: its own imports, building the 50 workflows, rendering 50 files and comparing the loaded DAGs
with the workflows. Target (issue 16): at most 0.3 s above the floor for both commands. Runs
alternate (floor, validate, export) so that a busy machine slows all three alike.
"""

from __future__ import annotations

import shutil

from _timing import Context
from _timing import Row
from _timing import check
from _timing import median
from _timing import minimal_env
from _timing import run_measured
from bench_workflows import PACKAGE
from bench_workflows import WORKFLOWS
from bench_workflows import ensure_pipeline

__all__ = ["KEY", "TITLE", "run"]

KEY = "h"
TITLE = "validate / export-dags vs Airflow's DagBag floor, 50x20"
TARGET_S = 0.3

_FLOOR = """
import sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors and len(bag.dags) == int(sys.argv[2]), (bag.import_errors, len(bag.dags))
"""


def run(ctx: Context) -> list[Row]:
    source = ensure_pipeline(ctx)
    cli = ctx.python.parent / "dkist-processing-core"
    env = minimal_env(
        PYTHONPATH=str(source),
        AIRFLOW_HOME=str(ctx.workdir / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    dags = ctx.workdir / "floor-dags"
    shutil.rmtree(dags, ignore_errors=True)
    check(
        run_measured([cli, "export-dags", PACKAGE, dags], env=env, cwd=ctx.workdir), "export-dags"
    )
    if len(list(dags.glob("*.py"))) != WORKFLOWS:
        raise RuntimeError(
            f"export-dags wrote {len(list(dags.glob('*.py')))} files, expected {WORKFLOWS}"
        )
    runs = max(3, ctx.runs)
    floor, validate, export = [], [], []
    for number in range(runs):
        floor.append(
            check(
                run_measured(
                    [ctx.python, "-c", _FLOOR, dags, str(WORKFLOWS)], env=env, cwd=ctx.workdir
                ),
                "DagBag floor",
            ).seconds
        )
        validate.append(
            check(
                run_measured([cli, "validate", PACKAGE], env=env, cwd=ctx.workdir), "validate"
            ).seconds
        )
        target = ctx.workdir / f"floor-export-{number}"
        shutil.rmtree(target, ignore_errors=True)
        export.append(
            check(
                run_measured([cli, "export-dags", PACKAGE, target], env=env, cwd=ctx.workdir),
                "export-dags",
            ).seconds
        )
    base = median(floor)
    rows = [
        Row(
            KEY,
            "floor: fresh python, import DagBag, load the 50 files",
            round(base, 3),
            "s",
            "",
            runs=runs,
            samples=floor,
        )
    ]
    for what, samples in (("validate", validate), ("export-dags", export)):
        value = median(samples)
        rows.append(
            Row(
                KEY,
                f"dkist-processing-core {what}",
                round(value, 3),
                "s",
                "",
                runs=runs,
                samples=samples,
            )
        )
        rows.append(
            Row(
                KEY,
                f"{what} above the floor",
                round(value - base, 3),
                "s",
                f"<= {TARGET_S}",
                runs=runs,
            )
        )
    return rows
