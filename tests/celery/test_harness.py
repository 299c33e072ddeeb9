"""The cluster harness's own parts: service checks, database claims, stopping process groups.

Quick tests (seconds): they make sure a failed or hung cluster never leaves processes, databases
or Redis data behind on a shared CI machine.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from helpers.airflow_cluster import POSTGRES
from helpers.airflow_cluster import REDIS
from helpers.airflow_cluster import ManagedProcess
from helpers.airflow_cluster import PostgresDatabase
from helpers.airflow_cluster import RedisDatabase
from helpers.airflow_cluster import Service
from helpers.airflow_cluster import not_listening
from helpers.airflow_cluster import stop_processes

pytestmark = pytest.mark.celery

# A leader that ignores the signals named in argv[1:] and starts a child (same process group) that
# ignores them too; both write their pid, then sleep.
_STUBBORN = """\
import os, signal, subprocess, sys, time
for name in sys.argv[2:]:
    signal.signal(getattr(signal, name), signal.SIG_IGN)
if sys.argv[1] == "leader":
    subprocess.Popen([sys.executable, __file__, "child", *sys.argv[2:]])
with open(f"{sys.argv[1]}.pid", "w") as handle:
    handle.write(str(os.getpid()))
while True:
    time.sleep(0.1)
"""

_QUICK_STEPS = ((signal.SIGINT, 1.5), (signal.SIGTERM, 1.5), (signal.SIGKILL, 5.0))


def _require(service: Service) -> None:
    if not service.is_listening():
        pytest.fail(service.not_listening_message(), pytrace=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it no longer runs.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _start_stubborn(tmp_path: Path, *ignored: str) -> tuple[ManagedProcess, int, int]:
    script = tmp_path / "stubborn.py"
    script.write_text(_STUBBORN)
    process = ManagedProcess(
        "stubborn",
        [sys.executable, str(script), "leader", *ignored],
        os.environ,
        tmp_path,
        tmp_path / "stubborn.log",
    )
    process.start()
    deadline = time.monotonic() + 30
    while not ((tmp_path / "leader.pid").exists() and (tmp_path / "child.pid").exists()):
        assert time.monotonic() < deadline, f"stubborn process did not start:\n{process.tail()}"
        time.sleep(0.05)
    return (
        process,
        int((tmp_path / "leader.pid").read_text()),
        int((tmp_path / "child.pid").read_text()),
    )


def test_a_service_that_is_not_listening_is_named_with_its_start_command() -> None:
    down = Service("Frobnicator", "127.0.0.1", _closed_port(), "frobnicator --daemon")
    assert not_listening([down]) == [
        f"Frobnicator is not listening on 127.0.0.1:{down.port}; start it with `frobnicator --daemon`"
    ]
    assert "pg_ctlcluster" in POSTGRES.start_command
    assert "redis-server" in REDIS.start_command


@pytest.mark.parametrize(
    ("ignored", "stopped_by"),
    [((), "SIGINT"), (("SIGINT",), "SIGTERM"), (("SIGINT", "SIGTERM"), "SIGKILL")],
)
def test_stop_escalates_until_the_whole_process_group_is_gone(
    tmp_path: Path, ignored: tuple[str, ...], stopped_by: str
) -> None:
    process, leader, child = _start_stubborn(tmp_path, *ignored)
    report = stop_processes([process], _QUICK_STEPS)
    assert list(report) == ["stubborn"] and report["stubborn"].startswith(f"{stopped_by} after "), (
        report
    )
    assert not _alive(leader)
    assert not _alive(child), "a child in the process group survived the stop"
    assert not process.group_alive()
    # Stopping again is harmless.
    assert stop_processes([process], _QUICK_STEPS) == {}


def test_redis_databases_are_claimed_once_and_freed() -> None:
    _require(REDIS)
    import redis

    first, second = RedisDatabase(), RedisDatabase()
    try:
        a, b = first.claim(), second.claim()
        assert a != b and 0 not in (a, b)
        client = redis.Redis(host=REDIS.host, port=REDIS.port, db=a)
        client.set("some-celery-key", "x")
        first.release()
        assert client.dbsize() == 0, "a released database must be left empty"
        assert first.number is None
    finally:
        first.release()
        second.release()


def test_postgres_databases_are_created_fresh_and_dropped() -> None:
    _require(POSTGRES)
    import psycopg2

    def exists(name: str) -> bool:
        conn = psycopg2.connect(
            host=POSTGRES.host, port=POSTGRES.port, user="postgres", dbname="postgres"
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    database = PostgresDatabase()
    assert database.name != PostgresDatabase().name
    database.create()
    try:
        assert exists(database.name)
        # A connection left open (a killed Airflow process) does not block the drop.
        leftover = psycopg2.connect(
            host=POSTGRES.host, port=POSTGRES.port, user="postgres", dbname=database.name
        )
    finally:
        database.drop()
    assert not exists(database.name)
    leftover.close()
    database.drop()  # idempotent
