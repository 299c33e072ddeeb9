"""The real DKIST client pipelines work unchanged on this checkout's core (issue 12, part 4).

Clients: dkist-processing-test 1.46.0 and dkist-processing-ops 1.11.8 (both on
dkist-processing-common 14.8.0), in Python 3.13 venvs built from tests/clients/pins-py313.txt:
"old" with dkist-processing-core 7.5.0, "new" with our five wheels. How the exact
``dkist-processing-core==7.5.0`` pin of dkist-processing-common is overridden: everything is
installed with ``--no-deps`` (tests/helpers/client_venvs.py), and ``uv pip check`` then names
that pin and nothing else (checked below). Each check runs in the client venv; 7.5.0 is the
reference for what the clients and the Airflow scheduler must see. ``DKIST_CHECK_CLIENTS``
(scripts/check_client.py) runs the same checks on other pipelines from the index instead.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clients.support import Client
from clients.support import client_env
from clients.support import require_services
from clients.support import run_worker_command
from clients.support import schedule_differences
from clients.support import scratch_inventory_on
from clients.support import selected_clients
from clients.support import step_value
from dkist_processing_core.worker import read_events
from helpers.client_venvs import python313
from helpers.client_venvs import uv_binary
from helpers.release import run
from helpers.services import private_redis

pytestmark = pytest.mark.clients

CORES = ["old", "new"]
CLIENTS = selected_clients()
PINNED = [client for client in CLIENTS if client.needs_internet is not None]
ON_DEMAND = [client for client in CLIENTS if client.needs_internet is None]
Probe = Callable[[str, Client], dict[str, Any]]


@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_new_venv_breaks_only_the_old_core_pin(
    venvs: Callable[[Client], dict[str, Path]], client: Client
) -> None:
    result = run([uv_binary(), "pip", "check", "--python", venvs(client)["new"]])
    output = result.stdout + result.stderr  # uv writes the report to stderr
    problems = [line for line in output.splitlines() if "requires" in line]
    assert problems, f"expected uv pip check to name common's 7.5.0 pin:\n{output}"
    unexpected = [line for line in problems if client.old_core not in line]
    assert not unexpected, (
        "the new client venv misses dependencies of our wheels; add them to "
        "tests/clients/pins-py313.txt:\n" + "\n".join(unexpected)
    )


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_core_version_installed(probe: Probe, core: str, client: Client) -> None:
    version = step_value(probe(core, client), "core_version", "importlib.metadata.version")
    assert (f"dkist-processing-core=={version}" == client.old_core) == (core == "old"), (
        f"dkist-processing-core {version} in the {core} venv"
    )


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_client_modules_import(probe: Probe, core: str, client: Client) -> None:
    modules = step_value(
        probe(core, client), "imports", f"importing {client.package} ({core} core)"
    )
    assert f"{client.package}.workflows" in modules


@pytest.mark.parametrize("step", ["validate", "export_dags", "export_notebooks"])
@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_build_utils(probe: Probe, core: str, client: Client, step: str) -> None:
    """validate_workflows(module), export_dags(module, path), export_notebooks(module, path)."""
    value = step_value(
        probe(core, client), step, f"{step} of {client.package}.workflows ({core} core)"
    )
    if step != "validate" and client.dag_count is not None:  # else: compared with 7.5.0's below
        assert len(value) == client.dag_count, f"{step} wrote {len(value)} files: {value}"


@pytest.mark.parametrize("step", ["export_dags", "export_notebooks"])
@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_exported_file_names_match_the_previous_core(
    probe: Probe, client: Client, step: str
) -> None:
    """Deployments and dkist-processing-common (it opens ``{dag_name}.ipynb``) rely on the names."""
    old = step_value(probe("old", client), step, f"{step} with 7.5.0")
    new = step_value(probe("new", client), step, f"{step} with our core")
    assert new == old


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_common_provenance_records_the_core(probe: Probe, core: str, client: Client) -> None:
    """WorkflowTaskBase.library_versions walks every dkist* dist's requirements by name."""
    require_services("Redis")
    versions = step_value(
        probe(core, client), "library_versions", f"library_versions ({core} core)"
    )
    core_version = step_value(probe(core, client), "core_version", "importlib.metadata.version")
    assert versions.get("dkist-processing-core") == core_version, versions


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_exported_dags_load_in_dagbag(probe: Probe, core: str, client: Client) -> None:
    report = probe(core, client)
    files = step_value(report, "export_dags", f"export_dags ({core} core)")
    bag = step_value(report, "dagbag", f"DagBag of the {core} core's export")
    assert not bag["import_errors"], f"DagBag import errors ({core} core): {bag['import_errors']}"
    assert sorted(dag["file"] for dag in bag["dags"].values()) == files
    assert len(bag["dags"]) == (client.dag_count or len(files))


@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_dags_schedule_like_the_previous_core(probe: Probe, client: Client) -> None:
    """Same DAG ids, tags (as sets), task ids, upstreams, queues, pools, retries, retry_delay."""
    old = step_value(probe("old", client), "dagbag", "DagBag of the 7.5.0 export")["dags"]
    new = step_value(probe("new", client), "dagbag", "DagBag of our export")["dags"]
    differences = schedule_differences(old, new)
    assert not differences, "\n".join(differences)


def _operator(report: dict[str, Any], task_id: str) -> tuple[str, dict[str, Any]]:
    """(dag id, task) of the smallest DAG (then first by id) that has ``task_id``."""
    dags = step_value(report, "dagbag", "DagBag of our export")["dags"]
    having = sorted(
        (len(dag["tasks"]), dag_id) for dag_id, dag in dags.items() if task_id in dag["tasks"]
    )
    assert having, f"no exported DAG has a task {task_id}"
    dag_id = having[0][1]
    return dag_id, dags[dag_id]["tasks"][task_id]


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("client", PINNED, ids=str)
def test_worker_command_runs_a_real_task(
    probe: Probe,
    task_wheelhouses: dict[str, Path],
    tmp_path: Path,
    core: str,
    client: Client,
) -> None:
    """The exported (new core) BashOperator command runs the client's task, offline.

    "old": the task venv resolves the pipeline with core 7.5.0 (common pins it, as every pipeline
    does today); "new": common's pin rewritten to ``dkist-processing-core>=8`` + our wheels.
    The node's requirement is ``{dist}[frozen]=={version}``; the ``frozen`` extra pins
    ``certifi==2026.10.19``, which this machine's index does not serve (only ``.post1``), so the
    ``[frozen]`` is dropped from the requirement here.
    """
    require_services("Redis")
    dag_id, task = _operator(probe("new", client), client.task)
    command, env = task["bash_command"], dict(task["env"] or {})
    assert "{{" not in command, f"{dag_id}.{client.task}: bash_command still holds a template"
    recipe_run_id = random.randint(10**8, 10**9)  # a scratch folder and Redis namespace of its own
    env["RECIPE_RUN_ID"] = str(recipe_run_id)
    env["AIRFLOW_CTX_DAG_ID"] = dag_id  # what Airflow adds to every task's environment
    frozen = [key for key, value in env.items() if "[frozen]" in str(value)]
    assert frozen, f"{dag_id}.{client.task}: no [frozen] requirement in the operator env {env}"
    for key in frozen:
        env[key] = env[key].replace("[frozen]", "")

    result = run_worker_command(command, env, python313(), task_wheelhouses[core], tmp_path)
    output = result.stdout + result.stderr
    shown = output[-8000:]
    assert result.returncode == 0, f"{dag_id}.{client.task} exited {result.returncode}:\n{shown}"
    # Each line once: the clients also set up loguru through dkist_service_configuration.logging.
    for line in [f"{client.task} complete", *client.log_lines]:
        count = output.count(line)
        assert count == 1, f"the task logged {line!r} {count} times (expected once):\n{shown}"
    events = list(read_events(result.stdout))
    exits = [(fields["task"], fields["status"]) for event, fields in events if event == "exit"]
    assert exits == [(client.task, 0)], shown
    (listing,) = [fields["distributions"] for event, fields in events if event == "packages"]
    core_line = re.compile(r"dkist-processing-core(?:-task)?==\S+")
    installed = [line for line in listing if core_line.fullmatch(line)]
    (setup,) = [fields for event, fields in events if event == "setup"]
    if core == "old":
        assert installed == [client.old_core], f"task venv cores {installed}"
        assert setup["runner"] == "contract"  # a 7.x venv: the statement every core understands
    else:
        assert client.old_core not in installed, f"task venv cores {installed}"
        assert any(line.startswith("dkist-processing-core-task==") for line in installed), installed
        assert setup["runner"] == "run_task"


# The statement both cores understand (7.5.0 has no run_task). argv: module class id name version.
STABLE_CONTRACT = """import importlib, sys
cls = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
with cls(recipe_run_id=int(sys.argv[3]), workflow_name=sys.argv[4], workflow_version=sys.argv[5]) as t:
    t()
"""


if ON_DEMAND:  # pipelines named on demand only (an empty parametrization would be a skip)

    @pytest.mark.parametrize("core", CORES)
    @pytest.mark.parametrize("client", ON_DEMAND, ids=str)
    def test_real_task_runs_in_the_client_venv(
        probe: Probe,
        venvs: Callable[[Client], dict[str, Path]],
        tmp_path: Path,
        core: str,
        client: Client,
    ) -> None:
        """A pipeline checked on demand runs its task (``TASKS``) in its own venv: "new" through
        ``run_task``, "old" through the contract both cores share. (Its dependencies hold sdists, e.g.
        pims, which the worker command's offline wheelhouse cannot install.)"""
        require_services("Redis")
        assert client.task, (
            f"no real task for {client.dist}: add one to TASKS in clients/support.py"
        )
        dag_id, task = _operator(probe("new", client), client.task)
        # what the worker program reads: DKIST_TASK (module.Class), the DAG id ({workflow}_{version})
        module = task["env"]["DKIST_TASK"].rpartition(".")[0]
        workflow = dag_id.removesuffix(f"_{client.version}")
        recipe_run_id = str(random.randint(10**8, 10**9))
        python = venvs(client)[core]
        command = [
            python,
            "-c",
            STABLE_CONTRACT,
            module,
            client.task,
            recipe_run_id,
            workflow,
            client.version,
        ]
        if core == "new":
            command = [python, "-m", "dkist_processing_core.run_task", "--module", module, "--task", client.task,
                       "--workflow-name", workflow, "--workflow-version", client.version, "--recipe-run-id", recipe_run_id]  # fmt: skip
        with private_redis(tmp_path / "redis") as port:
            env = client_env(
                BUILD_VERSION=client.version,
                SCRATCH_BASE_PATH=str(tmp_path / "scratch"),
                MESH_CONFIG=scratch_inventory_on(port),
            )
            result = run(command, env=env, cwd=tmp_path, timeout=1800)
        output = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"{dag_id}.{client.task} exited {result.returncode}:\n{output[-8000:]}"
        )
        completed = len(re.findall(rf"\.{client.task} complete$", output, re.MULTILINE))
        assert completed == 1, (
            f"'{client.task} complete' logged {completed} times:\n{output[-8000:]}"
        )


@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_client_suite_same_on_new_core(
    client_suite: Callable[[str, Client], dict[str, Any]], client: Client
) -> None:
    """The client's own tests (shipped in its wheel) have the same outcomes as on 7.5.0."""
    require_services("Redis", "RabbitMQ")
    old, new = client_suite("old", client), client_suite("new", client)
    assert old["outcomes"], f"no test ran on 7.5.0:\n{old['output']}"
    failing = {test for test, outcome in old["outcomes"].items() if outcome in ("failure", "error")}
    if client.needs_internet is None and failing:  # on demand: listed (services, the internet)
        warnings.warn(f"{client.dist}: failing on both cores: {sorted(failing)}", stacklevel=1)
    assert client.needs_internet is None or failing <= client.needs_internet, (
        f"{client.dist}'s tests fail on 7.5.0 beyond the known internet ones: "
        f"{sorted(failing - client.needs_internet)}\n{old['output']}"
    )
    changed = {
        test: f"{old['outcomes'].get(test)} -> {new['outcomes'].get(test)}"
        for test in sorted(set(old["outcomes"]) | set(new["outcomes"]))
        if old["outcomes"].get(test) != new["outcomes"].get(test)
    }
    assert not changed, f"outcomes differ from 7.5.0's: {changed}\n{new['output']}"
