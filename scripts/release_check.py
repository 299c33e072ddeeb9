"""Release check: a release tag names a distribution and the version that distribution declares.

    python scripts/release_check.py                         # the tags on HEAD (none: nothing to check)
    python scripts/release_check.py --tag core-task-v1.2.0  # a tag before it is pushed
    python scripts/release_check.py --tag v8.1.0 --dist dist  # and twine check --strict its files

Tags are ``<member>-v<version>`` for a member (``core-task-v1.2.0``) and ``v<version>`` for the
meta distribution, as CONTRIBUTING.md describes; the version must be exactly the one in the
distribution's version file (what ``hatch version`` prints in its folder), so an upload can never
carry a version other than its tag. With ``--dist``, the tagged distributions' wheels and sdists in
that folder must exist and pass ``twine check --strict``.

Exit status: 0 every tag matches, 1 a tag does not match or an artifact fails, 2 usage error.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workspace_members

__all__ = ["check_artifacts", "check_tag", "main", "tags_at_head"]

REPO_ROOT = workspace_members.REPO_ROOT


def tags_at_head(root: Path = REPO_ROOT) -> list[str]:
    result = subprocess.run(
        ["git", "tag", "--points-at", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    return result.stdout.split() if result.returncode == 0 else []


def _project_of(tag: str, root: Path) -> workspace_members.Project | None:
    # the longest prefix wins: "core-task-v" before the meta's "v"
    candidates = sorted(workspace_members.projects(root), key=lambda p: -len(p.tag_prefix))
    return next((p for p in candidates if tag.startswith(p.tag_prefix)), None)


def check_tag(tag: str, root: Path = REPO_ROOT) -> str | None:
    """A message when ``tag`` is not ``<prefix><version>`` of a distribution's declared version."""
    project = _project_of(tag, root)
    if project is None:
        prefixes = ", ".join(f"{p.tag_prefix}X.Y.Z" for p in workspace_members.projects(root))
        return f"{tag}: not a release tag; release tags are {prefixes}"
    tagged = tag.removeprefix(project.tag_prefix)
    if tagged != project.version:
        relative = project.version_file.relative_to(root)
        return (
            f"{tag}: {project.dist} is at {project.version} in {relative}, not {tagged}; "
            f"bump it (`hatch version {tagged}` in {project.path.relative_to(root).as_posix() or '.'}) "
            f"or move the tag"
        )
    return None


def check_artifacts(tag: str, dist: Path, root: Path = REPO_ROOT) -> str | None:
    """A message when the tagged distribution's wheel or sdist is missing or fails twine."""
    project = _project_of(tag, root)
    assert project is not None
    stem = f"{project.dist.replace('-', '_')}-{project.version}"
    artifacts = [dist / f"{stem}-py3-none-any.whl", dist / f"{stem}.tar.gz"]
    missing = [path.name for path in artifacts if not path.is_file()]
    if missing:
        return f"{tag}: {', '.join(missing)} not in {dist} (python scripts/build_dists.py {project.key})"
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, artifacts)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"{tag}: twine check --strict failed:\n{result.stdout}{result.stderr}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    parser.add_argument(
        "--tag", action="append", default=[], help="a tag to check (default: the tags on HEAD)"
    )
    parser.add_argument("--dist", type=Path, help="also twine-check the tagged artifacts here")
    args = parser.parse_args(argv)
    tags = args.tag or tags_at_head(args.root)
    if not tags:
        print("release_check: no release tag on HEAD; nothing to check")
        return 0
    problems = [message for tag in tags if (message := check_tag(tag, args.root))]
    if args.dist and not problems:
        problems += [m for tag in tags if (m := check_artifacts(tag, args.dist, args.root))]
    for problem in problems:
        print(f"release_check: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"release_check: {', '.join(tags)} match the declared versions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
