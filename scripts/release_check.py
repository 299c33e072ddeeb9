"""Release tags name a distribution and exactly the version ``hatch version`` gives it.

    python scripts/release_check.py                         # the tags on HEAD (gates:release)
    python scripts/release_check.py --tag core-task-v1.2.0  # a tag before it is pushed

Tags are ``<member>-v<version>`` (``core-task-v1.2.0``) and ``v<version>`` for the meta
distribution. The version is the one hatchling reads from the distribution's version file; the
artifacts are checked by ``twine check --strict`` (CONTRIBUTING.md, Releasing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import workspace_members


def check_tag(tag: str, root: Path) -> str | None:
    """A message when ``tag`` is not ``<prefix><version>`` of a distribution's declared version."""
    projects = workspace_members.projects(root)  # the meta's "v" last: core-task-v... is core-task
    project = next((p for p in projects if tag.startswith(p.tag_prefix)), None)
    if project is None:
        prefixes = ", ".join(f"{p.tag_prefix}X.Y.Z" for p in projects)
        return f"{tag}: not a release tag; release tags are {prefixes}"
    tagged, folder = tag.removeprefix(project.tag_prefix), project.path.relative_to(root)
    if tagged != project.version:
        return (
            f"{tag}: {project.dist} is at {project.version} in {project.version_file.relative_to(root)},"
            f" not {tagged}; bump it (`hatch version {tagged}` in {folder.as_posix()}) or move the tag"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=workspace_members.REPO_ROOT, help=argparse.SUPPRESS
    )
    parser.add_argument("--tag", action="append", default=[], help="default: the tags on HEAD")
    args = parser.parse_args(argv)
    git = ["git", "-C", str(args.root), "tag", "--points-at", "HEAD"]
    tags = args.tag or subprocess.run(git, capture_output=True, text=True).stdout.split()
    problems = [message for tag in tags if (message := check_tag(tag, args.root))]
    for problem in problems:
        print(f"release_check: {problem}", file=sys.stderr)
    if not problems:
        print(f"release_check: {', '.join(tags) or 'no release tag on HEAD; nothing to check'} OK")
    return int(bool(problems))


if __name__ == "__main__":
    sys.exit(main())
