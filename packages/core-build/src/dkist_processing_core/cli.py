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
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from dkist_processing_core._cli_parser import PROG
from dkist_processing_core._cli_parser import build_parser
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

EXIT_OK, EXIT_INTERRUPTED = 0, 130


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


def _cmd_worker_gc(args: argparse.Namespace) -> int:
    """The worker program's own gc (core-task): the same events, options and exit status."""
    from dkist_processing_core.worker._gc import gc_command
    from dkist_processing_core.worker._protocol import WorkerError

    try:
        return gc_command(args.cache_dir, args.max_size, args.max_age, args.dry_run)
    except WorkerError as error:  # gc_command raises it only for a bad option (status 2)
        raise UsageError(str(error)) from None


#: ``function`` of the parsed arguments (set by each subcommand) -> the function that runs it
COMMANDS = {
    "validate": _cmd_validate,
    "export_dags": _cmd_export_dags,
    "export_notebooks": _cmd_export_notebooks,
    "export_dockerfile": _cmd_export_dockerfile,
    "graph": _cmd_graph,
    "run": _cmd_run,
    "config": _cmd_config,
    "isb_flush": _cmd_isb_flush,
    "worker_gc": _cmd_worker_gc,
}


# ------------------------------------------------------------------------------------ main
def _failure_line(error: BaseException) -> tuple[int, str]:
    """Exit status and the line to print for an error raised by a command."""
    from dkist_processing_core.build_utils import WorkflowValidationError

    message = str(error).strip() or type(error).__name__
    if isinstance(error, WorkflowValidationError):
        return error.exit_status, f"{PROG}: validation failed: {message}"
    if isinstance(error, DKISTProcessingCoreError):
        return error.exit_status, f"{PROG}: error: {message}"
    return EXIT_FAILURE, (
        f"{PROG}: error: {type(error).__name__}: {message} (run with --debug for the traceback)"
    )


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
    function = getattr(args, "function", None)
    if function is None:
        usage_of = getattr(args, "usage_of", parser)
        _stderr(f"{usage_of.prog}: error: a command is required (see {usage_of.prog} --help)")
        return EXIT_USAGE
    try:
        return COMMANDS[function](args)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or a signal that stopped a run early
        _stderr(f"{PROG}: interrupted")
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
    except Exception as error:
        status, line = _failure_line(error)
        if args.debug:
            traceback.print_exc()
            for problem in getattr(error, "problems", []):
                if problem.detail:
                    _stderr(problem.detail.rstrip())
        _stderr(line)
        return status


if __name__ == "__main__":
    sys.exit(main())
