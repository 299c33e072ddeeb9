"""Fixtures of the CeleryExecutor test: services, wheelhouse, exported DAGs, the running cluster.

Everything is module-scoped: one deployment serves the module (starting it is the slow part).
The pipeline wheels (core-telemetry, core-task, the example pipeline and the test-only pipeline in
``fixtures/pipeline``) and all their dependencies go into a wheelhouse; the workers' pip sees only
that folder (``PIP_NO_INDEX=1``, ``PIP_FIND_LINKS``, no pip configuration file), as a data
center's workers see only its package index. The cluster starts while the wheelhouse is built and
the DAGs are exported: the DAG processor picks the files up when they land in its folder.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.airflow_cluster import POSTGRES
from helpers.airflow_cluster import RABBITMQ
from helpers.airflow_cluster import REDIS
from helpers.airflow_cluster import AirflowCeleryCluster
from helpers.airflow_cluster import WorkerSpec
from helpers.airflow_cluster import not_listening
from helpers.airflow_cluster import sigterm_as_keyboard_interrupt
from helpers.build_cli import Cli
from helpers.rabbitmq import IsbNames
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import unique_names
from helpers.release import REPO_ROOT
from helpers.task_modules import clean_environment
from helpers.wheelhouse import CORE_TASK
from helpers.wheelhouse import build_wheelhouse

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_PIPELINE = FIXTURES / "pipeline"
EXAMPLE_PIPELINE = REPO_ROOT / "examples"
FAILURE_ROUTING_KEY = "recipe.run.failure.m"

#: Slots per pool: high_memory_pool has one slot, so high-memory tasks run one at a time although
#: the high-memory worker could run two (its concurrency).
POOLS = {"default_pool": 16, "high_memory_pool": 1, "multi_core_pool": 2, "gpu_pool": 1}
WORKER_CONCURRENCY = 2
CLUSTER_START_BOUND_SECONDS = 240


@dataclass(frozen=True)
class ExportedDags:
    folder: Path
    example: str  # the example's data-form workflow l0 -> l1 (one high-memory task)
    pool_probe: str  # two independent high-memory tasks
    failing: str  # one task that always fails


@dataclass(frozen=True)
class CeleryDeployment:
    cluster: AirflowCeleryCluster
    dags: ExportedDags
    wheelhouse: Path


def _project_version(project_dir: Path) -> str:
    return tomllib.loads((project_dir / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def celery_services() -> None:
    """Fail (never skip) when PostgreSQL, Redis or RabbitMQ is not listening or a client is missing."""
    problems = not_listening([POSTGRES, REDIS, RABBITMQ])
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
    for module in ("celery", "redis", "psycopg2", "asyncpg", "airflow.providers.celery"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(
                f"{module} is not installed; install the test requirements, which include "
                "dkist-processing-core-build[celery]",
                pytrace=False,
            )


def _export(
    package: str, version: str, target: Path, scratch: Path, pythonpath: Path | None
) -> None:
    """``dkist-processing-core export-dags PACKAGE DIR``, as a pipeline's CI runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        BUILD_VERSION=version,
        AIRFLOW_HOME=str(scratch / f"airflow-home-{target.name}"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    result = Cli(env=env, cwd=scratch)("export-dags", package, str(target))
    assert result.returncode == 0, (
        f"export-dags {package} failed:\n{result.stdout}\n{result.stderr}"
    )


def export_dags(folder: Path, scratch: Path) -> ExportedDags:
    """The example's and the test pipeline's workflows, exported with the CLI into ``folder``.

    Each export writes its own folder; the files then move into the watched DAGs folder by atomic
    rename, so the DAG processor never parses a half-written file.
    """
    exports = [
        ("dkist_processing_example.workflows", _project_version(EXAMPLE_PIPELINE), None),
        (
            "dkist_celery_fixture.workflows",
            _project_version(FIXTURE_PIPELINE),
            FIXTURE_PIPELINE / "src",
        ),
    ]
    targets = [scratch / f"export-{number}" for number in range(len(exports))]
    with ThreadPoolExecutor(max_workers=len(exports)) as pool:
        jobs = [
            pool.submit(_export, package, version, target, scratch, pythonpath)
            for (package, version, pythonpath), target in zip(exports, targets, strict=True)
        ]
        for job in jobs:
            job.result()
    dag_ids: list[str] = []
    for target in targets:
        for path in sorted(target.glob("*.py")):
            partial = folder / f".{path.name}.part"
            shutil.copy2(path, partial)
            os.replace(partial, folder / path.name)
            dag_ids.append(path.stem)

    def one(prefix: str) -> str:
        matches = [dag_id for dag_id in dag_ids if dag_id.startswith(prefix)]
        assert len(matches) == 1, (
            f"expected one exported DAG starting with {prefix!r}, got {dag_ids}"
        )
        return matches[0]

    return ExportedDags(
        folder=folder,
        example=one("l0_to_l1_example"),
        pool_probe=one("probe_to_pool_celery"),
        failing=one("probe_to_failure_celery"),
    )


@pytest.fixture(scope="module")
def isb_names() -> Iterator[IsbNames]:
    """A unique exchange for the workers' failure reports, and our own queue bound to it."""
    names = unique_names("celery")
    names = IsbNames(exchange=names.exchange, queue=names.queue, routing_key=FAILURE_ROUTING_KEY)
    declare_queue(names)
    try:
        yield names
    finally:
        delete_names(names)


@pytest.fixture(scope="module")
def celery_deployment(
    celery_services: None,
    tmp_path_factory: pytest.TempPathFactory,
    isb_names: IsbNames,
) -> Iterator[CeleryDeployment]:
    """Scheduler, DAG processor, API server and two Celery workers (default, high_memory).

    Stopped (SIGINT, SIGTERM, SIGKILL with bounds; databases dropped) when the module ends,
    whether the test passed, failed or the test process got SIGTERM.
    """
    root = tmp_path_factory.mktemp("celery")
    wheelhouse, dags_folder, cluster_root = root / "wheelhouse", root / "dags", root / "cluster"
    for folder in (wheelhouse, dags_folder, cluster_root / "isb-outbox"):
        folder.mkdir(parents=True)
    task_env = {
        # pip in the tasks' throw-away venvs: the wheelhouse only, no index, no machine config.
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        # Where the pipelines' tasks write (shared by both workers, like a data center's file system).
        "DKIST_EXAMPLE_SCRATCH": str(cluster_root / "scratch"),
        "DKIST_CELERY_RECORDS": str(cluster_root / "records"),
        # The failure callback runs in the worker: report on our exchange, keep the outbox here.
        "ISB_EXCHANGE": isb_names.exchange,
        "ISB_OUTBOX_DIR": str(cluster_root / "isb-outbox"),
        "LOGURU_LEVEL": "INFO",
    }
    cluster = AirflowCeleryCluster(
        cluster_root,
        dags_folder,
        workers=[
            WorkerSpec("default-worker", ("default",), WORKER_CONCURRENCY, task_env),
            WorkerSpec("high-memory-worker", ("high_memory",), WORKER_CONCURRENCY, task_env),
        ],
        pools=POOLS,
        redis_hint=os.environ.get("PYTEST_XDIST_WORKER", ""),
        # None of the shell's dkist-processing-core or pip variables reach the cluster.
        base_env=clean_environment(),
    )
    with sigterm_as_keyboard_interrupt():
        try:
            with ThreadPoolExecutor(max_workers=3) as pool:
                started = pool.submit(cluster.start, CLUSTER_START_BOUND_SECONDS)
                built = pool.submit(
                    build_wheelhouse, wheelhouse, [*CORE_TASK, EXAMPLE_PIPELINE, FIXTURE_PIPELINE]
                )
                exported = pool.submit(export_dags, dags_folder, root)
                dags = exported.result()
                built.result()
                started.result()
            yield CeleryDeployment(cluster=cluster, dags=dags, wheelhouse=wheelhouse)
        finally:
            report = cluster.stop()
            print(f"celery cluster stopped: {report}; logs in {cluster.logs_dir}")
