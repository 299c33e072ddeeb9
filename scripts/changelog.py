"""Changelog fragments: the rules towncrier has no setting for, and one distribution's release.

    python scripts/changelog.py check                      # the fragment gate (gates:changelog)
    python scripts/changelog.py release core-task --draft  # preview core-task's next entry
    python scripts/changelog.py release core-task          # write it into CHANGELOG.rst
    python scripts/changelog.py release meta --version 8.1.0

towncrier (``[tool.towncrier]``) refuses a name without a known type or issue number and orphans.
``check`` adds what it lets pass (a suffix other than ``.rst``, a counter that is not a number, a
leading zero, an empty file, a folder that is no section), then runs ``towncrier build --draft``.
``release`` renders one section under ``<dist name> <version> (<date>)`` through a configuration
that holds only it (towncrier renders all sections at once); the version defaults to hatch's.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import workspace_members


def _config(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["towncrier"]


def check_fragment_names(root: Path) -> list[str]:
    """One message per file or folder under ``changelog/`` that breaks a rule towncrier lets pass."""
    config = _config(root)
    directory = root / config["directory"]
    types = [entry["directory"] for entry in config["type"]]
    sections = {entry["path"] for entry in config["section"]}
    template = re.compile(rf"[1-9][0-9]*\.({'|'.join(types)})(\.[0-9]+)?\.rst")
    problems = []
    for path in sorted(directory.rglob("*")):
        name, folder = path.relative_to(root), path.parent.relative_to(directory).as_posix()
        if path.is_dir() and path.relative_to(directory).as_posix() not in sections:
            problems.append(
                f"{name}/ is not a changelog section; use one of: {sorted(sections - {''})}"
            )
        elif path.is_dir() or folder.strip(".") not in sections or path.name.startswith("."):
            continue  # reported with its folder; dot files are towncrier's to ignore
        elif not set(path.name.split(".")[1:]) & set(types):
            continue  # towncrier refuses it with its own message
        elif not template.fullmatch(path.name):
            problems.append(
                f"{name}: not the fragment template <PR>.<TYPE>[.<COUNTER>].rst ({', '.join(types)})"
            )
        elif not path.read_text().strip():
            problems.append(f"{name} is empty; write one or two sentences of reStructuredText")
    return problems


def release_config(key: str, root: Path) -> str:
    """A towncrier configuration (TOML) that sees only ``key``'s fragments, titled by its name."""
    config, project = _config(root), workspace_members.by_key(key, root)
    section = "" if key == workspace_members.META else key
    settings = {k: v for k, v in config.items() if k not in ("type", "section")}
    settings.update(name=project.dist, directory=f"{config['directory']}/{section}".rstrip("/"))
    tables = [("[tool.towncrier]", settings)] + [
        ("[[tool.towncrier.type]]", t) for t in config["type"]
    ]
    # JSON strings, lists of strings and booleans are TOML too
    return "".join(
        f"{h}\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items()) for h, t in tables
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=workspace_members.REPO_ROOT, help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="refuse badly named fragments and render a draft")
    release = commands.add_parser("release", help="render one distribution's fragments")
    release.add_argument("project", choices=[p.key for p in workspace_members.projects()])
    release.add_argument("--version", help="default: the project's version (hatch version)")
    release.add_argument("--draft", action="store_true", help="print instead of writing")
    args = parser.parse_args(argv)
    if problems := check_fragment_names(args.root):
        print("\n".join(f"changelog: {problem}" for problem in problems), file=sys.stderr)
        if args.command == "release":
            return 1
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
        command = ["build", "--draft", "--version", "0.0.0"]  # check: everything renders
        if args.command == "release":
            config.write(release_config(args.project, args.root))
            config.flush()
            version = args.version or workspace_members.by_key(args.project, args.root).version
            command = ["build", "--config", config.name, "--dir", str(args.root)]
            command += ["--version", version, "--draft" if args.draft else "--yes"]
        towncrier = [sys.executable, "-m", "towncrier", *command]
        result = subprocess.run(towncrier, cwd=args.root, capture_output=True, text=True)
    if result.returncode or args.command == "release":
        print(result.stdout + result.stderr, end="", file=sys.stderr if result.returncode else None)
    elif not problems:
        print("changelog: fragment names OK, the draft renders")
    return result.returncode or int(bool(problems))


if __name__ == "__main__":
    sys.exit(main())
