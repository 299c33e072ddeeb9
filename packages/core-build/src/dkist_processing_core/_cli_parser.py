"""The argument parser of the ``dkist-processing-core`` command (the commands themselves are in :mod:`.cli`).

Each subcommand sets ``function`` (a key of :data:`dkist_processing_core.cli.COMMANDS`); a group
without a command of its own (``isb``, ``worker``) sets ``usage_of`` instead.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from dkist_processing_core.errors import EXIT_USAGE

__all__ = ["PROG", "build_parser"]

PROG = "dkist-processing-core"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _recipe_run_id(text: str) -> int:
    from dkist_processing_core.recipe_run_id import RecipeRunIdError
    from dkist_processing_core.recipe_run_id import parse_recipe_run_id

    try:
        return parse_recipe_run_id(text)
    except RecipeRunIdError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _flush_timeout(text: str) -> float:
    """Seconds for ``isb flush --timeout``: > 0 and <= ``MAX_SECONDS``, ISB_PUBLISH_TIMEOUT's range."""
    from dkist_processing_core._text_rules import MAX_SECONDS

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 and <= {MAX_SECONDS:g}, got {text!r}"
        )
    return value


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import requires
    from importlib.metadata import version

    from packaging.requirements import Requirement

    # this distribution and the members below it, as their metadata chains them (no list to keep)
    names, parts = ["dkist-processing-core-build"], []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
            below = [Requirement(text).name for text in requires(name) or []]
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
            continue
        names += [n for n in below if n.startswith("dkist-processing-core-") and n not in names]
    return ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dkist-processing-core`` command."""
    from dkist_processing_core._text_rules import MAX_SECONDS

    common = _Parser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors"
    )
    parser = _Parser(
        prog=PROG,
        description="Validate, export, graph and run the workflows of a DKIST processing pipeline.",
        epilog="PACKAGE is the dotted name of the pipeline package holding the workflows "
        "(e.g. dkist_processing_example.workflows); it must be importable here. "
        "Exit status: 0 ok, 1 validation or task failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    parser.add_argument(
        "--debug", action="store_true", default=False, help="show tracebacks of errors"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(
        name: str, help_text: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=description or help_text, parents=[common]
        )

    package_help = (
        "dotted name of the pipeline's workflow package, e.g. dkist_processing_example.workflows"
    )

    validate = command(
        "validate",
        "check every workflow of a package the way Airflow will see it",
        "Export every workflow of PACKAGE to a temporary folder, load the DAG files in an Airflow "
        "DagBag and report every problem: import errors, cycles, empty workflows, duplicate DAG ids.",
    )
    validate.add_argument("package", metavar="PACKAGE", help=package_help)
    validate.set_defaults(function="validate")

    def export_command(
        name: str, help_text: str, description: str, default_target: str
    ) -> argparse.ArgumentParser:
        """A subcommand that writes into a TARGET folder: PACKAGE [TARGET]."""
        sub = command(name, help_text, description)
        sub.add_argument("package", metavar="PACKAGE", help=package_help)
        sub.add_argument(
            "target",
            metavar="TARGET",
            nargs="?",
            type=Path,
            default=Path(default_target),
            help=f"folder to write into (default: {default_target}); other files there are left untouched",
        )
        return sub

    export_dags = export_command(
        "export-dags",
        "write the Airflow DAG file of every workflow",
        "Write {dag_id}.py for every workflow of PACKAGE into TARGET, all at once or not at all, "
        "after loading the files in an Airflow DagBag.",
        "dags",
    )
    export_dags.add_argument(
        "--no-validate", action="store_true", help="skip loading the files in an Airflow DagBag"
    )
    export_dags.set_defaults(function="export_dags")

    export_notebooks = export_command(
        "export-notebooks",
        "write the Jupyter notebook of every workflow",
        "Write {dag_id}.ipynb for every workflow of PACKAGE into TARGET, all at once or not at all.",
        "notebooks",
    )
    export_notebooks.set_defaults(function="export_notebooks")

    export_dockerfile = export_command(
        "export-dockerfile",
        "write a Jupyter image definition serving the notebooks",
        "Write TARGET/Dockerfile and TARGET/notebooks/: a Jupyter image with the pipeline installed "
        "at its installed version and every workflow as a notebook.",
        "notebook-image",
    )
    export_dockerfile.add_argument(
        "--base-image",
        default=None,
        help="Jupyter base image (default: quay.io/jupyter/minimal-notebook with the lowest Python "
        "minor version the pipeline's Requires-Python allows, e.g. python-3.13)",
    )
    export_dockerfile.set_defaults(function="export_dockerfile")

    def add_workflow_arguments(sub: argparse.ArgumentParser) -> None:
        """PACKAGE [WORKFLOW]: one workflow of a package."""
        sub.add_argument("package", metavar="PACKAGE", help=package_help)
        sub.add_argument(
            "workflow",
            metavar="WORKFLOW",
            nargs="?",
            help="DAG id or workflow name (optional if the package has one workflow)",
        )

    graph = command(
        "graph",
        "print the Mermaid flowchart of a workflow",
        "Print the task graph of one workflow of PACKAGE as Mermaid flowchart text.",
    )
    add_workflow_arguments(graph)
    graph.add_argument(
        "--direction", choices=["TD", "LR"], default="TD", help="layout direction (default: TD)"
    )
    graph.set_defaults(function="graph")

    run = command(
        "run",
        "run one workflow on this machine",
        "Run one workflow of PACKAGE on this machine without an Airflow server. Engine local (default): "
        "every task in its own process exactly as a worker runs it, in dependency order, independent "
        "tasks in parallel; a failed task is reported on the interservice bus, no new task starts and "
        "the rest are skipped. Engine airflow: Airflow's own dag.test() on a throw-away SQLite database.",
    )
    add_workflow_arguments(run)
    run.add_argument(
        "--recipe-run-id",
        type=_recipe_run_id,
        required=True,
        metavar="N",
        help="recipe run id (non-negative integer) passed to every task",
    )
    from dkist_processing_core.engines import ENGINES

    run.add_argument(
        "--engine", choices=list(ENGINES), default="local", help="local (default) or airflow"
    )
    # Engine options: only those given reach the engine, which refuses the ones it does not take.
    options = run.add_argument_group("engine options")
    options.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="tasks at a time (default: CPU count; local engine)",
    )
    options.add_argument(
        "--log-dir",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="folder for the task logs (local engine; default: a folder under the system temp dir); "
        "a log the disk cannot take is truncated, with a line saying so",
    )
    options.add_argument(
        "--no-failure-report",
        dest="report_failures",
        action="store_false",
        default=argparse.SUPPRESS,
        help="do not report a failed task on the interservice bus (local engine)",
    )
    options.add_argument(
        "--wheelhouse",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="folder of wheels to install the pipeline from; built there if it lacks them (airflow engine)",
    )
    options.add_argument(
        "--keep",
        action="store_true",
        default=argparse.SUPPRESS,
        help="keep the temporary AIRFLOW_HOME and DAG folder (airflow engine)",
    )
    run.set_defaults(
        function="run",
        engine_options=tuple(action.dest for action in options._group_actions),
    )

    config = command(
        "config",
        "print the effective configuration (secrets masked)",
        "Print the configuration read from the environment, one VARIABLE=value per line; secrets are masked.",
    )
    config.add_argument("--json", action="store_true", help="print one JSON object instead")
    config.set_defaults(function="config")

    isb = command("isb", "interservice bus tools")
    isb_commands = isb.add_subparsers(
        dest="isb_command", metavar="ISB_COMMAND", parser_class=_Parser
    )
    flush = isb_commands.add_parser(
        "flush",
        help="send the failure reports waiting in the local outbox",
        description="Send every message waiting in the ISB outbox (reports the broker did not confirm in time).",
        parents=[common],
    )
    flush.add_argument(
        "--timeout",
        type=_flush_timeout,
        default=None,
        metavar="SECONDS",
        help=f"give up after this long, > 0 and <= {MAX_SECONDS} (default: ISB_PUBLISH_TIMEOUT)",
    )
    flush.set_defaults(function="isb_flush")
    isb.set_defaults(function=None, usage_of=isb)

    worker = command("worker", "tools for Airflow workers")
    worker_commands = worker.add_subparsers(
        dest="worker_command", metavar="WORKER_COMMAND", parser_class=_Parser
    )
    gc = worker_commands.add_parser(
        "gc",
        help="evict entries of this worker's venv cache (DKIST_VENV_CACHE_DIR)",
        description="Remove broken and half-built entries of the worker's venv cache, then entries not "
        "used for longer than --max-age, then the least recently used ones until the cache is at most "
        "--max-size. Entries that a running task holds are never removed.",
        parents=[common],
    )
    gc.add_argument(
        "--max-size", default=None, metavar="SIZE", help="e.g. 20G (K, M, G, T: powers of 1024)"
    )
    gc.add_argument("--max-age", default=None, metavar="AGE", help="e.g. 7d (s, m, h, d, w)")
    gc.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="the cache folder (default: $DKIST_VENV_CACHE_DIR)",
    )
    gc.add_argument(
        "--dry-run", action="store_true", help="say what would be removed, remove nothing"
    )
    gc.set_defaults(function="worker_gc")
    worker.set_defaults(function=None, usage_of=worker)
    return parser
