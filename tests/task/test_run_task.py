"""python -m dkist_processing_core.run_task: the way every worker runs a task (real subprocesses)."""

from __future__ import annotations

import pytest
from helpers.task_modules import clean_environment
from helpers.task_modules import run_task_process
from helpers.task_modules import unique_module_name
from helpers.task_modules import write_module

TASKS = """
import os
from pathlib import Path

from dkist_processing_core import TaskBase

# Proves whether pipeline code was imported at all.
Path(os.environ["IMPORT_MARKER"]).write_text("imported")


class Writes(TaskBase):
    def run(self):
        Path(os.environ["RUN_MARKER"]).write_text(f"{self.recipe_run_id} {self.workflow_name} {self.workflow_version}")


class Fails(TaskBase):
    def run(self):
        raise RuntimeError("calibration diverged")

    def rollback(self):
        Path(os.environ["RUN_MARKER"]).write_text("rolled back")


class ExitsEarly(TaskBase):
    def run(self):
        raise SystemExit(0)

    def rollback(self):
        Path(os.environ["RUN_MARKER"]).write_text("rolled back")


class ExitRaises(TaskBase):
    def run(self):
        raise RuntimeError("calibration diverged")

    def __exit__(self, *exc_info):
        super().__exit__(*exc_info)
        raise OSError("scratch cleanup failed")


class NotATask:
    pass
"""


@pytest.fixture
def worker(tmp_path):
    """(module name, environment, import marker, run marker) for a worker-like subprocess."""
    name = unique_module_name("worker_tasks")
    write_module(tmp_path, name, TASKS)
    write_module(tmp_path, f"{name}_broken", "import this_module_does_not_exist_anywhere\n")
    write_module(tmp_path, f"{name}_raises", "raise RuntimeError('broken at import')\n")
    import_marker, run_marker = tmp_path / "imported", tmp_path / "ran"
    env = clean_environment(tmp_path, IMPORT_MARKER=str(import_marker), RUN_MARKER=str(run_marker))
    return name, env, import_marker, run_marker


def test_success_exits_0(worker):
    module, env, _, run_marker = worker
    result = run_task_process(
        module,
        "Writes",
        {**env, "RECIPE_RUN_ID": "17"},
        workflow_name="W_x",
        workflow_version="3.1",
    )
    assert result.returncode == 0, result.stderr
    assert run_marker.read_text() == "17 W_x 3.1"
    assert "W_x.Writes complete" in result.stderr


def test_task_failure_exits_1_with_the_error_and_no_rollback(worker):
    # rollback() is a manual operation, as in the previous product.
    module, env, _, run_marker = worker
    result = run_task_process(module, "Fails", {**env, "RECIPE_RUN_ID": "17"})
    assert result.returncode == 1
    assert "task Fails failed: RuntimeError: calibration diverged" in result.stderr
    assert "Traceback" in result.stderr
    assert not run_marker.exists()


def test_recipe_run_id_option_overrides_the_environment(worker):
    module, env, _, run_marker = worker
    result = run_task_process(
        module, "Writes", {**env, "RECIPE_RUN_ID": "17"}, extra_args=("--recipe-run-id", "18")
    )
    assert result.returncode == 0, result.stderr
    assert run_marker.read_text().startswith("18 ")


@pytest.mark.parametrize(
    "raw", ["1; rm -rf /", "1; touch INJECTED", "$(touch INJECTED)", "-3", "abc", "", "1.5", "True"]
)
def test_bad_recipe_run_id_exits_2_before_pipeline_code_is_imported(worker, tmp_path, raw):
    module, env, import_marker, run_marker = worker
    result = run_task_process(module, "Writes", {**env, "RECIPE_RUN_ID": raw}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "recipe run id must be a non-negative integer" in result.stderr
    assert not import_marker.exists()
    assert not run_marker.exists()
    assert not (tmp_path / "INJECTED").exists()


def test_missing_recipe_run_id_exits_2(worker):
    module, env, import_marker, _ = worker
    result = run_task_process(module, "Writes", env)
    assert result.returncode == 2
    assert "no recipe run id" in result.stderr
    assert not import_marker.exists()


def test_invalid_configuration_exits_2_naming_the_variable(worker):
    module, env, import_marker, _ = worker
    result = run_task_process(
        module, "Writes", {**env, "RECIPE_RUN_ID": "1", "MAX_FILE_DESCRIPTORS": "lots"}
    )
    assert result.returncode == 2
    assert "MAX_FILE_DESCRIPTORS" in result.stderr
    assert not import_marker.exists()


@pytest.mark.parametrize(
    ("module_suffix", "task", "message"),
    [
        ("", "Missing", "is not a TaskBase subclass"),
        ("", "NotATask", "is not a TaskBase subclass"),
        ("_nowhere", "Writes", "cannot import task module"),
        ("_broken", "Writes", "cannot import task module"),
        ("_raises", "Writes", "RuntimeError: broken at import"),
    ],
)
def test_unknown_or_broken_task_exits_2(worker, module_suffix, task, message):
    module, env, _, run_marker = worker
    result = run_task_process(module + module_suffix, task, {**env, "RECIPE_RUN_ID": "1"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not run_marker.exists()


def test_sys_exit_inside_a_task_is_a_failure_not_a_success(worker):
    """A task that calls sys.exit(0) did not finish its work: it exits 1 (and is not rolled back)."""
    module, env, _, run_marker = worker
    result = run_task_process(module, "ExitsEarly", {**env, "RECIPE_RUN_ID": "3"})
    assert result.returncode == 1, result.stderr
    assert not run_marker.exists()
    assert "task ExitsEarly called sys.exit(0)" in result.stderr


def test_an_exception_from_exit_does_not_hide_the_task_error(worker):
    module, env, _, _ = worker
    result = run_task_process(module, "ExitRaises", {**env, "RECIPE_RUN_ID": "3"})
    assert result.returncode == 1, result.stderr
    assert (
        "task ExitRaises failed: RuntimeError: calibration diverged "
        "(and leaving the task then raised OSError: scratch cleanup failed)"
    ) in result.stderr
