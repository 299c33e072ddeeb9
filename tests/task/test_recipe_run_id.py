"""One rule for the recipe run id, used by the CLI, the runner, the worker program and TaskBase.

Each edge is given to all four; they must agree (the value, or a refusal naming it). The worker
program and the CLI get it as text (an environment variable, an argument), the runner and
TaskBase also as a Python value.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from dkist_processing_core.recipe_run_id import MAX_RECIPE_RUN_ID
from dkist_processing_core.recipe_run_id import RecipeRunIdError
from dkist_processing_core.recipe_run_id import parse_recipe_run_id
from dkist_processing_core.worker import WORKER_COMMAND
from dkist_processing_core.worker import read_events
from helpers.task_modules import clean_environment

# text -> the id, or None when it is refused
TEXT_EDGES = {
    "42": 42,
    "0": 0,
    "007": 7,
    str(MAX_RECIPE_RUN_ID): MAX_RECIPE_RUN_ID,
    " 42": None,
    "42 ": None,
    "42.0": None,
    "1e3": None,
    "+42": None,
    "-1": None,
    "-0": None,
    "٤٢": None,  # Arabic-Indic digits: int() reads 42
    "４２": None,  # fullwidth digits: int() reads 42
    "42\n": None,
    "": None,
    "0x10": None,
    "1_000": None,  # int() reads 1000
    "1; rm -rf /": None,
    str(MAX_RECIPE_RUN_ID + 1): None,  # beyond PostgreSQL bigint / OpenTelemetry int64
    "9" * 5000: None,  # beyond int()'s digit limit: still a plain refusal
}
# Python values (TaskBase, runner) -> the id, or None when refused
VALUE_EDGES = [
    (42, 42),
    (0, 0),
    (42.0, 42),
    (1e3, 1000),
    (MAX_RECIPE_RUN_ID, MAX_RECIPE_RUN_ID),
    (True, None),
    (False, None),
    (-1, None),
    (42.5, None),
    (float("nan"), None),
    (float("inf"), None),
    (MAX_RECIPE_RUN_ID + 1, None),
    (None, None),
    (b"42", None),
]


def _expect(value, expected):
    if expected is None:
        with pytest.raises(RecipeRunIdError, match="recipe run id must be a non-negative integer"):
            parse_recipe_run_id(value)
    else:
        parsed = parse_recipe_run_id(value)
        assert parsed == expected and type(parsed) is int


@pytest.mark.parametrize(("text", "expected"), TEXT_EDGES.items(), ids=repr)
def test_text(text, expected):
    _expect(text, expected)


@pytest.mark.parametrize(("value", "expected"), VALUE_EDGES, ids=repr)
def test_values(value, expected):
    _expect(value, expected)


def test_the_refusal_names_the_value_and_stays_short():
    with pytest.raises(RecipeRunIdError) as refused:
        parse_recipe_run_id("9" * 5000)
    assert "'9999" in str(refused.value) and len(str(refused.value)) < 200
    assert isinstance(refused.value, ValueError) and refused.value.exit_status == 2


@pytest.mark.parametrize(("text", "expected"), TEXT_EDGES.items(), ids=repr)
def test_the_cli_uses_the_rule(text, expected):
    from dkist_processing_core.cli import build_parser

    parser = build_parser()
    run = ["run", "dkist_processing_example.workflows", "My_Workflow", "--recipe-run-id", text]
    if expected is None:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(run)
        assert exited.value.code == 2
    else:
        assert parser.parse_args(run).recipe_run_id == expected


@pytest.mark.parametrize(("value", "expected"), [*VALUE_EDGES, *TEXT_EDGES.items()], ids=repr)
def test_the_runner_uses_the_rule(value, expected):
    from dkist_processing_core import runner

    if expected is None:
        with pytest.raises(RecipeRunIdError):
            runner.run_workflow(object(), value, "no-such-engine")  # refused before anything
    else:
        with pytest.raises(Exception) as later:  # the id passed: the unknown engine is next
            runner.run_workflow(object(), value, "no-such-engine")
        assert not isinstance(later.value, RecipeRunIdError)


@pytest.mark.parametrize(("text", "expected"), TEXT_EDGES.items(), ids=repr)
def test_the_worker_program_uses_the_rule_before_anything_else(tmp_path, text, expected):
    env = clean_environment(
        tmp_path,
        RECIPE_RUN_ID=text,
        DKIST_WORKER_PYTHON=sys.executable,
        DKIST_TASK="no_such_pipeline.tasks.Task",
        AIRFLOW_CTX_DAG_ID="w_1.0.0",
        DKIST_REQUIREMENT="no-such-pipeline==1.0.0",
        PATH="/nonexistent",  # no python3, no uv: a setup would fail with a different error
    )
    result = subprocess.run(
        ["/bin/bash", "-c", WORKER_COMMAND],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    events = list(read_events(result.stdout))
    if expected is None:
        assert result.returncode == 2, result.stdout + result.stderr
        assert [event for event, _ in events] == ["error"]
        assert events[0][1]["step"] == "prepare"
        assert "recipe run id must be a non-negative integer" in str(events[0][1]["message"])
    else:
        start = [fields for event, fields in events if event == "start"]
        assert start and start[0]["recipe_run_id"] == expected, result.stdout + result.stderr
        assert result.returncode != 0  # then the setup fails: no python3 on this PATH


@pytest.mark.parametrize(("value", "expected"), VALUE_EDGES[:8], ids=repr)
def test_taskbase_uses_the_rule(value, expected, monkeypatch, tmp_path):
    from dkist_processing_core import TaskBase

    for key, item in clean_environment(tmp_path).items():
        monkeypatch.setenv(key, item)

    class Noop(TaskBase):
        def run(self) -> None:
            pass

    if expected is None:
        with pytest.raises(RecipeRunIdError):
            Noop(recipe_run_id=value, workflow_name="W", workflow_version="1")
    else:
        assert Noop(recipe_run_id=value, workflow_name="W", workflow_version="1").recipe_run_id == (
            expected
        )


def test_the_argparse_type_is_the_parser():
    from dkist_processing_core import _cli_parser

    with pytest.raises(argparse.ArgumentTypeError, match="non-negative integer"):
        _cli_parser._recipe_run_id("42.0")
