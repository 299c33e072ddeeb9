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
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

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


class ClusterError(RuntimeError):
    """The cluster could not start or a run did not finish; the message carries the log tails."""


# --------------------------------------------------------------------------------------- services


@dataclass(frozen=True)
class Service:
    """A network service the cluster needs, and how an operator starts it on this machine kind."""

    name: str
    host: str
    port: int
    start_command: str

    def is_listening(self, timeout: float = 2.0) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def not_listening_message(self) -> str:
        return (
            f"{self.name} is not listening on {self.host}:{self.port}; "
            f"start it with `{self.start_command}`"
        )


POSTGRES = Service(
    "PostgreSQL",
    "127.0.0.1",
    5432,
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
)
REDIS = Service(
    "Redis",
    "127.0.0.1",
    6379,
    'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
)
RABBITMQ = Service("RabbitMQ", "127.0.0.1", 5672, "rabbitmq-server -detached")


def not_listening(services: Iterable[Service]) -> list[str]:
    """Messages for every service that does not accept a TCP connection (empty: all fine)."""
    return [s.not_listening_message() for s in services if not s.is_listening()]


# --------------------------------------------------------------------------------------- postgres


class PostgresDatabase:
    """A uniquely named PostgreSQL database (trust auth), created and dropped by the cluster."""

    def __init__(
        self, service: Service = POSTGRES, user: str = "postgres", prefix: str = "dkist_celery"
    ):
        self.service = service
        self.user = user
        self.name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.created = False

    @property
    def sqlalchemy_url(self) -> str:
        return (
            f"postgresql+psycopg2://{self.user}@{self.service.host}:{self.service.port}/{self.name}"
        )

    def _admin(self, statement: str) -> None:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(
            host=self.service.host,
            port=self.service.port,
            user=self.user,
            dbname="postgres",
            connect_timeout=10,
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL(statement).format(sql.Identifier(self.name)))
        finally:
            conn.close()

    def create(self) -> None:
        self._admin("CREATE DATABASE {}")
        self.created = True

    def drop(self) -> None:
        if self.created:
            # FORCE (PostgreSQL >= 13) ends connections a killed process may have left behind.
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            self.created = False


# ------------------------------------------------------------------------------------------ redis


class RedisDatabase:
    """A Redis database number claimed for one cluster: the Celery broker and result backend.

    A database is claimed by setting a claim key with NX in an empty database, so parallel test
    sessions (xdist workers, CI jobs on one machine) never share one. Database 0 is left alone.
    """

    CLAIM_KEY = "dkist-processing-core:test-cluster-claim"

    def __init__(self, service: Service = REDIS, claim_seconds: int = 3600):
        self.service = service
        self.claim_seconds = claim_seconds
        self.token = uuid.uuid4().hex
        self.number: int | None = None

    def url(self) -> str:
        if self.number is None:
            raise ClusterError("no Redis database claimed yet")
        return f"redis://{self.service.host}:{self.service.port}/{self.number}"

    def _client(self, number: int):
        import redis

        return redis.Redis(
            host=self.service.host, port=self.service.port, db=number, socket_timeout=10
        )

    def claim(self, start_hint: str = "") -> int:
        count = int(self._client(0).config_get("databases").get("databases", 16))
        candidates = list(range(1, count))
        # Start at a place derived from the caller (e.g. the xdist worker id) to avoid contention.
        offset = sum(start_hint.encode()) % len(candidates) if start_hint else 0
        for number in candidates[offset:] + candidates[:offset]:
            client = self._client(number)
            if not client.set(self.CLAIM_KEY, self.token, nx=True, ex=self.claim_seconds):
                continue
            if client.dbsize() == 1:
                self.number = number
                return number
            # Someone else's data lives here without a claim: give it back untouched.
            if client.get(self.CLAIM_KEY) == self.token.encode():
                client.delete(self.CLAIM_KEY)
        raise ClusterError(
            f"no free Redis database on {self.service.host}:{self.service.port} "
            f"(all of 1..{count - 1} hold data or are claimed by other test runs)"
        )

    def release(self) -> None:
        if self.number is None:
            return
        client = self._client(self.number)
        if client.get(self.CLAIM_KEY) == self.token.encode():
            client.flushdb()
        self.number = None


# -------------------------------------------------------------------------------------- processes


# Started with SIGINT ignored (e.g. from a shell's background job), a program inherits "ignore"
# and Python then installs no KeyboardInterrupt handler. This constant prelude restores the
# default dispositions, then replaces itself with the real command (same pid).
_EXEC_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for sig in (signal.SIGINT, signal.SIGTERM):\n"
    "    signal.signal(sig, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


class ManagedProcess:
    """One long-running command in its own process group, output to its own log file.

    SIGINT and SIGTERM start with their default dispositions whatever the caller inherited, so
    the stop sequence means the same thing in a terminal, under CI and in a background job.
    """

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, *self.argv],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach its children too
            )

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def group_alive(self) -> bool:
        """True while the leader or any process of its group still runs (reaps the leader).

        Zombies do not count: an orphaned child that exited waits for init to reap it, which
        some container inits never do.
        """
        if self.popen is None:
            return False
        self.popen.poll()
        try:
            os.killpg(self.popen.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return _group_has_running_member(self.popen.pid)

    def signal_group(self, sig: signal.Signals) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _group_has_running_member(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is not a zombie (Linux /proc; elsewhere: assume yes)."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_processes(
    processes: Sequence[ManagedProcess],
    steps: Sequence[tuple[signal.Signals, float]] = (
        (signal.SIGINT, 30.0),
        (signal.SIGTERM, 15.0),
        (signal.SIGKILL, 5.0),
    ),
) -> dict[str, str]:
    """Stop process groups together: each signal goes to every live group, then a bounded wait.

    Returns, per process name, the signal that finally stopped it and when, e.g.
    ``"SIGINT after 2.1 s"`` (for diagnostics).
    """
    stopped_by: dict[str, str] = {}
    began = time.monotonic()
    remaining = [p for p in processes if p.group_alive()]
    for sig, bound in steps:
        if not remaining:
            break
        for process in remaining:
            process.signal_group(sig)
        deadline = time.monotonic() + bound
        while remaining and time.monotonic() < deadline:
            still = []
            for process in remaining:
                if process.group_alive():
                    still.append(process)
                else:
                    stopped_by[process.name] = f"{sig.name} after {time.monotonic() - began:.1f} s"
            remaining = still
            if remaining:
                time.sleep(0.2)
    for process in remaining:
        stopped_by[process.name] = f"still running after {time.monotonic() - began:.1f} s"
    return stopped_by


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """While active, SIGTERM (a CI timeout, ``kill``) raises KeyboardInterrupt in the main thread.

    pytest then still runs the fixture finalizers, so the cluster is stopped and its databases
    dropped instead of being orphaned by a terminated test process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _free_port() -> int:
    """A free TCP port below Linux's ephemeral range, so bind(0) users elsewhere never get it."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ClusterError("no free TCP port found in 20000-32000 for the Airflow API server")


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class AirflowCeleryCluster:
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

    # ---------------------------------------------------------------- CLI and REST

    def run_cli(
        self, args: Sequence[str], timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS`` with the cluster's configuration; raise with its output on failure."""
        result = subprocess.run(
            [self.python, "-m", "airflow", *args],
            env=self.airflow_env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"`airflow {' '.join(args)}` exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """Call the REST API (simple auth manager, all users admin) and return the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise ClusterError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        return json.loads(payload) if payload else None

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120.0) -> None:
        """Wait until the DAG processor has serialized every DAG (and report import errors)."""
        deadline = time.monotonic() + timeout
        pending = set(dag_ids)
        while pending and time.monotonic() < deadline:
            self._check_alive()
            for dag_id in sorted(pending):
                try:
                    self.api(
                        "GET", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/details", timeout=10
                    )
                except ClusterError:
                    continue
                pending.discard(dag_id)
            if pending:
                time.sleep(2)
        if pending:
            errors = self.api("GET", "/api/v2/importErrors")
            raise ClusterError(
                f"DAGs not parsed in {timeout:.0f} s: {sorted(pending)}; import errors: "
                f"{json.dumps(errors, indent=1)[:4000]}\n{self.diagnostics()}"
            )

    def trigger(self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None) -> str:
        """Start a DAG run through the REST API; returns its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if run_id:
            body["dag_run_id"] = run_id
        self.api("PATCH", f"/api/v2/dags/{urllib.parse.quote(dag_id)}", {"is_paused": False})
        answer = self.api("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns", body)
        return answer["dag_run_id"]

    def wait_for_runs(
        self,
        runs: Iterable[tuple[str, str]],
        timeout: float,
        on_poll: Callable[[], None] | None = None,
    ) -> dict[tuple[str, str], str]:
        """Wait until each (dag_id, run_id) reaches success/failed; returns their states."""
        deadline = time.monotonic() + timeout
        states: dict[tuple[str, str], str] = {run: "" for run in runs}
        while time.monotonic() < deadline:
            self._check_alive()
            for dag_id, run_id in states:
                if states[(dag_id, run_id)] in _TERMINAL_RUN_STATES:
                    continue
                answer = self.api(
                    "GET",
                    f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}",
                )
                states[(dag_id, run_id)] = answer["state"]
            if all(s in _TERMINAL_RUN_STATES for s in states.values()):
                return states
            if on_poll:
                on_poll()
            time.sleep(2)
        tis = {f"{d}/{r}": self.task_states(d, r) for d, r in states}
        raise ClusterError(
            f"DAG runs not finished in {timeout:.0f} s: {states}; task states: {tis}\n{self.diagnostics()}"
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api(
            "GET",
            f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances",
        )
        return answer["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def diagnostics(self, lines: int = 30) -> str:
        parts = [f"--- {p.name} ({p.log_path}) ---\n{p.tail(lines)}" for p in self.processes]
        return "\n".join(parts)
