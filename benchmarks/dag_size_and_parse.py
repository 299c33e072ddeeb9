"""Size of an exported DAG file per node (20-node workflow) and DagBag load time of 50 such files.

    python benchmarks/dag_size_and_parse.py [--workflows 50] [--nodes 20] [--runs 3]

Writes a throw-away pipeline package (one module with the task classes, one with the workflows)
to a temporary folder, exports every workflow, then loads the folder in an Airflow DagBag in a
fresh interpreter per run (after ``import airflow`` there, which is reported separately). Prints
one JSON object. Figures, not assertions: nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_TASKS = """\
from dkist_processing_core import TaskBase


class _Noop(TaskBase):
    def run(self):
        pass


for _number in range({nodes}):
    _name = f"CalibrationStep{{_number}}"
    globals()[_name] = type(_name, (_Noop,), {{"__module__": __name__}})
"""

_WORKFLOWS = """\
from dkist_processing_core import ResourceQueue
from dkist_processing_core import Workflow

from . import tasks

QUEUES = list(ResourceQueue)
workflows = []
for _index in range({workflows}):
    _workflow = Workflow(
        input_data="l0", output_data="l1", category=f"instrument{{_index}}", detail="calibration",
        workflow_package=__package__, workflow_version="3.14.1", tags=["benchmark", "VISP"],
    )
    for _number in range({nodes}):
        # a realistic shape: a chain with a fan-in every fourth step
        upstreams = [getattr(tasks, f"CalibrationStep{{_number - 1}}")] if _number else None
        if _number >= 4 and _number % 4 == 0:
            upstreams.append(getattr(tasks, f"CalibrationStep{{_number - 3}}"))
        _workflow.add_node(
            getattr(tasks, f"CalibrationStep{{_number}}"), upstreams=upstreams,
            resource_queue=QUEUES[_number % len(QUEUES)], pip_extras=["inventory"] if _number % 5 == 0 else None,
        )
    workflows.append(_workflow)
"""

_PARSE = """\
import json, sys, time
start = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
imported = time.perf_counter() - start
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
loaded = time.perf_counter() - start
print(json.dumps({"import_s": imported, "load_s": loaded, "dags": len(bag.dags), "errors": len(bag.import_errors)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dag-size-and-parse-") as scratch:
        root = Path(scratch)
        package = root / "src" / "bench_pipeline"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "tasks.py").write_text(_TASKS.format(nodes=args.nodes))
        (package / "workflows.py").write_text(
            _WORKFLOWS.format(workflows=args.workflows, nodes=args.nodes)
        )
        sys.path.insert(0, str(root / "src"))

        start = time.perf_counter()
        from bench_pipeline.workflows import workflows

        built = time.perf_counter() - start
        dags = root / "dags"
        start = time.perf_counter()
        paths = [workflow.export_dag(dags) for workflow in workflows]
        exported = time.perf_counter() - start
        sizes = [path.stat().st_size for path in paths]

        env = {
            **os.environ,
            "AIRFLOW_HOME": str(root / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        }
        samples = []
        for _ in range(args.runs):
            result = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(_PARSE), str(dags)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                print(result.stderr[-4000:], file=sys.stderr)
                return 1
            samples.append(json.loads(result.stdout.strip().splitlines()[-1]))
        if any(sample["errors"] or sample["dags"] != args.workflows for sample in samples):
            print(f"DagBag problems: {samples}", file=sys.stderr)
            return 1

    load = statistics.median(sample["load_s"] for sample in samples)
    report = {
        "workflows": args.workflows,
        "nodes_per_workflow": args.nodes,
        "dag_file_bytes": sizes[0],
        "dag_file_bytes_per_node": round(sizes[0] / args.nodes, 1),
        "build_workflows_s": round(built, 3),
        "export_dags_s": round(exported, 3),
        "dagbag_import_airflow_s_median": round(
            statistics.median(sample["import_s"] for sample in samples), 3
        ),
        "dagbag_load_s_median": round(load, 3),
        "dagbag_load_ms_per_file": round(1000 * load / args.workflows, 2),
        "runs": args.runs,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
