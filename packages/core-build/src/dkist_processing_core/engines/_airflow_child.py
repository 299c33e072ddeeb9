"""The child process of ``run --engine airflow``: ``python -m dkist_processing_core.engines._airflow_child``.

It runs with a clean Airflow environment (set by the parent): migrates the SQLite metadata
database (``airflow db migrate``), loads the DAG from the folder and calls
``dag.test(run_conf={"recipe_run_id": N})``, which runs the tasks in dependency order (retries and
failure callbacks included), and writes their final states to a JSON file for the parent.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from dkist_processing_core.recipe_run_id import parse_recipe_run_id

__all__ = ["RESULT_FORMAT", "main"]

RESULT_FORMAT = 1


def _write(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps({"format": RESULT_FORMAT, **content}, indent=2), encoding="utf-8")


def _child(dag_folder: Path, dag_id: str, recipe_run_id: int, result: Path) -> int:
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=False)
    if migrate.returncode != 0:
        _write(result, {"error": f"airflow db migrate failed (exit {migrate.returncode})"})
        return 1
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_folder))
    if bag.import_errors:
        errors = "; ".join(
            f"{Path(path).name}: {str(trace).strip().splitlines()[-1]}"
            for path, trace in bag.import_errors.items()
        )
        _write(result, {"error": f"the DAG file does not load: {errors}"})
        return 1
    dag = bag.dags.get(dag_id)
    if dag is None:
        _write(result, {"error": f"no DAG {dag_id!r} in {dag_folder}"})
        return 1
    dag_run = dag.test(run_conf={"recipe_run_id": recipe_run_id})
    task_instances = [
        {
            "task_id": ti.task_id,
            "state": None if ti.state is None else str(ti.state),
            "try_number": ti.try_number,
            "start": ti.start_date and ti.start_date.timestamp(),
            "end": ti.end_date and ti.end_date.timestamp(),
        }
        for ti in dag_run.get_task_instances()
    ]
    state = str(dag_run.state)
    _write(result, {"run_id": dag_run.run_id, "state": state, "task_instances": task_instances})
    return 0 if state == "success" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dkist_processing_core.engines._airflow_child")
    parser.add_argument("--dag-folder", type=Path, required=True)
    parser.add_argument("--dag-id", required=True)
    parser.add_argument("--recipe-run-id", type=parse_recipe_run_id, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.dag_id):
        parser.error("invalid --dag-id")
    return _child(args.dag_folder, args.dag_id, args.recipe_run_id, args.result)


if __name__ == "__main__":
    sys.exit(main())
