"""Build the five distributions (the four members and the meta) into one folder.

    python scripts/build_dists.py                  # all five into dist/
    python scripts/build_dists.py core-task --outdir /tmp/d
    python scripts/build_dists.py --wheel-only

``hatch build`` builds one project, so this runs ``python -m build`` on each: the sdist, then the
wheel from that sdist (a file missing from an sdist breaks here, not on a user's machine), with
this interpreter's hatchling (nothing is downloaded). Building all five removes their old ones.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import workspace_members


def main(argv: list[str] | None = None) -> int:
    projects = {project.key: project.path for project in workspace_members.projects()}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("projects", nargs="*", metavar="PROJECT", help=", ".join(projects))
    parser.add_argument("--outdir", type=Path, default=workspace_members.REPO_ROOT / "dist")
    parser.add_argument("--wheel-only", action="store_true", help="no sdists")
    args = parser.parse_args(argv)
    if unknown := set(args.projects) - set(projects):
        parser.error(f"unknown project(s) {sorted(unknown)}; choose from {list(projects)}")
    for stale in args.outdir.glob(f"{workspace_members.PACKAGE}*") if not args.projects else []:
        if stale.name.endswith((".whl", ".tar.gz")):
            stale.unlink()
    for name in args.projects or projects:
        command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(args.outdir)]
        command += ["--wheel"] * args.wheel_only + [str(projects[name])]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"build_dists: {name} failed:\n{result.stdout}{result.stderr}", file=sys.stderr)
            return 1
        print(result.stdout.splitlines()[-1])  # "Successfully built ..."
    return 0


if __name__ == "__main__":
    sys.exit(main())
