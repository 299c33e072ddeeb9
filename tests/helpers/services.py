"""The services the distributed-Airflow test needs on 127.0.0.1: probes, and a database of each test's own.

:class:`Service` says whether a service listens and, if not, how to start it. :class:`PostgresDatabase`
is a fresh PostgreSQL database with a unique name (dropped at the end); :class:`RedisDatabase` claims
a Redis database number for one cluster alone (flushed and released at the end, never number 0).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "POSTGRES",
    "RABBITMQ",
    "REDIS",
    "ClusterError",
    "PostgresDatabase",
    "RedisDatabase",
    "Service",
    "free_port",
    "not_listening",
    "private_redis",
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


def free_port() -> int:
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
    raise ClusterError("no free TCP port found in 20000-32000")


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[int]:
    """A Redis server of the caller's own on a free port (nothing kept on disk); yields the port.

    For code that fills Redis databases and does not clean up after itself (the client pipelines'
    own test suites), so that the shared Redis on 6379 stays as it was.
    """
    server = shutil.which("redis-server")
    if server is None:
        raise ClusterError("redis-server is not installed: apt-get install redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(folder / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not Service("Redis", "127.0.0.1", port, "").is_listening(timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(
                    f"redis-server on port {port} did not start; see {folder / 'redis.log'}"
                )
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
