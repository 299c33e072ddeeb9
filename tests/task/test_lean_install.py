"""A lean worker: a fresh venv with only the -telemetry and -task wheels (plus their dependencies) runs a task.

Slow (builds two wheels, creates a venv, installs dependencies from the configured package index),
so everything is checked against one venv built once per test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest
from helpers.release import build_once
from helpers.task_modules import clean_environment
from helpers.task_modules import run_python
from helpers.task_modules import run_task_process
from helpers.task_modules import write_module
from helpers.wheelhouse import CORE_TASK
from helpers.wheelhouse import build_wheels

ABSENT_DISTRIBUTIONS = (
    "apache-airflow",
    "nbformat",
    "nbconvert",
    "nbclient",
    "jupyter",
    "ipykernel",
    "dkist-processing-core-workflow",
)


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _build_lean_worker(base: Path) -> None:
    wheels = base / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    build_wheels(CORE_TASK, wheels)
    environment = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(environment)
    # Dependencies come from the package index pip is configured with (as on a real worker).
    python = environment / "bin" / "python"
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            *map(str, sorted(wheels.glob("*.whl"))),
        ]
    )


@pytest.fixture(scope="session")
def lean_worker(tmp_path_factory) -> dict[str, Path]:
    # Built once per session: pytest-xdist workers share the parent of their base temp folders.
    basetemp = tmp_path_factory.getbasetemp()
    shared = (
        basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    ) / "lean-worker"
    base = build_once(shared, "lean", _build_lean_worker)
    return {"wheels": base / "wheels", "python": base / "venv" / "bin" / "python", "base": base}


def _installed(python: Path) -> dict[str, str]:
    result = _run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"]
    )
    return {item["name"].lower(): item["version"] for item in json.loads(result.stdout)}


def test_wheels_hold_only_their_own_modules(lean_worker):
    contents = {}
    for wheel in lean_worker["wheels"].glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            contents[wheel.name.split("-")[0]] = {
                name.removeprefix("dkist_processing_core/")
                for name in archive.namelist()
                if name.startswith("dkist_processing_core/")
            }
    task_files = contents["dkist_processing_core_task"]
    telemetry_files = contents["dkist_processing_core_telemetry"]
    assert {
        "__init__.py",
        "task.py",
        "run_task.py",
        "naming.py",
        "resource_queue.py",
        "notebook_utils.py",
        "workflow.py",
    } <= task_files
    assert {"config.py", "telemetry.py", "logging.py"} <= telemetry_files
    assert "__init__.py" not in telemetry_files
    assert not task_files & telemetry_files


def test_lean_venv_has_no_airflow_nbformat_or_jupyter(lean_worker):
    installed = _installed(lean_worker["python"])
    assert {"dkist-processing-core-task", "dkist-processing-core-telemetry"} <= set(installed)
    unexpected = [
        name for name in installed if name in ABSENT_DISTRIBUTIONS or name.startswith("jupyter")
    ]
    assert unexpected == []


def test_lean_venv_runs_a_task(lean_worker, tmp_path):
    write_module(
        tmp_path,
        "lean_pipeline",
        """
        import sys
        from dkist_processing_core import TaskBase

        class CalibrateFrames(TaskBase):
            def run(self):
                heavy = [m for m in sys.modules if m.split(".")[0] in ("airflow", "nbformat", "grpc", "pika")]
                print(f"calibrated recipe run {self.recipe_run_id}; heavy modules: {heavy}")
        """,
    )
    env = clean_environment(tmp_path, RECIPE_RUN_ID="314")
    result = run_task_process(
        "lean_pipeline", "CalibrateFrames", env, python=str(lean_worker["python"]), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "calibrated recipe run 314; heavy modules: []" in result.stdout
    assert "Test_Workflow.CalibrateFrames complete" in result.stderr


def test_lean_venv_import_cost_and_missing_workflow(lean_worker):
    code = """
        import json, sys
        from dkist_processing_core import TaskBase, ResourceQueue
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("airflow", "nbformat", "grpc", "pika")
                       or m.startswith("opentelemetry.exporter"))
        try:
            from dkist_processing_core import Workflow
        except ImportError as error:
            message = str(error)
        else:
            message = "imported"
        print(json.dumps({"heavy": heavy, "workflow": message}))
    """
    result = run_python(code, clean_environment(), python=str(lean_worker["python"]))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    assert "pip install dkist-processing-core-workflow" in report["workflow"]


def test_lean_venv_notebook_helpers_name_the_extra(lean_worker):
    code = """
        from dkist_processing_core.notebook_utils import export_notebook_by_path
        try:
            export_notebook_by_path("x.ipynb")
        except ImportError as error:
            print(error)
    """
    result = run_python(code, clean_environment(), python=str(lean_worker["python"]))
    assert result.returncode == 0, result.stderr
    assert "dkist-processing-core-task[notebook]" in result.stdout


def test_lean_venv_resolves_the_workflow_module_for_common(lean_worker):
    # dkist-processing-common's tasks/base.py: `from dkist_processing_core.workflow import dag_name`
    # (and its tests: workflow_name_from_details); core-task alone must answer both.
    code = """
        import json
        from dkist_processing_core.workflow import dag_name, workflow_name_from_details
        import dkist_processing_core.workflow as module
        answers = {
            "dag_name": dag_name(workflow_name="l0_to_l1_vbi", workflow_version="2.3.0"),
            "details": workflow_name_from_details(input_data="l0", output_data="l1", category="vbi"),
            "file": module.__file__,
        }
        try:
            from dkist_processing_core.workflow import Workflow
        except ImportError as error:
            answers["Workflow"] = str(error)
        try:
            module.WorkflowError
        except ImportError as error:
            answers["WorkflowError"] = str(error)
        try:
            module.no_such_name
        except AttributeError as error:
            answers["unknown"] = f"AttributeError: {error}"
        print(json.dumps(answers))
    """
    result = run_python(code, clean_environment(), python=str(lean_worker["python"]))
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers["dag_name"] == "l0_to_l1_vbi_2.3.0"
    assert answers["details"] == "l0_to_l1_vbi"
    assert "site-packages" in answers["file"]
    for name in ("Workflow", "WorkflowError"):
        assert (
            f"dkist_processing_core.workflow.{name} is provided by the distribution"
            in answers[name]
        )
        assert "pip install dkist-processing-core-workflow" in answers[name]
    assert answers["unknown"].startswith("AttributeError: module 'dkist_processing_core.workflow'")
