"""Check real DKIST pipelines from the index against dkist-processing-core 7.5.0 and this checkout.

    .venv/bin/python scripts/check_client.py dkist-processing-vbi==2.3.0 dkist-processing-cryonirsp
    .venv/bin/python scripts/check_client.py --no-suite dkist-processing-visp==5.11.0 -- -n 2

Runs tests/clients/test_clients.py, what CI checks of dkist-processing-test and -ops, on the named
pipelines instead (``DKIST_CHECK_CLIENTS``; no version: the latest; the real task, ``TASKS`` in
tests/clients/support.py, runs in the venv; ``--no-suite`` skips the pipeline's own tests, whose
failures on both cores are warnings). Arguments after ``--`` go to pytest, whose exit status it is.
Needs Python 3.13 (pyenv or ``DKIST_CLIENT_PYTHON``), Redis and RabbitMQ on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipelines", nargs="+", metavar="DIST[==VERSION]")
    parser.add_argument("--no-suite", action="store_true", help="skip the pipelines' own tests")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, pytest_args = parser.parse_args(argv[:split]), argv[split + 1 :]
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/clients/test_clients.py",
        "-p",
        "no:cacheprovider",
    ]
    command += ["-rA", "-k", "not client_suite"] if args.no_suite else ["-rA"]
    env = {**os.environ, "DKIST_CHECK_CLIENTS": " ".join(args.pipelines)}
    return subprocess.run([*command, *pytest_args], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
