"""``python -m dkist_processing_core.worker run|gc``: the worker program's command line."""

from __future__ import annotations

import argparse
import os
import sys

from dkist_processing_core.worker._protocol import WorkerError
from dkist_processing_core.worker._protocol import emit

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dkist_processing_core.worker",
        description="The worker program of dkist-processing-core (see the module's documentation).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "run", help="prepare, set up and run the task the environment names (DAG files run this)"
    )
    gc = commands.add_parser("gc", help="evict entries of this worker's venv cache")
    gc.add_argument("--cache-dir", help="the cache folder (default: $DKIST_VENV_CACHE_DIR)")
    gc.add_argument("--max-size", metavar="SIZE", help="e.g. 20G: evict least recently used")
    gc.add_argument("--max-age", metavar="AGE", help="e.g. 7d: evict entries unused for longer")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed")
    verify = commands.add_parser(
        "verify", help="check every cached venv byte for byte; set damaged ones aside (exit 1)"
    )
    verify.add_argument("--cache-dir", help="the cache folder (default: $DKIST_VENV_CACHE_DIR)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        from dkist_processing_core.worker._steps import run_worker

        return run_worker(dict(os.environ))
    from dkist_processing_core.worker._gc import cache_folder
    from dkist_processing_core.worker._gc import gc_command
    from dkist_processing_core.worker._verify import verify_cache

    try:
        if args.command == "verify":
            return 1 if verify_cache(cache_folder(args.cache_dir)) else 0
        return gc_command(args.cache_dir, args.max_size, args.max_age, args.dry_run)
    except WorkerError as error:
        emit("error", step=args.command, status=error.status, message=str(error))
        return error.status


if __name__ == "__main__":
    sys.exit(main())
