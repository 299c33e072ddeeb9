"""One way the tests run a DAG: Airflow's ``dag.test()`` in a process of its own.

- ``migrated_airflow_db`` (fixture): an Airflow SQLite database after ``airflow db migrate``, made
  once per session for all xdist workers; :func:`airflow_home` gives a test a fresh AIRFLOW_HOME
  holding a copy of it (a test's runs never meet another test's).
- :func:`run_dag`: ``dag.test(run_conf=conf)`` of one DAG for each conf, in one child process
  (``_dag_run_child.py``: one interpreter start and DagBag fill for all of them); returns a
  :class:`DagRun` per conf with its task instances. The child exits 1 when a run failed, as
  ``airflow dags test`` does.

Users: the workflow tests (throw-away pipelines' DAGs), the end-to-end tests (the exported DAGs of
a whole Airflow site) and the failure-callback test. Two other ways of running a DAG remain on
purpose, because they are what is tested: a Celery cluster's scheduler triggered through its REST
API (``helpers.airflow_api``, tests/celery) and the product's own ``run --engine airflow``
(tests/build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest

from helpers.release import build_once

__all__ = ["AIRFLOW", "DagRun", "TaskRun", "airflow_home", "migrated_airflow_db", "run_dag"]

AIRFLOW = Path(sys.executable).with_name("airflow")
_CHILD = Path(__file__).with_name("_dag_run_child.py")


@pytest.fixture(scope="session")
def migrated_airflow_db(shared_tmp: Path) -> Path:
    """An Airflow SQLite metadata database after ``airflow db migrate``, once per session."""

    def migrate(home: Path) -> None:
        env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        result = subprocess.run(
            [str(AIRFLOW), "db", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout}{result.stderr}"

    database = build_once(shared_tmp, "airflow-migrated", migrate) / "airflow.db"
    assert database.is_file(), f"airflow db migrate made no {database}"
    return database


def airflow_home(folder: Path, database: Path) -> Path:
    """``folder`` made an AIRFLOW_HOME with a copy of the migrated ``database``."""
    folder.mkdir(parents=True)
    shutil.copyfile(database, folder / "airflow.db")
    return folder


@dataclass(frozen=True)
class TaskRun:
    """One task instance of a run."""

    task_id: str
    state: str | None
    start: datetime | None
    end: datetime | None
    try_number: int


@dataclass
class DagRun:
    """One ``dag.test()`` run: its state, run id and conf, its task instances, the child's output."""

    dag_id: str
    run_id: str
    state: str
    conf: dict
    returncode: int
    output: str
    tasks: dict[str, TaskRun] = field(default_factory=dict)

    @property
    def task_states(self) -> dict[str, str | None]:
        return {task_id: task.state for task_id, task in self.tasks.items()}

    def tail(self, characters: int = 12000) -> str:
        """The end of the output, for assertion messages."""
        return (
            f"\n--- dag.test() of {self.dag_id} (exit {self.returncode}) ---\n"
            + (self.output[-characters:])
        )


def _timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_dag(
    home: Path,
    dag_folder: Path,
    dag_id: str,
    confs: list[dict],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    timeout: float = 900,
) -> list[DagRun]:
    """Run DAG ``dag_id`` of ``dag_folder`` once per conf with ``dag.test()``, AIRFLOW_HOME ``home``.

    ``env`` is the child's whole environment (the Airflow home and DAGs folder are set here).
    """
    environment = {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dag_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [sys.executable, str(_CHILD), str(dag_folder), dag_id, json.dumps(confs)],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == len(confs), (
        f"dag.test() of {dag_id} did not finish (exit {result.returncode}):\n{output[-20000:]}"
    )
    runs = []
    for line in lines:
        data = json.loads(line.removeprefix("RESULT "))
        tasks = {
            task_id: TaskRun(
                task_id,
                task["state"],
                _timestamp(task["start"]),
                _timestamp(task["end"]),
                task["try_number"],
            )
            for task_id, task in data["tasks"].items()
        }
        runs.append(
            DagRun(
                dag_id,
                data["run_id"],
                data["state"],
                data["conf"] or {},
                result.returncode,
                output,
                tasks,
            )
        )
    return runs
