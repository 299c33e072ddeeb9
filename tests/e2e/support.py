"""What the end-to-end tests share: released wheels, an Airflow site with exported DAGs, one DAG run.

The chain a data center runs, with real parts only:

1. :func:`produce_release` (once for all xdist workers, :func:`helpers.release.build_once`): wheels of
   core-telemetry and core-task, of the example pipeline (a copy of ``examples/`` at
   :data:`EXAMPLE_VERSION`) and of the test pipeline in ``fixtures/pipeline`` at each of
   :data:`FIXTURE_VERSIONS`, plus every third-party dependency from this machine's package index,
   all in one wheelhouse. The DAG runs install from it alone (``PIP_NO_INDEX=1``).
2. :func:`make_airflow_site` (once per session): a fresh ``AIRFLOW_HOME`` (SQLite, ``airflow db migrate``)
   whose DAGs folder is filled by ``dkist-processing-core export-dags`` in a subprocess, once per
   pipeline and version, with ``BUILD_VERSION`` set as a pipeline's CI sets it.
3. :class:`E2E` (per test): ``airflow dags test DAG_ID --conf {...}`` in a subprocess, pointed at an OTLP
   gRPC receiver and a RabbitMQ exchange of the test's own, with the test's own temp folder (the
   tasks' throw-away venvs are made there), scratch, records and outbox folders. The run's state and
   its task instances are read back from the metadata database.

The e2e tests are marked as one xdist group (``--dist loadgroup``) so that one worker pays for the
site once. They stay correct without the grouping: every xdist worker makes its own site (its own
AIRFLOW_HOME and SQLite database) and shares only the wheelhouse. The fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path

from helpers.build_cli import Cli
from helpers.otlp_receiver import OtlpReceiver
from helpers.rabbitmq import Delivery
from helpers.rabbitmq import IsbNames
from helpers.rabbitmq import connect
from helpers.rabbitmq import consume_all
from helpers.release import PROJECT_DIRS
from helpers.release import REPO_ROOT
from helpers.release import build_wheel
from helpers.release import download_dependencies
from helpers.task_modules import clean_environment
from helpers.worker_script import worker_path

FIXTURE_PIPELINE = Path(__file__).parent / "fixtures" / "pipeline"
EXAMPLE_PROJECT = REPO_ROOT / "examples"

EXAMPLE_PACKAGE = "dkist_processing_example.workflows"
FIXTURE_PACKAGE = "dkist_processing_e2e_fixture.workflows"
FIXTURE_DISTRIBUTION = "dkist-processing-e2e-fixture"
#: The example pipeline's wheel and the BUILD_VERSION its DAGs are exported at.
EXAMPLE_VERSION = "1.0.0"
#: The test pipeline is built and exported at both versions, side by side.
FIXTURE_VERSIONS = ("1.0.0", "2.0.0")

#: Routing key of the failure reports (the product's contract); the tests bind their own queue with it.
FAILURE_ROUTING_KEY = "recipe.run.failure.m"
#: The queue the product itself declares and binds on every exchange it publishes to.
SHARED_FAILURE_QUEUE = "recipe.run.failure.q"

SERVICE_NAME = "dkist-e2e"
NOMAD = {
    "NOMAD_ALLOC_ID": "alloc-e2e-0001",
    "NOMAD_ALLOC_NAME": "e2e-job.worker[0]",
    "NOMAD_GROUP_NAME": "e2e-workers",
}

AIRFLOW = Path(sys.executable).with_name("airflow")


# ------------------------------------------------------------------------------------ release
@dataclass(frozen=True)
class Release:
    """What ``e2e_release`` built: the wheelhouse and the versioned source trees (for the export)."""

    root: Path

    @property
    def wheelhouse(self) -> Path:
        return self.root / "wheelhouse"

    @property
    def example_src(self) -> Path:
        return self.root / f"example-{EXAMPLE_VERSION}" / "src"

    def fixture_src(self, version: str) -> Path:
        return self.root / f"fixture-{version}" / "src"


def _stamp_example(project: Path, version: str) -> None:
    pyproject = project / "pyproject.toml"
    text, count = re.subn(
        r'^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text(), flags=re.M
    )
    assert count == 1, f"expected one static version line in {pyproject}"
    pyproject.write_text(text)


def _stamp_fixture(project: Path, version: str) -> None:
    (project / "src" / "dkist_processing_e2e_fixture" / "_release.py").write_text(
        f'__version__ = "{version}"\n'
    )


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dist", "*.egg-info")
    )
    return target


def produce_release(folder: Path) -> None:
    """Build the wheelhouse and the versioned source trees into ``folder`` (see :class:`Release`)."""
    release = Release(folder)
    wheelhouse = release.wheelhouse
    wheelhouse.mkdir()
    wheels = [
        build_wheel(PROJECT_DIRS[name], wheelhouse) for name in ("core-telemetry", "core-task")
    ]
    example = _copy(EXAMPLE_PROJECT, release.example_src.parent)
    _stamp_example(example, EXAMPLE_VERSION)
    wheels.append(build_wheel(example, wheelhouse))
    fixture_wheels = []
    for version in FIXTURE_VERSIONS:
        fixture = _copy(FIXTURE_PIPELINE, release.fixture_src(version).parent)
        _stamp_fixture(fixture, version)
        fixture_wheels.append(build_wheel(fixture, wheelhouse))
    # Third-party dependencies, once, from this machine's index (pip's own configuration). One
    # resolution cannot hold two versions of a distribution; the versions share their dependencies.
    wheels.append(fixture_wheels[0])
    download_dependencies(wheels, wheelhouse)


# ------------------------------------------------------------------------------- airflow site
@dataclass(frozen=True)
class AirflowSite:
    home: Path
    dags: Path
    dag_ids: tuple[str, ...]

    @property
    def database(self) -> Path:
        return self.home / "airflow.db"


def _base_environment() -> dict[str, str]:
    """This process's environment without the product's, pip's or Airflow's variables."""
    env = clean_environment()
    return {key: value for key, value in env.items() if not key.startswith("AIRFLOW")}


def export_dags(
    package: str, version: str, pythonpath: Path, dags: Path, scratch: Path
) -> list[str]:
    """``dkist-processing-core export-dags PACKAGE DAGS`` as a pipeline's CI runs it."""
    before = {path.name for path in dags.iterdir()}
    env = _base_environment()
    env.update(
        PYTHONPATH=str(pythonpath),
        BUILD_VERSION=version,
        # the export's DagBag check imports Airflow: keep it out of the site and of ~/airflow
        AIRFLOW_HOME=str(scratch / "export-airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    result = Cli(env=env, cwd=scratch)("export-dags", package, str(dags))
    assert result.returncode == 0, (
        f"export-dags {package} (BUILD_VERSION={version}) failed:\n{result.stdout}\n{result.stderr}"
    )
    written = sorted(path.stem for path in dags.glob("*.py") if path.name not in before)
    assert written, f"export-dags {package} wrote nothing into {dags}:\n{result.stdout}"
    return written


def make_airflow_site(home: Path, scratch: Path, release: Release) -> AirflowSite:
    """Migrate a fresh AIRFLOW_HOME and export every workflow of both pipelines into its DAGs folder."""
    dags = home / "dags"
    dags.mkdir()
    env = _base_environment()
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    result = subprocess.run(
        [str(AIRFLOW), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout}{result.stderr}"
    dag_ids = export_dags(EXAMPLE_PACKAGE, EXAMPLE_VERSION, release.example_src, dags, scratch)
    for version in FIXTURE_VERSIONS:
        dag_ids += export_dags(
            FIXTURE_PACKAGE, version, release.fixture_src(version), dags, scratch
        )
    return AirflowSite(home=home, dags=dags, dag_ids=tuple(sorted(dag_ids)))


# ------------------------------------------------------------------------------- one DAG run
@dataclass(frozen=True)
class TaskRun:
    """One task instance as the metadata database recorded it."""

    task_id: str
    state: str | None
    start: datetime | None
    end: datetime | None
    try_number: int


@dataclass
class DagRun:
    """One ``airflow dags test`` run: the CLI's exit status and output, the run as the database has it."""

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
            f"\n--- airflow dags test {self.dag_id} (exit {self.returncode}) ---\n"
            + self.output[-characters:]
        )


def _timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _read_database(database: Path, query: str, parameters: tuple) -> list[tuple]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(query, parameters).fetchall()
    finally:
        connection.close()


def _run_ids(database: Path, dag_id: str) -> set[str]:
    rows = _read_database(database, "SELECT run_id FROM dag_run WHERE dag_id = ?", (dag_id,))
    return {row[0] for row in rows}


@dataclass
class E2E:
    """One test's view of the site: its own receiver, exchange and folders, and a way to run DAGs."""

    site: AirflowSite
    release: Release
    receiver: OtlpReceiver
    isb: IsbNames
    root: Path
    installer: str = "pip"
    """``uv``: uv is on the worker's PATH (the script uses it); ``pip``: it is not."""

    @property
    def tmp(self) -> Path:
        """TMPDIR of the DAG runs: every task makes its throw-away venv here."""
        return self.root / "tmp"

    @property
    def scratch(self) -> Path:
        """DKIST_EXAMPLE_SCRATCH: where the example pipeline's tasks write."""
        return self.root / "scratch"

    @property
    def records(self) -> Path:
        """DKIST_E2E_RECORDS: where the test pipeline's tasks record themselves."""
        return self.root / "records"

    @property
    def outbox(self) -> Path:
        """ISB_OUTBOX_DIR: failure reports the broker did not confirm would wait here."""
        return self.root / "isb-outbox"

    def environment(self) -> dict[str, str]:
        env = _base_environment()
        env.update(
            AIRFLOW_HOME=str(self.site.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.site.dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            # `python3` in the task script is this interpreter: the venvs are made from it; uv
            # is on the worker's PATH or not, as the test's installer says
            PATH=worker_path(self.root / "worker-bin", self.installer),
            UV_CACHE_DIR=str(self.root / "uv-cache"),
            TMPDIR=str(self.tmp),
            # the tasks' pip sees the wheelhouse only: no index, no mirror, no machine config
            PIP_CONFIG_FILE=os.devnull,
            PIP_NO_INDEX="1",
            PIP_FIND_LINKS=str(self.release.wheelhouse),
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            ISB_EXCHANGE=self.isb.exchange,
            ISB_OUTBOX_DIR=str(self.outbox),
            OTEL_SERVICE_NAME=SERVICE_NAME,
            LOGURU_LEVEL="INFO",
            DKIST_EXAMPLE_SCRATCH=str(self.scratch),
            DKIST_E2E_RECORDS=str(self.records),
            **NOMAD,
            **self.receiver.environment(),
        )
        return env

    def run_dag(self, dag_id: str, conf: dict, *, timeout: float = 900) -> DagRun:
        """``airflow dags test DAG_ID --conf JSON``; the new run and its task instances from the database."""
        assert dag_id in self.site.dag_ids, f"{dag_id} was not exported: {self.site.dag_ids}"
        database = self.site.database
        before = _run_ids(database, dag_id)
        result = subprocess.run(
            [str(AIRFLOW), "dags", "test", dag_id, "--conf", json.dumps(conf)],
            env=self.environment(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        new = _run_ids(database, dag_id) - before
        assert len(new) == 1, (
            f"airflow dags test {dag_id} (exit {result.returncode}) made {len(new)} DAG runs, "
            f"expected one:\n{output[-12000:]}"
        )
        (run_id,) = new
        ((state, raw_conf),) = _read_database(
            database,
            "SELECT state, conf FROM dag_run WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        )
        run = DagRun(
            dag_id=dag_id,
            run_id=run_id,
            state=state,
            conf=json.loads(raw_conf) if raw_conf else {},
            returncode=result.returncode,
            output=output,
        )
        for task_id, task_state, start, end, try_number in _read_database(
            database,
            "SELECT task_id, state, start_date, end_date, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY task_id",
            (dag_id, run_id),
        ):
            run.tasks[task_id] = TaskRun(
                task_id, task_state, _timestamp(start), _timestamp(end), try_number
            )
        return run

    def failure_reports(self, expected: int, timeout: float = 15.0) -> list[Delivery]:
        """Every failure report on the test's own queue (waits up to ``timeout`` for ``expected``)."""
        return consume_all(self.isb.queue, expected=expected, timeout=timeout)

    def venvs_left(self) -> list[Path]:
        """Virtual environments still present under the runs' TMPDIR (there must be none)."""
        return sorted(path.parent for path in self.tmp.rglob("pyvenv.cfg"))


def discard_own_copies(exchange: str) -> None:
    """Take this test's reports out of the product's shared queue, leaving everyone else's.

    The product binds ``recipe.run.failure.q`` on every exchange it publishes to, so each report
    also lands there; the test reads its own queue and removes its copies here so that the
    shared, durable queue does not fill up run after run. Messages of other exchanges are
    returned to the queue untouched (they are held unacknowledged, never redelivered meanwhile).
    """
    import pika.exceptions

    connection = connect()
    try:
        channel = connection.channel()
        try:
            waiting = channel.queue_declare(SHARED_FAILURE_QUEUE, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            return
        own, others = [], []
        for _ in range(min(waiting, 10_000)):
            method, _properties, _body = channel.basic_get(SHARED_FAILURE_QUEUE, auto_ack=False)
            if method is None:
                break
            (own if method.exchange == exchange else others).append(method.delivery_tag)
        for tag in own:
            channel.basic_ack(tag)
        for tag in others:
            channel.basic_nack(tag, requeue=True)
    finally:
        if connection.is_open:
            connection.close()
