"""The ``dkist-processing-core`` command line.

Exit status: 0 success, 1 validation failure / task failure / refused export, 2 usage error
(bad arguments, unknown package or workflow), 130 interrupted. Errors are printed as one line
(validation reports as one line per problem) and without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

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
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit status 2)."""


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
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
    if args.engine == "airflow":
        if args.jobs is not None or args.log_dir is not None or args.no_failure_report:
            raise UsageError(
                "--jobs, --log-dir and --no-failure-report apply to the local engine only"
            )
        summary = runner.run_airflow(
            workflow, args.recipe_run_id, wheelhouse=args.wheelhouse, keep=args.keep
        )
    else:
        if args.wheelhouse is not None or args.keep:
            raise UsageError("--wheelhouse and --keep apply to --engine airflow only")
        summary = runner.run_local(
            workflow,
            args.recipe_run_id,
            jobs=args.jobs,
            log_dir=args.log_dir,
            report_failures=not args.no_failure_report,
        )
    print(summary.format(), flush=True)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILURE


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


def _cmd_worker_gc(args: argparse.Namespace) -> int:
    from dkist_processing_core._worker_gc import collect_garbage
    from dkist_processing_core._worker_gc import human_size
    from dkist_processing_core._worker_gc import parse_age
    from dkist_processing_core._worker_gc import parse_size

    cache_dir = args.cache_dir or os.environ.get("DKIST_VENV_CACHE_DIR")
    if not cache_dir:
        raise UsageError("no cache folder: pass --cache-dir DIR or set DKIST_VENV_CACHE_DIR")
    if not os.path.isabs(cache_dir):
        raise UsageError(f"the cache folder must be an absolute path, got {cache_dir!r}")
    try:
        max_size = parse_size(args.max_size) if args.max_size is not None else None
        max_age = parse_age(args.max_age) if args.max_age is not None else None
    except ValueError as error:
        raise UsageError(str(error)) from None
    report = collect_garbage(
        Path(cache_dir), max_size=max_size, max_age=max_age, dry_run=args.dry_run, say=print
    )
    removed = "would remove" if args.dry_run else "removed"
    print(
        f"worker gc: {report.entries} entries ({human_size(report.size_before)}); {removed} "
        f"{report.removed} ({human_size(report.removed_size)}); {human_size(report.size_after)} left; "
        f"{report.in_use} in use, {report.busy} busy"
    )
    if report.errors:
        _stderr(f"{PROG}: worker gc: {len(report.errors)} entries could not be removed")
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------------------------- parser
def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    parts = []
    for dist in ("build", "workflow", "task", "telemetry"):
        name = f"dkist-processing-core-{dist}"
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
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
    run.add_argument(
        "--engine", choices=["local", "airflow"], default="local", help="local (default) or airflow"
    )
    run.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        default=None,
        metavar="N",
        help="tasks at a time (default: CPU count; local engine)",
    )
    run.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the task logs (local engine; default: a folder under the system temp dir)",
    )
    run.add_argument(
        "--no-failure-report",
        action="store_true",
        help="do not report a failed task on the interservice bus (local engine)",
    )
    run.add_argument(
        "--wheelhouse",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of wheels to install the pipeline from; built there if it lacks them (airflow engine)",
    )
    run.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary AIRFLOW_HOME and DAG folder (airflow engine)",
    )
    run.set_defaults(handler=_cmd_run)

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
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="give up after this long (default: ISB_PUBLISH_TIMEOUT)",
    )
    flush.set_defaults(handler=_cmd_isb_flush)
    isb.set_defaults(handler=None, usage_of=isb)

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
    gc.add_argument("--max-size", default=None, metavar="SIZE", help="e.g. 20G (K, M, G, T: powers of 1024)")
    gc.add_argument("--max-age", default=None, metavar="AGE", help="e.g. 7d (s, m, h, d, w)")
    gc.add_argument(
        "--cache-dir", default=None, metavar="DIR", help="the cache folder (default: $DKIST_VENV_CACHE_DIR)"
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    gc.set_defaults(handler=_cmd_worker_gc)
    worker.set_defaults(handler=None, usage_of=worker)
    return parser


# ------------------------------------------------------------------------------------ main
def _failure_lines(error: BaseException) -> tuple[int, list[str]]:
    """Exit status and the lines to print for an error raised by a command."""
    from dkist_processing_core._export_target import ExportTargetError
    from dkist_processing_core.build_utils import UnknownPackageError
    from dkist_processing_core.build_utils import WorkflowNotFoundError
    from dkist_processing_core.build_utils import WorkflowValidationError

    if isinstance(error, UsageError | UnknownPackageError | WorkflowNotFoundError):
        return EXIT_USAGE, [f"{PROG}: error: {_message(error)}"]
    if isinstance(error, WorkflowValidationError):
        return EXIT_FAILURE, [f"{PROG}: validation failed: {_message(error)}"]
    if isinstance(error, ExportTargetError):
        return EXIT_FAILURE, [f"{PROG}: error: {_message(error)}"]
    from dkist_processing_core.config import ConfigurationError
    from dkist_processing_core.runner import RunError

    if isinstance(error, RunError | ConfigurationError):
        return EXIT_FAILURE, [f"{PROG}: error: {_message(error)}"]
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
    except KeyboardInterrupt:
        _stderr(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
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
