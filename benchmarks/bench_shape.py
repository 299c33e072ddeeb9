"""(i) What an exported task costs Airflow (20-task chain), DagBag parse against 7.5.0, add_node.

Shape of a 20-task chain exported by this checkout, measured in this interpreter with its Airflow:
the DAG file's size, Airflow's serialized DAG per task (``DagSerialization.to_dict``, what the
scheduler stores and the UI reads) and what one task instance renders (``bash_command`` + ``env``
with ``dag_run.conf = {"recipe_run_id": 42}``: what the UI's rendered template shows and the
metadata database keeps for every task instance).

DagBag parse of the 50 x 20 synthetic DAG files of (d), every file in its own forked child as
Airflow's DAG processor does, in the Python 3.13 venvs of tests/clients: 7.5.0 exports and parses
its files, ours exports and parses ours, with the same Airflow, runs alternated (A B A B).
Skipped with a line saying why when Python 3.13 or the package index is missing.

``Workflow.add_node`` for chains of 500 and 5,000 nodes (best of 5 with the garbage collector off,
as ``timeit`` does; seconds, and their ratio: linear is 10).
"""

from __future__ import annotations

import json
from pathlib import Path

from _client_venvs import client_venvs
from _timing import BenchmarkError
from _timing import Context
from _timing import Row
from _timing import median
from _timing import minimal_env
from _timing import run_measured
from bench_dagbag import _measure as forked_parse
from bench_workflows import measure as export_synthetic

__all__ = ["KEY", "TITLE", "run"]

KEY = "i"
TITLE = "DAG shape, parse vs 7.5.0, add_node"
CHAIN = 20

_SHAPE = """
import json, sys, types
from pathlib import Path
from types import SimpleNamespace

import jinja2
from dkist_processing_core import TaskBase, Workflow

# Names as long as a real pipeline's (dkist-processing-vbi: dkist_processing_vbi.tasks.quality_metrics
# .VbiQualityL0Metrics in l0_to_l1_vbi_summit_calibrated, version 2.3.0).
for name in ("dkist_processing_bench", "dkist_processing_bench.tasks"):
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__path__ = []
tasks = types.ModuleType("dkist_processing_bench.tasks.quality_metrics")
sys.modules[tasks.__name__] = tasks
chain = [
    type(f"BenchQualityL0Step{n:02d}", (TaskBase,), {"run": lambda self: None, "__module__": tasks.__name__})
    for n in range(int(sys.argv[2]))
]
for task in chain:
    setattr(tasks, task.__name__, task)
workflow = Workflow(input_data="l0", output_data="l1", category="bench", detail="summit_calibrated",
                    workflow_package="dkist_processing_bench", workflow_version="2.3.0")
for upstream, task in zip([None, *chain], chain):
    workflow.add_node(task=task, upstreams=upstream)
path = Path(workflow.export_dag(sys.argv[1]))

from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

(dag,) = DagBag(dag_folder=str(path)).dags.values()
serialized = len(json.dumps(DagSerialization.to_dict(dag)))
context = {"dag_run": SimpleNamespace(conf={"recipe_run_id": 42})}
jinja = jinja2.Environment()
rendered = []
for operator in dag.tasks:
    command = jinja.from_string(operator.bash_command).render(**context)
    env = {key: jinja.from_string(value).render(**context) for key, value in operator.env.items()}
    rendered.append(len(command.encode()) + sum(len(k.encode()) + len(v.encode()) for k, v in env.items()))
print(json.dumps({"file": path.stat().st_size, "serialized": serialized, "tasks": len(dag.tasks),
                  "rendered_max": max(rendered)}))
"""

_ADD_NODE = """
import gc, json, sys, time, types
from dkist_processing_core import TaskBase, Workflow

package = types.ModuleType("chain_pipeline")
package.__path__ = []
sys.modules["chain_pipeline"] = package
result = {}
for size in map(int, sys.argv[1:]):
    chain = [type(f"T{n}", (TaskBase,), {"run": lambda self: None, "__module__": "chain_pipeline"})
             for n in range(size)]
    for task in chain:  # importable by module path, as add_node checks
        setattr(package, task.__name__, task)
    best = float("inf")
    for attempt in range(5):  # best of 5 with the collector off, as timeit does
        workflow = Workflow(process_category="Chain", process_name=f"{size}_{attempt}",
                            workflow_package="chain_pipeline", workflow_version="1.0.0")
        gc.disable()
        start = time.perf_counter()
        for upstream, task in zip([None, *chain], chain):
            workflow.add_node(task, upstreams=upstream)
        best = min(best, time.perf_counter() - start)
        gc.enable()
    result[size] = best
print(json.dumps(result))
"""


def _python_json(ctx: Context, python: Path, code: str, *args: str) -> dict:
    env = minimal_env(
        AIRFLOW_HOME=str(ctx.workdir / "airflow-home"), AIRFLOW__CORE__LOAD_EXAMPLES="False"
    )
    result = run_measured([python, "-c", code, *args], env=env, cwd=ctx.workdir)
    if result.returncode != 0:
        raise BenchmarkError(f"{python} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _shape_rows(ctx: Context) -> list[Row]:
    shape = _python_json(ctx, ctx.python, _SHAPE, str(ctx.workdir / "shape-dags"), str(CHAIN))
    per_task = round(shape["serialized"] / shape["tasks"], 1)
    return [
        Row(KEY, f"DAG file, {CHAIN}-task chain", shape["file"], "B", f"<= {2000 + 400 * CHAIN}"),
        Row(KEY, "serialized DAG per task", per_task, "B", "<= 1000"),
        Row(
            KEY, "rendered bash_command + env, largest task", shape["rendered_max"], "B", "<= 1500"
        ),
    ]


def _add_node_rows(ctx: Context) -> list[Row]:
    # Milliseconds per sample, so at least 5 samples even in quick mode: with 2, a quick CI run
    # gave 15.9x where 7 samples on the same machine give about 12x.
    runs = max(ctx.runs, 5)
    samples = [_python_json(ctx, ctx.python, _ADD_NODE, "500", "5000") for _ in range(runs)]
    small = median([sample["500"] for sample in samples])
    large = median([sample["5000"] for sample in samples])
    return [
        Row(KEY, "add_node, chain of 5,000", round(large, 3), "s", "<= 0.5", runs=runs),
        Row(KEY, "add_node 5,000 / 500", round(large / small, 1), "x", "<= 15", runs=runs),
    ]


def _parse_rows(ctx: Context) -> list[Row]:
    venvs = client_venvs(ctx.workdir)
    if isinstance(venvs, str):
        return [Row(KEY, "DagBag parse vs 7.5.0", "skipped", note=venvs)]
    limit = 10 if ctx.quick else 50
    totals: dict[str, list[float]] = {"7.5.0": [], "ours": []}
    runs = max(1, min(ctx.runs, 3))
    for number in range(runs):
        for core, python in venvs.items():  # alternated: 7.5.0, ours, 7.5.0, ours, ...
            folder = export_synthetic(ctx, python, ctx.workdir / f"parse-{core}-{number}", 1)
            parse_ctx = Context(quick=ctx.quick, runs=1, workdir=ctx.workdir, python=python)
            totals[core].append(
                forked_parse(parse_ctx, Path(folder["folder"]), limit)["per_file_total_s"]
            )
    old, ours = median(totals["7.5.0"]), median(totals["ours"])
    note = f"Python 3.13 client venvs, same Airflow; {limit} files, forked parse each"
    return [
        Row(
            KEY, f"DagBag parse, {limit} files", round(ours, 3), "s", "", round(old, 3), note, runs
        ),
        Row(
            KEY,
            "7.5.0 / ours, DagBag parse",
            round(old / ours, 2),
            "x",
            ">= 2",
            note=note,
            runs=runs,
        ),
    ]


def run(ctx: Context) -> list[Row]:
    return _shape_rows(ctx) + _add_node_rows(ctx) + _parse_rows(ctx)
