"""The worker program ships once, in core-task; every exported task only names it.

``dkist_processing_core.worker`` is a module of the core-task wheel (no other wheel carries worker
files); it is run by the interpreter that runs Airflow and imports nothing beyond the standard
library, ``dkist_processing_core`` and ``packaging.version`` (:data:`BEYOND_STDLIB`). A task of an exported DAG carries the constant
:data:`~dkist_processing_core.worker.WORKER_COMMAND` and a handful of short environment variables,
never the program's text. What it prints is one event per line (:func:`read_events`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from dkist_processing_core import Workflow
from dkist_processing_core import worker
from dkist_processing_core.worker import WORKER_COMMAND
from dkist_processing_core.worker import read_events
from dkist_processing_core.worker._protocol import emit
from helpers.release import MEMBERS
from helpers.release import PROJECT_DIRS
from helpers.release import build_wheel

SOURCE = Path(worker.__file__).parent
IN_WHEEL = "dkist_processing_core/worker/"
#: What the DAG file gives every task (the pip settings, when they differ from the worker's
#: defaults); the workflow's name and version come from Airflow's AIRFLOW_CTX_DAG_ID.
TASK_ENV_KEYS = {
    "RECIPE_RUN_ID",
    "DKIST_WORKER_PYTHON",
    "DKIST_TASK",
    "DKIST_REQUIREMENT",
    "DKIST_PIP_TIMEOUT",
    "DKIST_PIP_RETRIES",
}
#: All the worker may import beyond the standard library and dkist_processing_core: PEP 440 versions
#: (core-task's dependency, and Airflow's); never packaging.utils or .requirements, which import
#: packaging.tags, logging and platform (8 to 15 ms more per task start; docs/decisions.md).
BEYOND_STDLIB = {"packaging", "packaging.version", "packaging._structures"}
#: Runs ``python -m dkist_processing_core.worker ARGS`` the way ``-m`` does, then reports on
#: stderr (after the worker's own output) every module the worker imported.
IMPORT_RECORDER = """\
import json, runpy, sys
before = set(sys.modules)
sys.argv = ["dkist_processing_core.worker", *sys.argv[1:]]
try:
    runpy.run_module("dkist_processing_core.worker", run_name="__main__", alter_sys=True)
    status = 0
except SystemExit as stop:
    status = stop.code
print("IMPORTED " + json.dumps(sorted(set(sys.modules) - before)), file=sys.stderr, flush=True)
sys.exit(status)
"""


def test_the_worker_program_ships_once_in_the_core_task_wheel(tmp_path):
    sources = {path.name: path.read_bytes() for path in SOURCE.glob("*.py")}
    assert {"__init__.py", "__main__.py", "_steps.py", "_protocol.py"} <= set(sources)
    wheel = build_wheel(PROJECT_DIRS["core-task"], tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.removeprefix(IN_WHEEL): archive.read(name)
            for name in archive.namelist()
            if name.startswith(IN_WHEEL)
        }
    assert shipped == sources  # every module, byte for byte, and nothing else
    for member in MEMBERS:
        if member == "core-task":
            continue
        with zipfile.ZipFile(build_wheel(PROJECT_DIRS[member], tmp_path)) as archive:
            names = archive.namelist()
        # no copy of the program, and none of the files it replaced (export/worker.sh, ...)
        assert [name for name in names if "worker" in name] == [], member


@pytest.mark.parametrize(
    ("arguments", "variables", "status", "module"),
    [
        # the recipe run id is checked before anything is installed: exit 2
        (["run"], {"RECIPE_RUN_ID": "1; touch marker"}, 2, "dkist_processing_core.worker._steps"),
        # a valid id: the requirement's version is read (PEP 440), then refused: exit 2
        (
            ["run"],
            {
                "RECIPE_RUN_ID": "1",
                "DKIST_TASK": "pipe.tasks.Fetch",
                "DKIST_REQUIREMENT": "pipe[frozen]==dev",
                "AIRFLOW_CTX_DAG_ID": "w_dev",
            },
            2,
            "packaging.version",
        ),
        (
            ["gc", "--max-age", "7d"],
            {"DKIST_VENV_CACHE_DIR": "{tmp}"},
            0,
            "dkist_processing_core.worker._gc",
        ),
    ],
    ids=["run", "run-requirement", "gc"],
)
def test_the_worker_imports_the_standard_library_and_dkist_processing_core_only(
    tmp_path, arguments, variables, status, module
):
    """What the interpreter that runs Airflow loads for the worker: nothing of site-packages."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    env.update({name: value.format(tmp=tmp_path) for name, value in variables.items()})
    result = subprocess.run(
        [sys.executable, "-P", "-c", IMPORT_RECORDER, *arguments],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == status, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("IMPORTED ")]
    imported = json.loads(line.removeprefix("IMPORTED "))
    assert module in imported  # the step really ran (the check below has something to check)
    foreign = [
        name
        for name in imported
        if name.partition(".")[0] not in sys.stdlib_module_names
        and name.partition(".")[0] != "dkist_processing_core"
        and name not in BEYOND_STDLIB
    ]
    assert foreign == []
    # the real command, as a worker runs it: the same exit status and one error event
    if arguments == ["run"]:
        real = subprocess.run(
            ["bash", "-c", WORKER_COMMAND],
            env={**env, "DKIST_WORKER_PYTHON": sys.executable},
            capture_output=True,
            text=True,
            check=False,
        )
        assert real.returncode == 2, real.stdout + real.stderr
        assert [(event, fields["step"]) for event, fields in read_events(real.stdout)] == [
            ("error", "prepare")
        ]


def test_the_command_without_its_interpreter_stops_with_the_variable_named():
    result = subprocess.run(
        ["bash", "-c", WORKER_COMMAND],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DKIST_WORKER_PYTHON" in result.stderr
    assert result.stdout == ""


def _loaded_tasks(pipeline):
    workflow = Workflow(
        process_category="prog",
        process_name="ram",
        workflow_package=pipeline.package,
        workflow_version="1.0.0",
    )
    workflow.add_node(pipeline.tasks.Fetch)
    workflow.add_node(pipeline.tasks.Calibrate, upstreams=pipeline.tasks.Fetch)
    dag = workflow.load()
    return [dag.get_task("Fetch"), dag.get_task("Calibrate")]


def test_every_loaded_task_runs_the_constant_command(pipeline):
    for operator in _loaded_tasks(pipeline):
        assert operator.bash_command == WORKER_COMMAND
        for marker in ("{{", "{%", "{#", "}}", "%}", "#}"):
            assert marker not in operator.bash_command
        # Airflow would replace a command ending in a template extension by a file's content
        assert not operator.bash_command.rstrip().endswith((".sh", ".bash"))
        assert operator.template_ext == ()


def test_the_rendered_command_and_environment_of_a_task_are_small(pipeline, monkeypatch):
    from dkist_processing_core.config import reset_core_configuration

    # pip settings other than the worker's defaults: the DAG file carries them too (every key)
    monkeypatch.setenv("PIP_TIMEOUT", "42")
    monkeypatch.setenv("PIP_RETRIES", "0")
    reset_core_configuration()
    for operator in _loaded_tasks(pipeline):
        context = {"dag_run": SimpleNamespace(conf={"recipe_run_id": 42})}
        command = operator.render_template(operator.bash_command, context)
        env = operator.render_template(operator.env, context)
        assert command == WORKER_COMMAND
        assert set(env) == TASK_ENV_KEYS
        assert env["RECIPE_RUN_ID"] == "42"
        assert env["DKIST_WORKER_PYTHON"] == sys.executable
        assert (env["DKIST_PIP_TIMEOUT"], env["DKIST_PIP_RETRIES"]) == ("42", "0")
        assert env["DKIST_TASK"] == f"{pipeline.package}.tasks.{operator.task_id}"
        assert env["DKIST_REQUIREMENT"] == f"{pipeline.distribution}[frozen]==1.0.0"
        too_long = {name: len(value.encode()) for name, value in env.items() if len(value) > 300}
        assert too_long == {}
        size = len(command.encode()) + sum(len(f"{k}={v}".encode()) for k, v in env.items())
        assert size <= 1024, f"{size} bytes of command and environment"


def test_read_events_parses_what_emit_writes(capsys):
    fields = {
        "message": "é ü ✓ \N{GREEK SMALL LETTER ALPHA}, a tab\tand a\nnew line",
        "path": "/tmp/a b/'quoted\"",
        "number": 7,
        "none": None,
        "items": ["x==1.0", "y==2.0"],
    }
    print("output of the task, between two events")
    emit("note", **fields)
    emit("exit", task="Fetch", status=0, seconds=1.25)
    print("dkist-processing-core worker: not json")  # task output that mentions the marker
    emit("gc-summary")
    output = capsys.readouterr().out
    assert output.isascii()  # non-ASCII escaped
    assert len(output.splitlines()) == 5  # one line per event: the message's new line is escaped
    assert list(read_events(output)) == [
        ("note", fields),
        ("exit", {"task": "Fetch", "status": 0, "seconds": 1.25}),
        ("gc-summary", {}),
    ]


def test_read_events_reads_a_task_log_with_the_loggers_prefix():
    """Airflow logs every line of the task with its timestamp, level and logger around it."""
    log = (
        "2026-12-06T20:58:29.820185Z [info     ] dkist-processing-core worker: exit "
        '{"task": "Fetch", "status": 1, "seconds": 3.5} '
        "[airflow.task.hooks.airflow.providers.standard.hooks.subprocess.SubprocessHook] "
        "loc=subprocess.py:106\n"
        "[2026-12-06, 20:58:29 UTC] {subprocess.py:106} INFO - dkist-processing-core worker: "
        'setup {"installer": "uv", "cache": "hit"}\n'
    )
    assert list(read_events(log)) == [
        ("exit", {"task": "Fetch", "status": 1, "seconds": 3.5}),
        ("setup", {"installer": "uv", "cache": "hit"}),
    ]
