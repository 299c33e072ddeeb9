"""The ``dkist-processing-core`` command line.

Exit status: 0 success, 1 validation failure / task failure / refused export, 2 usage error
(bad arguments, unknown package or workflow), 128 + the signal's number when a signal stopped it
(130 SIGINT / Ctrl-C, 143 SIGTERM, 129 SIGHUP). Errors are printed as one line
(validation reports as one line per problem) and without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

from dkist_processing_core.errors import EXIT_FAILURE
from dkist_processing_core.errors import EXIT_USAGE
from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.errors import UsageError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
]

PROG = "dkist-processing-core"
EXIT_OK, EXIT_INTERRUPTED = 0, 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------- argument types
def _recipe_run_id(text: str) -> int:
    from dkist_processing_core.run_task import InvocationError
    from dkist_processing_core.run_task import parse_recipe_run_id

    try:
        return parse_recipe_run_id(text)
    except InvocationError as error:
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
    """Seconds for ``isb flush --timeout``: > 0 and <= 3600, the range of ISB_PUBLISH_TIMEOUT."""
    from dkist_processing_core.isb import MAX_SECONDS

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 and <= {MAX_SECONDS:g}, got {text!r}"
        )
    return value


# --------------------------------------------------------------------------------- helpers
def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(command: str):  # type: ignore[no-untyped-def]
    return lambda message: _stderr(f"{command}: {message}")


def _quiet_airflow(debug: bool = False) -> None:
    """Before Airflow is imported in this process: no ~/airflow created, and Airflow's own log lines
    (which it writes to stdout, and which repeat what the report says) only with ``--debug``."""
    if not debug:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "CRITICAL")
    if "AIRFLOW_HOME" not in os.environ and not (Path.home() / "airflow").exists():
        home = tempfile.mkdtemp(prefix="dkist-airflow-home-")
        atexit.register(shutil.rmtree, home, True)
        os.environ["AIRFLOW_HOME"] = home


# -------------------------------------------------------------------------------- commands
def _cmd_validate(args: argparse.Namespace) -> int:
    from dkist_processing_core.build_utils import validate_workflows

    _quiet_airflow(args.debug)
    workflows = validate_workflows(args.package)
    names = ", ".join(workflow.dag_name for workflow in workflows) or "none"
    print(f"{args.package}: {len(workflows)} workflow(s) valid: {names}")
    return EXIT_OK


def _print_written(paths: list[Path], what: str, target: Path) -> None:
    for path in paths:
        print(path)
    _stderr(f"{PROG}: wrote {len(paths)} {what} to {target.absolute()}")


def _cmd_export_dags(args: argparse.Namespace) -> int:
    from dkist_processing_core.build_utils import export_dags

    if not args.no_validate:
        _quiet_airflow(args.debug)
    paths = export_dags(
        args.package,
        args.target,
        validate=not args.no_validate,
        progress=_progress("export-dags"),
    )
    _print_written(paths, "DAG file(s)", args.target)
    return EXIT_OK


def _cmd_export_notebooks(args: argparse.Namespace) -> int:
    from dkist_processing_core.build_utils import export_notebooks

    paths = export_notebooks(args.package, args.target, progress=_progress("export-notebooks"))
    _print_written(paths, "notebook(s)", args.target)
    return EXIT_OK


def _cmd_export_dockerfile(args: argparse.Namespace) -> int:
    from dkist_processing_core.build_utils import export_notebook_dockerfile

    if args.base_image is not None:
        try:
            from dkist_processing_core._dockerfile import validate_base_image

            validate_base_image(args.base_image)
        except ValueError as error:
            raise UsageError(str(error)) from None
    path = export_notebook_dockerfile(
        args.package,
        args.target,
        base_image=args.base_image,
        progress=_progress("export-dockerfile"),
    )
    print(path)
    _stderr(f"{PROG}: wrote the notebook image definition to {path.parent}")
    return EXIT_OK


def _cmd_graph(args: argparse.Namespace) -> int:
    from dkist_processing_core.build_utils import find_workflow
    from dkist_processing_core.build_utils import mermaid_flowchart

    workflow = find_workflow(args.package, args.workflow)
    sys.stdout.write(mermaid_flowchart(workflow, direction=args.direction))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from dkist_processing_core import runner
    from dkist_processing_core.build_utils import find_workflow

    workflow = find_workflow(args.package, args.workflow)
    given = {name: getattr(args, name) for name in args.engine_options if hasattr(args, name)}
    summary = runner.run_workflow(workflow, args.recipe_run_id, args.engine, **given)
    if not _print_to_stdout(summary.format()):
        _stderr(f"{PROG}: the summary was not printed: standard output is closed")
    if summary.interrupted:
        return 128 + summary.signal if summary.signal else EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILURE


def _print_to_stdout(text: str) -> bool:
    """Print ``text``; False if standard output is gone (``run ... | head`` closed it).

    Standard output then points at /dev/null, so that Python's own flush at exit cannot fail
    and turn the command's exit status into 120.
    """
    try:
        print(text, flush=True)
        return True
    except (BrokenPipeError, ValueError, OSError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no file descriptor behind sys.stdout
            pass
        return False


def _cmd_config(args: argparse.Namespace) -> int:
    from dkist_processing_core.config import core_configuration

    dumped = {name.upper(): value for name, value in core_configuration().masked_dump().items()}
    if args.json:
        print(json.dumps(dumped, indent=2, sort_keys=True))
    else:
        for name, value in dumped.items():
            print(f"{name}={value if isinstance(value, str) else json.dumps(value)}")
    return EXIT_OK


def _cmd_isb_flush(args: argparse.Namespace) -> int:
    from dkist_processing_core.isb import IsbTarget
    from dkist_processing_core.isb import flush_outbox

    target = IsbTarget.from_configuration()
    result = flush_outbox(target, timeout=args.timeout)
    line = (
        f"ISB outbox {target.outbox_dir}: {result.delivered} message(s) delivered to {target.broker}, "
        f"{result.remaining} remaining"
    )
    if result.remaining:
        _stderr(
            f"{PROG}: {line} ({result.error or 'time bound reached'}); run `{PROG} isb flush` again later"
        )
        return EXIT_FAILURE
    print(line)
    return EXIT_OK


# ---------------------------------------------------------------------------------- parser
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
    common = argparse.ArgumentParser(add_help=False)
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
    validate.set_defaults(handler=_cmd_validate)

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
    export_dags.set_defaults(handler=_cmd_export_dags)

    export_notebooks = export_command(
        "export-notebooks",
        "write the Jupyter notebook of every workflow",
        "Write {dag_id}.ipynb for every workflow of PACKAGE into TARGET, all at once or not at all.",
        "notebooks",
    )
    export_notebooks.set_defaults(handler=_cmd_export_notebooks)

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
    export_dockerfile.set_defaults(handler=_cmd_export_dockerfile)

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
    graph.set_defaults(handler=_cmd_graph)

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
        help="folder for the task logs (local engine; default: a folder under the system temp dir)",
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
        handler=_cmd_run,
        engine_options=tuple(action.dest for action in options._group_actions),
    )

    config = command(
        "config",
        "print the effective configuration (secrets masked)",
        "Print the configuration read from the environment, one VARIABLE=value per line; secrets are masked.",
    )
    config.add_argument("--json", action="store_true", help="print one JSON object instead")
    config.set_defaults(handler=_cmd_config)

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
        help="give up after this long, > 0 and <= 3600 (default: ISB_PUBLISH_TIMEOUT)",
    )
    flush.set_defaults(handler=_cmd_isb_flush)
    isb.set_defaults(handler=None, usage_of=isb)
    return parser


# ------------------------------------------------------------------------------------ main
def _failure_lines(error: BaseException) -> tuple[int, list[str]]:
    """Exit status and the lines to print for an error raised by a command."""
    from dkist_processing_core.build_utils import WorkflowValidationError

    if isinstance(error, WorkflowValidationError):
        return error.exit_status, [f"{PROG}: validation failed: {_message(error)}"]
    if isinstance(error, DKISTProcessingCoreError):
        return error.exit_status, [f"{PROG}: error: {_message(error)}"]
    return EXIT_FAILURE, [
        f"{PROG}: error: {type(error).__name__}: {_message(error)} (run with --debug for the traceback)"
    ]


def _message(error: BaseException) -> str:
    text = str(error).strip()
    return text if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    from dkist_processing_core._ownership import check_package_is_ours

    try:
        check_package_is_ours()
    except ImportError as error:
        _stderr(f"{PROG}: {error}")
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        usage_of = getattr(args, "usage_of", parser)
        _stderr(f"{usage_of.prog}: error: a command is required (see {usage_of.prog} --help)")
        return EXIT_USAGE
    try:
        return handler(args)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or a signal that stopped a run early
        _stderr(f"{PROG}: interrupted")
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
    except Exception as error:
        status, lines = _failure_lines(error)
        if args.debug:
            traceback.print_exc()
            details = [
                problem.detail for problem in getattr(error, "problems", []) if problem.detail
            ]
            for detail in details:
                _stderr(detail.rstrip())
        for line in lines:
            _stderr(line)
        return status


if __name__ == "__main__":
    sys.exit(main())
