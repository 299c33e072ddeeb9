"""The ``dkist-processing-core`` command line, run as a real subprocess."""

from __future__ import annotations

import json
from dataclasses import replace

import nbformat
import pytest
from dkist_processing_core.isb import FAILURE_ROUTING_KEY
from dkist_processing_core.isb import IsbTarget
from dkist_processing_core.isb import publish
from helpers.build_cli import BROKEN_PACKAGE
from helpers.build_cli import EXAMPLE_PACKAGE
from helpers.build_cli import tree
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import require_rabbitmq
from helpers.rabbitmq import unique_names

COMMANDS = [
    "validate",
    "export-dags",
    "export-notebooks",
    "export-dockerfile",
    "graph",
    "run",
    "config",
    "isb",
    "isb flush",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli, command):
    result = cli(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: dkist-processing-core {command}")


def test_top_level_help_lists_every_command(cli):
    result = cli("--help")
    assert result.returncode == 0
    for command in [
        "validate",
        "export-dags",
        "export-notebooks",
        "export-dockerfile",
        "graph",
        "run",
        "config",
        "isb",
    ]:
        assert f"    {command}" in result.stdout


def test_validate_a_valid_package(cli):
    result = cli("validate", EXAMPLE_PACKAGE)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == f"{EXAMPLE_PACKAGE}: 2 workflow(s) valid: l0_to_l1_example_dev, My_Workflow_dev\n"
    )
    assert tree(cli.cwd) == []


def test_validate_reports_every_problem_and_exits_1(cli):
    result = cli("validate", BROKEN_PACKAGE)
    assert result.returncode == 1
    assert result.stdout == ""  # neither a report nor Airflow's own log lines on stdout
    lines = result.stderr_lines
    assert (
        lines[0]
        == f"dkist-processing-core: validation failed: 6 problem(s) with the workflows of {BROKEN_PACKAGE}:"
    )
    kinds = sorted(line.strip().split(":")[0] for line in lines[1:])
    assert kinds == [
        "- DAG file rejected by Airflow",
        "- cycle",
        "- duplicate dag_id",
        "- empty workflow",
        "- import error",
        "- import error",
    ]
    assert "Traceback" not in result.stderr
    assert tree(cli.cwd) == []


def test_debug_adds_the_tracebacks(cli):
    result = cli("validate", BROKEN_PACKAGE, "--debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert (
        "ModuleNotFoundError: No module named 'build_fixture_module_that_does_not_exist'"
        in result.stderr
    )


def test_export_dags_into_a_folder_with_a_user_file(cli):
    target = cli.cwd / "dags"
    target.mkdir()
    (target / "README.txt").write_text("my notes\n")

    written = cli("export-dags", EXAMPLE_PACKAGE, "dags")
    assert written.returncode == 0, written.stderr
    assert (target / "README.txt").read_text() == "my notes\n"
    assert tree(cli.cwd) == [
        "dags",
        "dags/My_Workflow_dev.py",
        "dags/README.txt",
        "dags/l0_to_l1_example_dev.py",
    ]
    assert written.stdout.splitlines() == [
        str(target / "l0_to_l1_example_dev.py"),
        str(target / "My_Workflow_dev.py"),
    ]
    assert (
        "export-dags: [1/2] l0_to_l1_example_dev: l0_to_l1_example_dev.py" in written.stderr_lines
    )
    assert written.stderr_lines[-1] == f"dkist-processing-core: wrote 2 DAG file(s) to {target}"


def test_export_dags_refuses_the_filesystem_root(cli):
    refused = cli("export-dags", EXAMPLE_PACKAGE, "/")
    assert refused.returncode == 1
    assert refused.stderr_lines[-1].startswith(
        "dkist-processing-core: error: refusing to export into /: it is a filesystem root"
    )


def test_export_dags_of_a_broken_package_writes_nothing(cli):
    result = cli("export-dags", BROKEN_PACKAGE, "out/dags")
    assert result.returncode == 1
    assert tree(cli.cwd) == []


def test_export_notebooks_default_target(cli):
    result = cli("export-notebooks", EXAMPLE_PACKAGE)
    assert result.returncode == 0, result.stderr
    assert tree(cli.cwd) == [
        "notebooks",
        "notebooks/My_Workflow_dev.ipynb",
        "notebooks/l0_to_l1_example_dev.ipynb",
    ]
    for name in ("My_Workflow_dev.ipynb", "l0_to_l1_example_dev.ipynb"):
        nbformat.validate(nbformat.read(cli.cwd / "notebooks" / name, as_version=4))


def test_export_dockerfile(cli):
    result = cli(
        "export-dockerfile",
        EXAMPLE_PACKAGE,
        "image",
        "--base-image",
        "quay.io/jupyter/base-notebook:latest",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(cli.cwd / "image" / "Dockerfile")
    text = (cli.cwd / "image" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=quay.io/jupyter/base-notebook:latest" in text
    assert tree(cli.cwd / "image") == [
        "Dockerfile",
        "notebooks",
        "notebooks/My_Workflow_dev.ipynb",
        "notebooks/l0_to_l1_example_dev.ipynb",
    ]


def test_graph_prints_mermaid(cli):
    result = cli("graph", EXAMPLE_PACKAGE, "My_Workflow_dev", "--direction", "LR")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "---\ntitle: My_Workflow_dev\n---\nflowchart LR\n"
        '    MyTask1["MyTask1"]\n    MyTask2["MyTask2"]\n    MyTask1 --> MyTask2\n'
    )


def test_config_masks_secrets(cli):
    result = cli(
        "config", ISB_PASSWORD="hunter2-secret", ISB_USERNAME="operator", BUILD_VERSION="2.3.4"
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "ISB_PASSWORD=**********" in lines
    assert "ISB_USERNAME=operator" in lines
    assert "BUILD_VERSION=2.3.4" in lines
    as_json = cli("config", "--json", ISB_PASSWORD="hunter2-secret")
    assert json.loads(as_json.stdout)["ISB_PASSWORD"] == "**********"
    assert "hunter2-secret" not in as_json.stdout


def test_config_error_is_one_line(cli):
    result = cli("config", MAX_FILE_DESCRIPTORS="many")
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1
    assert "MAX_FILE_DESCRIPTORS" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "a command is required"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["isb"], "a command is required"),
        (
            ["run", EXAMPLE_PACKAGE, "My_Workflow"],
            "the following arguments are required: --recipe-run-id",
        ),
        (
            ["run", EXAMPLE_PACKAGE, "My_Workflow", "--recipe-run-id", "abc"],
            "recipe run id must be a non-negative integer",
        ),
        (
            ["run", EXAMPLE_PACKAGE, "My_Workflow", "--recipe-run-id", "-1"],
            "recipe run id must be a non-negative integer",
        ),
        (
            ["run", EXAMPLE_PACKAGE, "My_Workflow", "--recipe-run-id", "1; touch x"],
            "recipe run id must be a non-negative integer",
        ),
        (
            ["run", EXAMPLE_PACKAGE, "My_Workflow", "--recipe-run-id", "1", "--jobs", "0"],
            "must be an integer >= 1",
        ),
        (["run", EXAMPLE_PACKAGE, "--recipe-run-id", "1"], "has 2 workflows; name one of"),
        (["run", EXAMPLE_PACKAGE, "Nope", "--recipe-run-id", "1"], "has no workflow 'Nope'"),
        (
            ["run", EXAMPLE_PACKAGE, "My_Workflow", "--recipe-run-id", "1", "--wheelhouse", "w"],
            "--wheelhouse applies to --engine airflow only",
        ),
        (
            ["validate", "no_such_pipeline.workflows"],
            "package 'no_such_pipeline.workflows' is not importable",
        ),
        (["graph", "not a package"], "is not a dotted Python package name"),
        (
            ["export-dockerfile", EXAMPLE_PACKAGE, "--base-image", "Bad Image"],
            "is not a Docker image reference",
        ),
        (["isb", "flush", "--timeout", "0"], "must be a number of seconds > 0"),
        (
            ["isb", "flush", "--timeout", "inf"],
            "--timeout: must be a number of seconds > 0 and <= 3600",
        ),
        (
            ["isb", "flush", "--timeout", "nan"],
            "--timeout: must be a number of seconds > 0 and <= 3600",
        ),
        (
            ["isb", "flush", "--timeout", "1e10"],
            "--timeout: must be a number of seconds > 0 and <= 3600",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(cli, args, expected):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert tree(cli.cwd) == []


def test_isb_flush_sends_what_the_outbox_holds(cli, tmp_path):
    require_rabbitmq()
    # Our own exchange, and our own queue bound with the failure routing key of the spec.
    names = replace(unique_names("build-flush"), routing_key=FAILURE_ROUTING_KEY)
    declare_queue(names)
    try:
        # A port nothing listens on: the report stays in the outbox.
        unreachable = IsbTarget(
            port=9,
            exchange=names.exchange,
            routing_key=names.routing_key,
            queue=names.queue,
            outbox_dir=tmp_path / "isb-outbox",
            publish_timeout=0.5,
        )
        kept = publish({"conversationId": "kept-1", "taskName": "X"}, unreachable)
        assert not kept.delivered and kept.outbox_path is not None

        result = cli("isb", "flush", ISB_EXCHANGE=names.exchange)
        assert result.returncode == 0, result.stderr
        assert "1 message(s) delivered to localhost:5672, 0 remaining" in result.stdout
        deliveries = consume_all(names.queue, expected=1)
        assert [delivery.json()["conversationId"] for delivery in deliveries] == ["kept-1"]

        empty = cli("isb", "flush", ISB_EXCHANGE=names.exchange)
        assert empty.returncode == 0 and "0 message(s) delivered" in empty.stdout
    finally:
        delete_names(names)
