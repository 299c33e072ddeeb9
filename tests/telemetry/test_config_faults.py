"""Configuration that cannot even be read (issue 22, item 5): one rule for every way it fails.

A JSON variable nested deeper than Python's recursion limit, an ``ISB_OUTBOX_DIR`` the system
cannot look at (a name too long for the file system, ``~user`` of no one) or no home folder for
the default outbox used to escape as ``RecursionError``/``OSError``/``RuntimeError`` with a
traceback. Now each is a ``ConfigurationError`` naming the variable, like every other bad value:
``run_task`` exits 2 with one line, the CLI exits 1 with one line, and the failure callback keeps
the report in the outbox (``isb flush`` sends it once the configuration is fixed).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from dkist_processing_core.config import ConfigurationError
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from dkist_processing_core.failure_callback import chat_ops_notification
from helpers.build_cli import cli_command
from helpers.task_modules import clean_environment
from helpers.task_modules import run_python
from helpers.task_modules import run_task_process
from helpers.task_modules import unique_module_name
from helpers.task_modules import write_module

DEPTH = 50_000  # far beyond Python's recursion limit; 100 KB, under Linux's 128 KiB per variable


def deep(opening: str = "[", closing: str = "]", depth: int = DEPTH) -> str:
    return opening * depth + closing * depth


FAULTS = {
    "deep-mesh-config": ("MESH_CONFIG", '{"interservice-bus": ' + deep() + "}"),
    "deep-mesh-config-objects": ("MESH_CONFIG", '{"a": ' + deep('{"a":', "}", depth=20_000) + "}"),
    "deep-retry-config": ("RETRY_CONFIG", deep()),
    "deep-system-metrics": ("SYSTEM_METRIC_INSTRUMENTATION_CONFIG", deep()),
    "deep-disabled-instrumentations": ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", deep()),
    "outbox-name-too-long": ("ISB_OUTBOX_DIR", "/" + "a" * 300 + "/outbox"),
    "outbox-path-too-long": ("ISB_OUTBOX_DIR", "/" + "/".join(["b" * 200] * 30)),
    "outbox-home-of-no-one": ("ISB_OUTBOX_DIR", "~no-such-user-dkist/outbox"),
}
IDS = list(FAULTS)


@pytest.mark.parametrize(("variable", "value"), FAULTS.values(), ids=IDS)
def test_the_configuration_refuses_it_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError) as refused:
        DKISTProcessingCoreConfiguration()

    message = str(refused.value)
    assert f"environment variable {variable}" in message
    assert "\n" not in message and len(message) < 500


TASKS = """
from pathlib import Path
import os
from dkist_processing_core import TaskBase

Path(os.environ["IMPORT_MARKER"]).write_text("imported")


class Writes(TaskBase):
    def run(self):
        pass
"""


@pytest.mark.parametrize(("variable", "value"), FAULTS.values(), ids=IDS)
def test_run_task_exits_2_with_one_line(tmp_path, variable, value):
    module = unique_module_name("config_fault_tasks")
    write_module(tmp_path, module, TASKS)
    marker = tmp_path / "imported"
    env = clean_environment(
        tmp_path, IMPORT_MARKER=str(marker), RECIPE_RUN_ID="1", **{variable: value}
    )

    result = run_task_process(module, "Writes", env)

    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert variable in line
    assert not marker.exists()  # refused before any pipeline code is imported


@pytest.mark.parametrize("command", [("config",), ("isb", "flush", "--timeout", "1")])
@pytest.mark.parametrize(("variable", "value"), FAULTS.values(), ids=IDS)
def test_the_cli_exits_1_with_one_line_naming_the_variable(tmp_path, command, variable, value):
    env = clean_environment(HOME=str(tmp_path), **{variable: value})

    result = subprocess.run(
        [*cli_command(), *command], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert f"invalid configuration: environment variable {variable}" in line
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("variable", "value"),
    [*FAULTS.values(), ("MAX_FILE_DESCRIPTORS", "many"), ("ISB_EXCHANGE", "")],
    ids=[*IDS, "not-a-number", "empty-exchange"],
)
def test_the_failure_callback_keeps_the_report_whatever_is_wrong_with_the_configuration(
    monkeypatch, tmp_path, caplog, variable, value
):
    outbox = tmp_path / "outbox"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ISB_OUTBOX_DIR", str(outbox))
    monkeypatch.setenv(variable, value)
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")
    callback = functools.partial(
        chat_ops_notification, workflow_name="W", workflow_version="1.0", task_name="T"
    )

    result = callback({"run_id": "manual__1"})

    # Where ISB_OUTBOX_DIR itself is the fault, the report goes to the default folder.
    folder = (
        tmp_path / "home/.local/state/dkist-processing-core/isb-outbox"
        if variable == "ISB_OUTBOX_DIR"
        else outbox
    )
    kept = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    assert [entry["body"]["taskName"] for entry in kept] == ["T"]
    assert result is not None and not result.delivered
    assert result.outbox_path is not None and result.outbox_path.parent == folder
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(variable in text and str(folder) in text for text in errors), errors
    assert "LOST" not in caplog.text and "could not be published" not in caplog.text


NO_HOME = """
import json, os
from dkist_processing_core.config import ConfigurationError, DKISTProcessingCoreConfiguration

DKISTProcessingCoreConfiguration()  # everything imported while this user can still read it
# A user without a passwd entry and without HOME (an arbitrary uid in a container).
os.environ.pop("HOME", None)
os.setgid(54321)
os.setuid(54321)
try:
    DKISTProcessingCoreConfiguration()
except ConfigurationError as error:
    print(json.dumps(str(error)))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to a user without a home")
def test_no_home_folder_for_the_default_outbox_is_a_configuration_error(tmp_path):
    result = run_python(NO_HOME, clean_environment(), cwd=Path("/"))

    assert result.returncode == 0, result.stderr[-2000:]
    message = json.loads(result.stdout)
    assert "ISB_OUTBOX_DIR" in message and "home" in message
