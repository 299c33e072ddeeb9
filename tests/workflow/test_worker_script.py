"""The worker script and its Python helper are real files, linted, and embedded byte for byte.

``export/worker.sh`` (bash, shellcheck-clean) and the helper program ``export/worker_cache.py``
followed by ``export/worker_env.py`` (standard library only, ruff-clean) are package data of core-workflow;
every DAG file carries both texts unchanged, and Airflow, which renders them with Jinja, hands them
to the task unchanged.
"""

from __future__ import annotations

import ast
import importlib.resources
import subprocess
import sys
from pathlib import Path

import pytest
from dkist_processing_core import Workflow
from dkist_processing_core.export import dag as dag_module
from helpers.release import REPO_ROOT

EXPORT = importlib.resources.files("dkist_processing_core.export")
SCRIPT_FILE = Path(str(EXPORT.joinpath("worker.sh")))
HELPER_FILES = [Path(str(EXPORT.joinpath(name))) for name in ("worker_cache.py", "worker_env.py")]
HELPER_PROGRAM = "".join(path.read_text() for path in HELPER_FILES)


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), (
        f"{name} not found next to {sys.executable}: pip install -r requirements-test.txt"
    )
    return str(path)


def test_the_script_is_shellcheck_clean():
    result = subprocess.run(
        [_tool("shellcheck"), "--shell=bash", "--severity=style", str(SCRIPT_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_helper_is_ruff_clean():
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [_tool("ruff"), *command, *map(str, HELPER_FILES)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_helper_needs_the_standard_library_only(tmp_path):
    """-I -S: no site-packages, no PYTHONPATH; what a worker's bare python3 has."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", HELPER_PROGRAM, "prepare"],
        env={
            "RECIPE_RUN_ID": "12",
            "DKIST_VENV_CACHE_DIR": str(tmp_path / "cache"),
            "DKIST_REQUIREMENT": "x==1.0",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    recipe_run_id, hold = result.stdout.splitlines()
    assert recipe_run_id == "12"
    assert Path(hold).parent == tmp_path / "cache" / "venvs-v1" / "holds"


@pytest.mark.parametrize("path", [SCRIPT_FILE, *HELPER_FILES], ids=lambda path: path.name)
def test_nothing_airflow_would_template_or_take_for_a_file_name(path):
    text = path.read_text()
    for marker in ("{{", "{%", "{#"):
        assert marker not in text, f"{path.name} holds the Jinja marker {marker!r}"
    assert not text.rstrip().endswith((".sh", ".bash"))
    assert "'''" not in text and not text.endswith("\\")  # embedded as r'''...'''


def test_the_dag_file_embeds_both_files_byte_for_byte(pipeline, tmp_path):
    assert dag_module.BASH_SCRIPT == SCRIPT_FILE.read_text()
    assert dag_module.WORKER_PY == HELPER_PROGRAM
    workflow = Workflow(
        process_category="emb",
        process_name="ed",
        workflow_package=pipeline.package,
        workflow_version="1.0.0",
    )
    workflow.add_node(pipeline.tasks.Fetch)
    source = workflow.export_dag(tmp_path / "dags").read_text()
    constants = {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    assert constants["_SCRIPT"] == SCRIPT_FILE.read_text()
    assert constants["_WORKER_PY"] == HELPER_PROGRAM
    # Airflow's view: the operator's command and environment carry the same texts.
    operator = workflow.load().get_task("Fetch")
    assert operator.bash_command == SCRIPT_FILE.read_text()
    assert operator.env["DKIST_WORKER_PY"] == HELPER_PROGRAM


def test_the_files_ship_in_the_core_workflow_wheel(tmp_path):
    import zipfile

    from helpers.release import PROJECT_DIRS
    from helpers.release import build_wheel

    wheel = build_wheel(PROJECT_DIRS["core-workflow"], tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "dkist_processing_core/export/worker.sh" in names
        assert (
            archive.read("dkist_processing_core/export/worker.sh").decode()
            == SCRIPT_FILE.read_text()
        )
        shipped = [
            archive.read(f"dkist_processing_core/export/{path.name}").decode()
            for path in HELPER_FILES
        ]
        assert "".join(shipped) == HELPER_PROGRAM
