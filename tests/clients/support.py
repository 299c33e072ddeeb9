"""The real client pipelines under test and the subprocesses that exercise them.

Each check runs in a client venv (Python 3.13, tests/helpers/client_venvs.py), never in the
test process: ``run_probe`` (imports, build_utils, DagBag; see client_probe.py),
``run_client_suite`` (the client's own tests shipped in its wheel) and ``run_worker_command``
(the exported BashOperator's command, the worker program, the way a worker runs it).

The clients are :data:`CLIENTS`, pinned by tests/clients/pins-py313.txt; ``DKIST_CHECK_CLIENTS``
(``DIST[==VERSION] ...``, set by scripts/check_client.py) replaces them with any pipelines from
the package index, each resolved for Python 3.13 by uv (:func:`on_demand_client`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.client_venvs import CACHE_ROOT
from helpers.client_venvs import OLD_CORE
from helpers.client_venvs import PINS
from helpers.client_venvs import _python_version
from helpers.client_venvs import digest
from helpers.client_venvs import python313
from helpers.client_venvs import uv_binary
from helpers.release import build_once
from helpers.release import run
from helpers.services import private_redis
from helpers.task_modules import clean_environment

__all__ = [
    "CLIENTS",
    "Client",
    "client_env",
    "on_demand_client",
    "require_services",
    "run_client_suite",
    "run_probe",
    "run_worker_command",
    "selected_clients",
    "step_value",
]

PROBE = Path(__file__).with_name("client_probe.py")


@dataclass(frozen=True)
class Client:
    package: str
    dist: str
    version: str
    dag_count: int | None  # exported by dkist-processing-core 7.5.0 (checked 2026-12-02)
    task: str  # the real task run through the worker command
    log_lines: tuple[str, ...]  # lines the client's own task code logs when it ran
    # Tests of the client's own suite that fail only because they need the internet (beyond the
    # package index). Measured on 7.5.0 here: none; they must be the same on both cores. None
    # (a pipeline checked on demand): whatever fails on both cores is listed, not refused.
    needs_internet: frozenset[str] | None = frozenset()
    pins: Path = PINS  # the client's resolved dependencies, without dkist-processing-core
    old_core: str = OLD_CORE  # the core the client resolves to
    suite_timeout: float = 1500  # seconds for the client's own tests

    def __str__(self) -> str:
        return self.dist


CLIENTS = [
    # NoOpTask: a bare TaskBase; needs no service.
    Client("dkist_processing_test", "dkist-processing-test", "1.46.0", 32, "NoOpTask", ()),
    # SmokeTask: a dkist-processing-common WorkflowTaskBase; needs Redis (tags, at
    # localhost:6379 by common's default) and a writable scratch folder, nothing else (no
    # metadata store: it records no provenance).
    Client(
        "dkist_processing_ops",
        "dkist-processing-ops",
        "1.11.8",
        5,
        "SmokeTask",
        (
            "Smoke test read/write validation completed successfully.",
            "Smoke test configuration logging completed successfully.",
        ),
    ),
]

# The real task of an on-demand pipeline: a class of its DAGs that runs on an empty scratch folder
# with Redis alone (found by running each task class on 7.5.0). dkist-processing-cryonirsp has no
# task of its own that runs without input frames or constants: common's QualityL1Metrics, a node
# of its DAGs.
TASKS = {
    "dkist_processing_vbi": "VbiQualityL0Metrics",
    "dkist_processing_visp": "VispWriteL1Frame",
    "dkist_processing_cryonirsp": "QualityL1Metrics",
    "dkist_processing_dlnirsp": "DlnirspWriteL1Frame",
}


def on_demand_client(spec: str) -> Client:
    """A pipeline ``DIST[==VERSION]`` from the index (no version: the latest), resolved once.

    ``uv pip compile`` of ``DIST[test]==VERSION`` and pytest for Python 3.13 (not ``[frozen]``,
    whose certifi pin this machine's index lacks), cached under CACHE_ROOT/resolutions; its
    dkist-processing-core line is kept apart (the "old" core), the rest are the venvs' pins.
    """
    dist, _, version = spec.partition("==")
    python = python313()
    base = [uv_binary(), "pip", "compile", "-", "--python", python, "--no-annotate", "--no-header"]
    if not version:
        found = re.search(
            rf"^{re.escape(dist)}==(\S+)$", run([*base, "--no-deps"], input=dist).stdout, re.M
        )
        assert found, f"no release of {dist} on the index"
        version = found.group(1)
    requirements = f"{dist}[test]=={version}\npytest\n"

    def produce(folder: Path) -> None:
        result = run([*base, "--python-platform", "x86_64-manylinux_2_28"], input=requirements)
        assert result.returncode == 0, f"uv pip compile {dist}=={version} failed:\n{result.stderr}"
        lines = result.stdout.splitlines()
        (core,) = [line for line in lines if line.startswith("dkist-processing-core==")]
        (folder / "core.txt").write_text(core)
        (folder / "pins.txt").write_text("\n".join(line for line in lines if line != core))

    key = digest(requirements, _python_version(python))
    folder = build_once(CACHE_ROOT / "resolutions", f"{dist}-{version}-{key}", produce)
    package = dist.replace("-", "_")
    return Client(
        package, dist, version, None, TASKS.get(package, ""), (), None, folder / "pins.txt",
        (folder / "core.txt").read_text(), 3600,
    )  # fmt: skip


def selected_clients() -> list[Client]:
    """The pipelines named by ``DKIST_CHECK_CLIENTS``, else :data:`CLIENTS`."""
    return [
        on_demand_client(spec) for spec in os.environ.get("DKIST_CHECK_CLIENTS", "").split()
    ] or CLIENTS


SERVICES = {
    "RabbitMQ": (
        5672,
        "start it with `rabbitmq-server -detached` (apt-get install rabbitmq-server)",
    ),
    "Redis": (6379, "start it with `redis-server --daemonize yes` (apt-get install redis-server)"),
}


def require_services(*names: str) -> None:
    """Fail (never skip) with how to start a service the clients need on 127.0.0.1."""
    for name in names:
        port, how = SERVICES[name]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
        except OSError:
            raise AssertionError(f"{name} is not listening on 127.0.0.1:{port}: {how}") from None


def client_env(**variables: str) -> dict[str, str]:
    """This environment without our product's, pytest's or an outer venv's variables."""
    # clean_environment drops PIP_* too; pip then reads no configuration file of this machine.
    env = clean_environment(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for key in list(env):
        if (
            key.startswith(("PYTEST_", "PYTHON", "VIRTUAL_ENV", "AIRFLOW"))
            or key == "COV_CORE_SOURCE"
        ):
            del env[key]
    env.update(variables)
    return env


def _tail(text: str, size: int = 6000) -> str:
    return text if len(text) <= size else "...\n" + text[-size:]


def run_probe(python: Path, client: Client, folder: Path) -> None:
    """Write ``folder/report.json`` (a crash of the probe itself is reported as ``crash``)."""
    env = client_env(
        AIRFLOW_HOME=str(folder / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        BUILD_VERSION=client.version,
    )
    (folder / "cwd").mkdir()
    result = subprocess.run(
        [python, "-I", PROBE, client.package, folder],
        env=env,
        cwd=folder / "cwd",
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = folder / "report.json"
    if result.returncode != 0 or not report.exists():
        report.write_text(json.dumps({"crash": _tail(result.stdout + result.stderr)}))


SCHEDULING_FIELDS = ("upstream", "queue", "pool", "retries", "retry_delay")
"""What a task of an exported DAG must have as in the previous core's export."""


def schedule_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How the DAGs ``new`` (probe's ``dagbag["dags"]``) schedule differently from ``old``.

    Same DAG ids, tags (as sets), task ids, and per task :data:`SCHEDULING_FIELDS`.
    """
    differences = []
    if sorted(new) != sorted(old):
        differences.append(f"DAG ids differ from 7.5.0's: {sorted(set(old) ^ set(new))}")
    for dag_id in sorted(set(old) & set(new)):
        old_dag, new_dag = old[dag_id], new[dag_id]
        if set(new_dag["tags"]) != set(old_dag["tags"]):
            differences.append(f"{dag_id}: tags {new_dag['tags']} != 7.5.0's {old_dag['tags']}")
        if sorted(new_dag["tasks"]) != sorted(old_dag["tasks"]):
            differences.append(
                f"{dag_id}: tasks {sorted(new_dag['tasks'])} != {sorted(old_dag['tasks'])}"
            )
            continue
        for task_id, old_task in sorted(old_dag["tasks"].items()):
            for field in SCHEDULING_FIELDS:
                if new_dag["tasks"][task_id][field] != old_task[field]:
                    differences.append(
                        f"{dag_id}.{task_id}: {field} {new_dag['tasks'][task_id][field]!r} "
                        f"!= 7.5.0's {old_task[field]!r}"
                    )
    return differences


def step_value(report: dict[str, Any], name: str, what: str) -> Any:
    """The value of a probe step; fails with the client's traceback when the step failed."""
    assert "crash" not in report, f"{what}: the probe crashed:\n{report['crash']}"
    step = report[name]
    assert step["ok"], f"{what} failed:\n{_tail(step['error'])}"
    return step["value"]


def scratch_inventory_on(port: int) -> str:
    """``MESH_CONFIG`` pointing dkist-processing-common's scratch inventory (Redis) at ``port``."""
    service = {"mesh_address": "127.0.0.1", "mesh_port": port}
    return json.dumps({"automated-processing-scratch-inventory": service})


def run_client_suite(
    python: Path, client: Client, folder: Path, *, timeout: float = 1500, workers: int = 0
) -> None:
    """Run the client's own tests; write ``folder/outcome.json`` (test id -> outcome, timing).

    The suites fill Redis databases and leave them; they get a Redis server of their own.
    ``workers``: pytest-xdist processes (the clients' test extras have it); 0 runs in one process.
    """
    junit = folder / "junit.xml"
    (folder / "cwd").mkdir()
    command: list[str | Path] = [
        python, "-m", "pytest", "--pyargs", f"{client.package}.tests",
        "-p", "no:cacheprovider", "-q", f"--junitxml={junit}",
    ]  # fmt: skip
    if workers:
        command += ["-n", str(workers)]
    started = time.monotonic()
    with private_redis(folder / "redis") as port:
        result = subprocess.run(
            command,
            env=client_env(MESH_CONFIG=scratch_inventory_on(port)),
            cwd=folder / "cwd",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    _write_outcome(folder, junit, result, started)


def _write_outcome(
    folder: Path, junit: Path, result: subprocess.CompletedProcess[str], started: float
) -> None:
    outcomes: dict[str, str] = {}
    if junit.exists():
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[f"{case.get('classname')}::{case.get('name')}"] = (
                kinds[0] if kinds else "passed"
            )
    outcome = {
        "returncode": result.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": outcomes,
        "output": _tail(result.stdout + result.stderr),
    }
    (folder / "outcome.json").write_text(json.dumps(outcome, indent=1))


def run_worker_command(
    bash_command: str, operator_env: dict[str, str], python313: Path, wheelhouse: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a BashOperator's command as a worker does: ``bash -c``, its env appended to ours.

    The command runs the worker program with the operator env's ``DKIST_WORKER_PYTHON``: the
    interpreter that loaded the DAG (the probe's "new" client venv, which has core-task, as the
    Airflow side has). ``python3`` on PATH, which the task's venv is made from, is the clients'
    Python 3.13 (a wrapper script, so the interpreter keeps its real path); pip sees only
    ``wheelhouse`` (offline: ``PIP_NO_INDEX``, no pip config).
    """
    bin_dir = cwd / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{python313}" "$@"\n')
    wrapper.chmod(0o755)
    env = client_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(operator_env)
    # The task writes tags to dkist-processing-common's scratch inventory: a Redis of its own.
    with private_redis(cwd / "redis") as port:
        env["MESH_CONFIG"] = scratch_inventory_on(port)
        return subprocess.run(
            ["bash", "-c", bash_command],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=1200,
        )
