"""``worker run``: prepare, set up and run one task of a pipeline on an Airflow worker.

1. prepare: check the inputs; the recipe run id first (exit 2 before anything is printed,
   installed or run); take a hold in the venv cache when it applies.
2. set up: the task's venv, made from ``python3`` on PATH by uv or pip, throw-away or from the
   per-version cache (:mod:`._cache`).
3. run: the task in that venv, ``python -m dkist_processing_core.run_task`` when the venv has
   core-task, else the statement every core's worker ran (:data:`CONTRACT`, for pipelines that
   still pin dkist-processing-core 7.x); the worker's exit status is the task's.

Signals (SIGTERM, SIGINT, SIGHUP) reach the task while it runs; before it starts they stop the
worker (exit 128 + the signal's number). The scratch folder and the hold are removed either way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dkist_processing_core._pinned import canonical_name
from dkist_processing_core._pinned import parse_pinned
from dkist_processing_core.environment_setup import ENVIRONMENT_VARIABLES
from dkist_processing_core.recipe_run_id import RECIPE_RUN_ID_VARIABLE
from dkist_processing_core.recipe_run_id import RecipeRunIdError
from dkist_processing_core.recipe_run_id import parse_recipe_run_id
from dkist_processing_core.worker._cache import Cache
from dkist_processing_core.worker._cache import cache_key
from dkist_processing_core.worker._cache import cacheable
from dkist_processing_core.worker._install import Installer
from dkist_processing_core.worker._install import distributions
from dkist_processing_core.worker._protocol import WorkerError
from dkist_processing_core.worker._protocol import emit
from dkist_processing_core.worker._protocol import note

__all__ = ["CONTRACT", "NOMAD_VARIABLES", "TASK_VARIABLES", "run_worker"]

#: Set for every task: by the DAG file, the task's dotted path (``module.Class``) and what to
#: install, ``dist[extras]==version`` (the version is the workflow's); by Airflow, the DAG id,
#: ``{workflow name}_{version}`` by construction (naming.dag_name).
TASK_VARIABLES = ("DKIST_TASK", "DKIST_REQUIREMENT", "AIRFLOW_CTX_DAG_ID")
#: Logged for operators (a fixed list: never every NOMAD_*, so NOMAD_TOKEN stays out of the log).
NOMAD_VARIABLES = (
    "NOMAD_ALLOC_ID",
    "NOMAD_ALLOC_NAME",
    "NOMAD_GROUP_NAME",
    "NOMAD_JOB_NAME",
    "NOMAD_DC",
)
#: ``python -c`` text for a task venv without core-task: every core understands this statement.
#: The worker gives it the checked values as DKIST_TASK_MODULE, DKIST_TASK_CLASS, RECIPE_RUN_ID,
#: DKIST_WORKFLOW_NAME and DKIST_WORKFLOW_VERSION.
CONTRACT = """\
import os
from importlib import import_module

environ = os.environ
task_class = getattr(import_module(environ["DKIST_TASK_MODULE"]), environ["DKIST_TASK_CLASS"])
with task_class(
    recipe_run_id=int(environ["RECIPE_RUN_ID"]),
    workflow_name=environ["DKIST_WORKFLOW_NAME"],
    workflow_version=environ["DKIST_WORKFLOW_VERSION"],
) as task:
    task()
"""
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_CACHED = ("hit", "built", "rebuilt")  # the task must not write bytecode into a cached venv


@dataclass(frozen=True)
class _Task:
    recipe_run_id: int
    module: str
    name: str
    workflow_name: str
    workflow_version: str
    requirement: str


@dataclass(frozen=True)
class _Environment:
    python: str
    runner: str  # "run_task" or "contract"
    installer: str
    cache: str
    start_ns: int
    end_ns: int


class _Stopped(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _prepare(environ: dict[str, str]) -> _Task:
    try:
        recipe_run_id = parse_recipe_run_id(environ.get(RECIPE_RUN_ID_VARIABLE, ""))
    except RecipeRunIdError as error:
        raise WorkerError(
            f"{error}; trigger the DAG with the conf key recipe_run_id set to the id", 2
        ) from None
    missing = [name for name in TASK_VARIABLES if not environ.get(name)]
    if missing:
        raise WorkerError(f"{', '.join(missing)} not set: run the task from its DAG file", 2)
    task, requirement = environ["DKIST_TASK"], environ["DKIST_REQUIREMENT"]
    module, _, name = task.rpartition(".")
    if not (_DOTTED.fullmatch(task) and module):
        raise WorkerError(
            f"DKIST_TASK must be the task's module path and class name, got {task!r}", 2
        )
    pinned = parse_pinned(requirement)
    if pinned is None:
        raise WorkerError(
            f"DKIST_REQUIREMENT must be dist[extras]==version, got {requirement!r} "
            "(PEP 508 names and a PEP 440 version)",
            2,
        )
    version = pinned.version
    workflow_name = environ["AIRFLOW_CTX_DAG_ID"].removesuffix(f"_{version}")
    if workflow_name == environ["AIRFLOW_CTX_DAG_ID"] or not workflow_name:
        raise WorkerError(
            f"the DAG id {environ['AIRFLOW_CTX_DAG_ID']!r} is not a workflow name followed by "
            f"_{version}, the version of DKIST_REQUIREMENT",
            2,
        )
    return _Task(recipe_run_id, module, name, workflow_name, version, requirement)


def _runner_for(listing: list[str]) -> str:
    names = {canonical_name(line.partition("==")[0]) for line in listing}
    return "run_task" if "dkist-processing-core-task" in names else "contract"


def _set_up(
    environ: dict[str, str], requirement: str, scratch: Path, cache: Cache | None, hold: int | None
) -> _Environment:
    started = time.time_ns()
    python = shutil.which("python3", path=environ.get("PATH"))
    if python is None:
        raise WorkerError("no python3 on PATH: the task's venv is made from the worker's python3")
    installer = Installer(environ, scratch, python)
    outcome = "off" if cache is None else "error" if cacheable(requirement) else "uncacheable"
    if outcome == "uncacheable":
        note(
            f"{requirement!r} is not cached: only public release versions are (never dev or +local)"
        )
    used, listing, venv = installer.name, [], scratch / "venv"
    if cache is not None and hold is not None and outcome == "error":
        try:
            key = cache_key(requirement, cache.interpreter(python))
            assert key is not None  # cacheable(requirement)
            venv, marker, outcome = cache.acquire(key, requirement, installer, hold)
            recorded = marker.get("distributions")
            listing = [str(item) for item in recorded] if isinstance(recorded, list) else []
            used = "none" if outcome == "hit" else installer.name
        except OSError as error:
            note(f"the venv cache is not used: {type(error).__name__}: {error}")
    if outcome not in _CACHED:
        installer.create(venv, requirement, compile_bytecode=False)
        listing = distributions(venv)
    ended = time.time_ns()
    runner = _runner_for(listing)
    emit("packages", distributions=listing)
    emit(
        "setup",
        installer=used,
        cache=outcome,
        seconds=round((ended - started) / 1e9, 3),
        venv=str(venv),
        runner=runner,
    )
    return _Environment(str(venv / "bin" / "python"), runner, used, outcome, started, ended)


def _task_command(task: _Task, environment: _Environment) -> list[str]:
    if environment.runner == "contract":
        note("the task environment has no dkist-processing-core-task; running the 7.x statement")
        return [environment.python, "-c", CONTRACT]
    return [
        environment.python,
        "-m",
        "dkist_processing_core.run_task",
        f"--module={task.module}",
        f"--task={task.name}",
        f"--workflow-name={task.workflow_name}",
        f"--workflow-version={task.workflow_version}",
    ]


def _task_environment(
    environ: dict[str, str], task: _Task, environment: _Environment
) -> dict[str, str]:
    env = {key: value for key, value in environ.items() if key != "DKIST_WORKER_PYTHON"}
    env[RECIPE_RUN_ID_VARIABLE] = str(task.recipe_run_id)
    env.update(
        DKIST_TASK_MODULE=task.module,
        DKIST_TASK_CLASS=task.name,
        DKIST_WORKFLOW_NAME=task.workflow_name,
        DKIST_WORKFLOW_VERSION=task.workflow_version,
    )
    values = (environment.installer, environment.cache, environment.start_ns, environment.end_ns)
    env.update(zip(ENVIRONMENT_VARIABLES, map(str, values), strict=True))
    if environment.cache in _CACHED:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _print_limits() -> None:
    with contextlib.suppress(OSError), open("/proc/self/limits", encoding="utf-8") as limits:
        sys.stderr.write(limits.read())
        sys.stderr.flush()


def run_worker(environ: dict[str, str]) -> int:
    """Prepare, set up and run the task the environment names; return the exit status."""
    started = time.monotonic()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)  # the task decides; its exit status becomes ours
            return
        raise _Stopped(signum)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    step, scratch, hold_path, hold = "prepare", None, "", None
    try:
        task = _prepare(environ)
        cache = Cache.from_environment(environ)
        emit(
            "start",
            task=f"{task.module}.{task.name}",
            workflow=task.workflow_name,
            version=task.workflow_version,
            recipe_run_id=task.recipe_run_id,
            requirement=task.requirement,
            dag_run=environ.get("AIRFLOW_CTX_DAG_RUN_ID", ""),
            try_number=environ.get("AIRFLOW_CTX_TRY_NUMBER", ""),
        )
        emit("nomad", **{name: environ.get(name, "") for name in NOMAD_VARIABLES})
        step = "setup"
        if cache is not None and cacheable(task.requirement):
            try:
                hold_path = cache.new_hold()
                hold = os.open(hold_path, os.O_RDWR)
            except OSError as error:
                note(f"the venv cache is not used: {error}")
                cache = None
        scratch = Path(tempfile.mkdtemp(prefix="dkist-task-"))
        environment = _set_up(environ, task.requirement, scratch, cache, hold)
        _print_limits()
        step = "run"
        child = subprocess.Popen(
            _task_command(task, environment),
            env=_task_environment(environ, task, environment),
            stdin=subprocess.DEVNULL,
            pass_fds=() if hold is None else (hold,),  # the hold lasts as long as the task
        )
        returncode = child.wait()
        status = 128 - returncode if returncode < 0 else returncode
        seconds = round(time.monotonic() - started, 3)
        emit("exit", task=task.name, status=status, seconds=seconds)
        return status
    except WorkerError as error:
        emit("error", step=step, status=error.status, message=str(error))
        return error.status
    except _Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        emit("error", step=step, status=128 + stopped.signum, message=f"stopped by {name}")
        return 128 + stopped.signum
    finally:
        if hold is not None:
            os.close(hold)
        if hold_path:
            Path(hold_path).unlink(missing_ok=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
