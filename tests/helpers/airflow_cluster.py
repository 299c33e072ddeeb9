"""A real, distributed Airflow 3 on this machine for tests: CeleryExecutor, no docker.

What :class:`AirflowCeleryCluster` starts, each process in its own process group with its own log
file under the cluster's root folder:

* metadata database: a fresh PostgreSQL database with a unique name (dropped at the end),
* Celery broker and result backend: a Redis database number claimed for this cluster alone
  (flushed at the end),
* ``airflow scheduler``, ``airflow dag-processor``, ``airflow api-server`` (on a free port),
* one ``airflow celery worker`` per :class:`WorkerSpec`, each with its own queues, working
  directory (also its ``TMPDIR``, so throw-away task venvs land there), Celery hostname and
  environment.

All processes share one configuration given through ``AIRFLOW__*`` environment variables (the
JWT secret, fernet key and API secret are generated per cluster). Each worker records its own
name as the task instance's ``hostname`` (``[core] hostname_callable``), the way workers on
separate machines record their host names, so tests can read from Airflow where a task ran.

Stopping (:meth:`AirflowCeleryCluster.stop`, also on ``__exit__``) sends SIGINT, then SIGTERM, then
SIGKILL to every process group with a bound for each step, then drops the database and frees the
Redis database. It is safe to call twice and after a failed start.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from helpers.airflow_api import AirflowApi
from helpers.process_groups import ManagedProcess
from helpers.process_groups import sigterm_as_keyboard_interrupt
from helpers.process_groups import stop_processes
from helpers.services import POSTGRES
from helpers.services import RABBITMQ
from helpers.services import REDIS
from helpers.services import ClusterError
from helpers.services import PostgresDatabase
from helpers.services import RedisDatabase
from helpers.services import Service
from helpers.services import free_port as _free_port
from helpers.services import not_listening

__all__ = [
    "POSTGRES",
    "RABBITMQ",
    "REDIS",
    "AirflowCeleryCluster",
    "ClusterError",
    "ManagedProcess",
    "PostgresDatabase",
    "RedisDatabase",
    "Service",
    "WorkerSpec",
    "not_listening",
    "sigterm_as_keyboard_interrupt",
    "stop_processes",
]

# ---------------------------------------------------------------------------------------- cluster

# Written into the cluster folder and named by ``[core] hostname_callable`` in each worker's
# environment: the task instance then records the worker's name as its hostname, as two workers
# on two machines would. A constant text, no values are interpolated into it.
_WORKER_IDENTITY_MODULE = '''\
"""Hostname callable of a test Celery worker (see tests/helpers/airflow_cluster.py)."""

import os


def worker_name() -> str:
    return os.environ["DKIST_WORKER_NAME"]
'''
_WORKER_IDENTITY_CALLABLE = "dkist_test_worker_identity.worker_name"

_TERMINAL_RUN_STATES = frozenset({"success", "failed"})


@dataclass(frozen=True)
class WorkerSpec:
    """One Celery worker: its name (also its recorded hostname) and the queues it serves."""

    name: str
    queues: tuple[str, ...]
    concurrency: int = 2
    env: Mapping[str, str] = field(default_factory=dict)


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class AirflowCeleryCluster(AirflowApi):
    """Airflow 3 with the CeleryExecutor on PostgreSQL + Redis, all processes local.

    DAG files may land in ``dags_folder`` before or after :meth:`start` (the DAG processor lists
    it every few seconds); write them atomically (rename) so no half-written file gets parsed.
    ``base_env`` (default: this process's environment, ``AIRFLOW*`` variables always dropped) is
    the start of every process's environment; ``env`` goes to every process, ``WorkerSpec.env``
    to one worker only (on top of ``env``).
    """

    def __init__(
        self,
        root: Path,
        dags_folder: Path,
        *,
        workers: Sequence[WorkerSpec],
        pools: Mapping[str, int],
        env: Mapping[str, str] | None = None,
        redis_hint: str = "",
        python: str = sys.executable,
        base_env: Mapping[str, str] | None = None,
    ):
        self.root = Path(root)
        self.dags_folder = Path(dags_folder)
        self.workers = list(workers)
        self.pools = dict(pools)
        self.extra_env = dict(env or {})
        self.redis_hint = redis_hint
        self.python = python
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.postgres = PostgresDatabase()
        self.redis = RedisDatabase()
        self.port = 0
        self.processes: list[ManagedProcess] = []
        self.stop_report: dict[str, str] = {}
        self._started = False
        self._fernet_key = _fernet_key()
        self._api_secret = secrets.token_urlsafe(32)
        self._jwt_secret = secrets.token_urlsafe(48)

    # ---------------------------------------------------------------- configuration

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def airflow_env(self) -> dict[str, str]:
        """The environment shared by every Airflow process of this cluster (and its CLI calls)."""
        env = {k: v for k, v in self.base_env.items() if not k.startswith("AIRFLOW")}
        venv_bin = str(Path(self.python).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env.update(
            {
                "AIRFLOW_HOME": str(self.root / "airflow_home"),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__FERNET_KEY": self._fernet_key,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.sqlalchemy_url,
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url(),
                "AIRFLOW__CELERY__RESULT_BACKEND": self.redis.url(),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": self._api_secret,
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs_dir / "tasks"),
                "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
                    self.logs_dir / "dag_processor"
                ),
                # A loaded CI machine: list the DAGs folder often, never kill a slow parse early.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "120",
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                "AIRFLOW__CELERY__OPERATION_TIMEOUT": "30",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def worker_env(self, spec: WorkerSpec) -> dict[str, str]:
        env = self.airflow_env()
        workdir = self.worker_dir(spec)
        identity_dir = str(self.root / "worker_identity")
        env["PYTHONPATH"] = identity_dir + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = _WORKER_IDENTITY_CALLABLE
        env["DKIST_WORKER_NAME"] = spec.name
        env["TMPDIR"] = str(workdir / "tmp")
        env.update(spec.env)
        return env

    def worker_dir(self, spec: WorkerSpec) -> Path:
        return self.root / "workers" / spec.name

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 180.0) -> None:
        """Create the databases, migrate, start every process and wait until all are ready."""
        deadline = time.monotonic() + timeout
        self._started = True
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "worker_identity").mkdir(exist_ok=True)
        (self.root / "worker_identity" / "dkist_test_worker_identity.py").write_text(
            _WORKER_IDENTITY_MODULE
        )
        self.port = _free_port()
        self.postgres.create()
        self.redis.claim(self.redis_hint)

        self.run_cli(["db", "migrate"], timeout=max(30.0, deadline - time.monotonic()))

        airflow = [self.python, "-m", "airflow"]
        env = self.airflow_env()
        services = [
            ManagedProcess(
                "api-server",
                [*airflow, "api-server"],
                env,
                self.root / "api-server",
                self.logs_dir / "api-server.log",
            ),
            ManagedProcess(
                "scheduler",
                [*airflow, "scheduler"],
                env,
                self.root / "scheduler",
                self.logs_dir / "scheduler.log",
            ),
            ManagedProcess(
                "dag-processor",
                [*airflow, "dag-processor"],
                env,
                self.root / "dag-processor",
                self.logs_dir / "dag-processor.log",
            ),
        ]
        for spec in self.workers:
            workdir = self.worker_dir(spec)
            (workdir / "tmp").mkdir(parents=True, exist_ok=True)
            argv = [
                *airflow,
                "celery",
                "worker",
                "--queues",
                ",".join(spec.queues),
                "--celery-hostname",
                f"{spec.name}@%h",
                "--concurrency",
                str(spec.concurrency),
                # All workers share one host and one log folder (tests read the files): no
                # per-worker log server, which would clash on port 8793 with the other worker.
                "--skip-serve-logs",
            ]
            services.append(
                ManagedProcess(
                    f"worker-{spec.name}",
                    argv,
                    self.worker_env(spec),
                    workdir,
                    self.logs_dir / f"worker-{spec.name}.log",
                )
            )
        self.processes = services
        for process in services:
            process.start()

        self.wait_until_healthy(deadline)
        self._create_pools()
        self.wait_for_workers(deadline)

    def stop(self) -> dict[str, str]:
        """Stop workers first (warm shutdown), then the rest; drop the databases. Idempotent."""
        if not self._started:
            return self.stop_report
        workers = [p for p in self.processes if p.name.startswith("worker-")]
        others = [p for p in self.processes if not p.name.startswith("worker-")]
        report = stop_processes(workers)
        report.update(stop_processes(others))
        began = time.monotonic()
        errors: list[str] = []
        try:
            self.postgres.drop()
        except Exception as exc:  # keep going: the Redis database must be freed too
            errors.append(f"dropping PostgreSQL database {self.postgres.name}: {exc}")
        try:
            self.redis.release()
        except Exception as exc:
            errors.append(f"freeing Redis database: {exc}")
        report["databases"] = f"dropped after {time.monotonic() - began:.1f} s"
        self.stop_report = report
        self._started = False
        if errors:
            raise ClusterError("; ".join(errors))
        return report

    def __enter__(self) -> AirflowCeleryCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- readiness

    def _check_alive(self) -> None:
        dead = [p for p in self.processes if not p.running()]
        if dead:
            raise ClusterError(
                "Airflow process(es) exited early: "
                + ", ".join(
                    f"{p.name} (exit {p.popen.returncode if p.popen else '?'})" for p in dead
                )
                + "\n"
                + self.diagnostics()
            )

    def wait_until_healthy(self, deadline: float) -> dict[str, Any]:
        """Wait until the API server answers and reports a healthy database, scheduler and DAG processor."""
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self.api("GET", "/api/v2/monitor/health", timeout=5)
            except (OSError, urllib.error.URLError, ClusterError) as exc:
                last = exc
            else:
                last = health
                parts = ("metadatabase", "scheduler", "dag_processor")
                if all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                    return health
            time.sleep(1)
        raise ClusterError(
            f"Airflow did not become healthy in time; last answer: {last!r}\n{self.diagnostics()}"
        )

    def wait_for_workers(self, deadline: float) -> dict[str, list[str]]:
        """Wait until every Celery worker answers a ping and consumes exactly its queues."""
        from celery import Celery

        app = Celery(broker=self.redis.url(), backend=self.redis.url())
        wanted = {spec.name: sorted(spec.queues) for spec in self.workers}
        seen: dict[str, list[str]] = {}
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                replies = app.control.inspect(timeout=2.0).active_queues() or {}
                seen = {
                    hostname.split("@", 1)[0]: sorted(q["name"] for q in queues)
                    for hostname, queues in replies.items()
                }
                if all(seen.get(name) == queues for name, queues in wanted.items()):
                    return seen
                time.sleep(1)
        finally:
            app.close()
        raise ClusterError(
            f"Celery workers not ready in time: want {wanted}, seen {seen}\n{self.diagnostics()}"
        )

    def _create_pools(self) -> None:
        for name, slots in self.pools.items():
            body = {
                "name": name,
                "slots": slots,
                "description": f"test pool {name}",
                "include_deferred": False,
            }
            if name == "default_pool":
                self.api(
                    "PATCH",
                    "/api/v2/pools/default_pool?update_mask=slots",
                    {"name": name, "slots": slots},
                )
            else:
                self.api("POST", "/api/v2/pools", body)
        listed = {p["name"]: p["slots"] for p in self.api("GET", "/api/v2/pools")["pools"]}
        missing = {n: s for n, s in self.pools.items() if listed.get(n) != s}
        if missing:
            raise ClusterError(f"pools not created as asked: {missing}; Airflow lists {listed}")

    def diagnostics(self, lines: int = 30) -> str:
        parts = [f"--- {p.name} ({p.log_path}) ---\n{p.tail(lines)}" for p in self.processes]
        return "\n".join(parts)
