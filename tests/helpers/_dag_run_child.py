"""Run one DAG with Airflow's ``dag.test()`` in this (fresh) process: the child of :mod:`helpers.dag_runs`.

Usage: ``python _dag_run_child.py DAG_FOLDER DAG_ID CONFS_JSON`` where CONFS_JSON is a list of
``dag_run.conf`` dicts, one DAG run each (one process start and DagBag load for all of them). The
caller sets AIRFLOW_HOME (a migrated SQLite database) and AIRFLOW__CORE__DAGS_FOLDER=DAG_FOLDER.
Prints one line ``RESULT {json}`` per run: its state, run id, conf and every task instance. Exits 1
when a run did not succeed, as ``airflow dags test`` does.
"""

from __future__ import annotations

import json
import sys

from airflow.dag_processing.dagbag import DagBag


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def main() -> int:
    folder, dag_id, confs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    bag = DagBag(dag_folder=folder)
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    status = 0
    for conf in confs:
        run = bag.dags[dag_id].test(run_conf=conf)
        tasks = {
            instance.task_id: {
                "state": _text(instance.state),
                "start": instance.start_date and instance.start_date.isoformat(),
                "end": instance.end_date and instance.end_date.isoformat(),
                "try_number": instance.try_number,
            }
            for instance in run.get_task_instances()
        }
        result = {"state": str(run.state), "run_id": run.run_id, "conf": run.conf, "tasks": tasks}
        print("RESULT " + json.dumps(result), flush=True)
        status = status or int(result["state"] != "success")
    return status


if __name__ == "__main__":
    sys.exit(main())
