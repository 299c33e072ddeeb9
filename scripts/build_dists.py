"""Build all five distributions (four members and the meta) into one folder: wheels and sdists.

    python scripts/build_dists.py                  # -> dist/
    python scripts/build_dists.py --outdir /tmp/d  # somewhere else
    python scripts/build_dists.py core-task        # only some of them ("meta" is the root)

`hatch build` at the root only builds the meta distribution, hence this script. Each project is
built with `python -m build --no-isolation`: first the sdist, then the wheel *from that sdist*,
so a file missing from an sdist breaks the build here rather than on a user's machine. Without
isolation no build environment is downloaded: the running interpreter needs `build` and
`hatchling` (both are in the `test` dependency group). Pass `--isolation` to let `build` fetch hatchling
into a throw-away environment instead (needs a package index).

Old artifacts of the five distributions in the output folder are removed first, so the folder
holds exactly one version of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["PROJECTS", "REPO_ROOT", "BuildError", "build_all", "build_project", "main"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workspace_members

REPO_ROOT = workspace_members.REPO_ROOT

# short name -> project folder (relative to the repository root): the members, lowest layer first,
# then the meta distribution (scripts/workspace_members.py reads them from packages/*/pyproject.toml)
PROJECTS: dict[str, Path] = {
    project.key: project.path.relative_to(REPO_ROOT) for project in workspace_members.projects()
}

# every artifact of ours starts with this (wheel and sdist file names use underscores)
_ARTIFACT_PREFIX = "dkist_processing_core"


class BuildError(RuntimeError):
    """A project failed to build; the message carries the build frontend's output."""


def _missing_build_tools() -> list[str]:
    missing = []
    for module in ("build", "hatchling"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def build_project(
    project_dir: Path,
    outdir: Path,
    *,
    wheel_only: bool = False,
    isolation: bool = False,
) -> list[Path]:
    """Build one project (sdist, then the wheel from the sdist) into ``outdir``; return the artifacts."""
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-dists-", dir=outdir) as scratch:
        command = [sys.executable, "-m", "build", "--outdir", scratch]
        if not isolation:
            command.append("--no-isolation")
        if wheel_only:
            command.append("--wheel")
        command.append(str(project_dir))
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(
                f"building {project_dir} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        artifacts = []
        for built in sorted(Path(scratch).iterdir()):
            artifacts.append(built.replace(outdir / built.name))
        return artifacts


def build_all(
    outdir: Path,
    names: list[str] | None = None,
    *,
    wheel_only: bool = False,
    isolation: bool = False,
    root: Path = REPO_ROOT,
) -> list[Path]:
    """Build the named projects (all five by default); return the artifacts written to ``outdir``."""
    names = names or list(PROJECTS)
    unknown = [name for name in names if name not in PROJECTS]
    if unknown:
        raise BuildError(f"unknown project(s) {unknown}; choose from {sorted(PROJECTS)}")
    outdir.mkdir(parents=True, exist_ok=True)
    if len(set(names)) == len(PROJECTS):
        for stale in outdir.glob(f"{_ARTIFACT_PREFIX}*"):
            if stale.suffix == ".whl" or stale.name.endswith(".tar.gz"):
                stale.unlink()
    artifacts: list[Path] = []
    for name in names:
        artifacts += build_project(
            root / PROJECTS[name], outdir, wheel_only=wheel_only, isolation=isolation
        )
    return artifacts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "projects",
        nargs="*",
        metavar="PROJECT",
        help=f"any of {', '.join(PROJECTS)} (default: all)",
    )
    parser.add_argument(
        "--outdir",
        type=Path,
        default=REPO_ROOT / "dist",
        help="output folder (default: dist/)",
    )
    parser.add_argument("--wheel-only", action="store_true", help="build wheels only, no sdists")
    parser.add_argument(
        "--isolation",
        action="store_true",
        help="build in isolated environments (downloads hatchling; needs a package index)",
    )
    args = parser.parse_args(argv)
    if not args.isolation and (missing := _missing_build_tools()):
        print(
            f"build_dists: {', '.join(missing)} not installed in {sys.executable}; "
            f"run `{sys.executable} -m pip install build hatchling` or pass --isolation",
            file=sys.stderr,
        )
        return 2
    try:
        artifacts = build_all(
            args.outdir.resolve(),
            args.projects,
            wheel_only=args.wheel_only,
            isolation=args.isolation,
        )
    except BuildError as error:
        print(f"build_dists: {error}", file=sys.stderr)
        return 1
    for artifact in artifacts:
        print(artifact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
