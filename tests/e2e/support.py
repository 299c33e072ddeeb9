"""What the end-to-end tests share: released wheels, an Airflow site with exported DAGs, one DAG run.

The chain a data center runs, with real parts only:

1. :func:`produce_release` (once for all xdist workers, :func:`helpers.release.build_once`): wheels of
   core-telemetry and core-task, of the example pipeline (a copy of ``examples/`` at
   :data:`EXAMPLE_VERSION`) and of the test pipeline in ``fixtures/pipeline`` at each of
   :data:`FIXTURE_VERSIONS`, plus every third-party dependency from this machine's package index,
   all in one wheelhouse. The DAG runs install from it alone (``PIP_NO_INDEX=1``).
2. :func:`make_airflow_site` (once per session): a fresh ``AIRFLOW_HOME`` (a copy of the SQLite
   database ``airflow db migrate`` made once) whose DAGs folder is filled by
   ``dkist-processing-core export-dags`` in a subprocess, once per pipeline and version, with
   ``BUILD_VERSION`` set as a pipeline's CI sets it.
3. :class:`E2E` (per test): ``dag.test()`` of one exported DAG in a subprocess
   (:func:`helpers.dag_runs.run_dag`, what ``airflow dags test`` runs), pointed at an OTLP gRPC
   receiver and a RabbitMQ exchange of the test's own, with the test's own temp folder (the tasks'
   throw-away venvs are made there), scratch, records and outbox folders. The run's state and its
   task instances come back from the child.

The e2e tests are marked as one xdist group (``--dist loadgroup``) so that one worker pays for the
site once. They stay correct without the grouping: every xdist worker makes its own site (its own
AIRFLOW_HOME and SQLite database) and shares only the wheelhouse. The fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from helpers.build_cli import Cli
from helpers.dag_runs import DagRun
from helpers.dag_runs import run_dag
from helpers.otlp_receiver import OtlpReceiver
from helpers.rabbitmq import Delivery
from helpers.rabbitmq import IsbNames
from helpers.rabbitmq import connect
from helpers.rabbitmq import consume_all
from helpers.release import REPO_ROOT
from helpers.task_modules import clean_environment
from helpers.wheelhouse import CORE_TASK
from helpers.wheelhouse import build_wheelhouse
from helpers.wheelhouse import versioned_copy
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


def produce_release(folder: Path) -> None:
    """Build the wheelhouse and the versioned source trees into ``folder`` (see :class:`Release`)."""
    release = Release(folder)
    release.wheelhouse.mkdir()
    example = versioned_copy(EXAMPLE_PROJECT, release.example_src.parent, EXAMPLE_VERSION)
    fixtures = [
        versioned_copy(FIXTURE_PIPELINE, release.fixture_src(version).parent, version)
        for version in FIXTURE_VERSIONS
    ]
    build_wheelhouse(release.wheelhouse, [*CORE_TASK, example, *fixtures])


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
    """Export every workflow of both pipelines into the DAGs folder of ``home``, an AIRFLOW_HOME
    with a migrated database (:func:`helpers.dag_runs.airflow_home`)."""
    dags = home / "dags"
    dags.mkdir()
    dag_ids = export_dags(EXAMPLE_PACKAGE, EXAMPLE_VERSION, release.example_src, dags, scratch)
    for version in FIXTURE_VERSIONS:
        dag_ids += export_dags(
            FIXTURE_PACKAGE, version, release.fixture_src(version), dags, scratch
        )
    return AirflowSite(home=home, dags=dags, dag_ids=tuple(sorted(dag_ids)))


# ------------------------------------------------------------------------------- one DAG run
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
        """``dag.test(run_conf=conf)`` of one exported DAG of the site (:mod:`helpers.dag_runs`)."""
        assert dag_id in self.site.dag_ids, f"{dag_id} was not exported: {self.site.dag_ids}"
        (run,) = run_dag(
            self.site.home,
            self.site.dags,
            dag_id,
            [conf],
            self.environment(),
            cwd=self.root,
            timeout=timeout,
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
