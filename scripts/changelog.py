"""Changelog fragments (towncrier): check them, and render them at release time, per distribution.

    python scripts/changelog.py check                         # the fragment gate (CI: gates:changelog)
    python scripts/changelog.py check --compare-with main     # also: this branch adds a fragment
    python scripts/changelog.py release core-task --draft     # preview core-task's next entry
    python scripts/changelog.py release core-task             # write it into CHANGELOG.rst
    python scripts/changelog.py release meta --version 7.1.0  # the Workspace fragments

Fragments live in ``changelog/`` (workspace-wide changes, released with the meta distribution)
and ``changelog/<member>/`` (one folder per member). Their names follow the seed template
``<PR NUMBER>.<TYPE>[.<COUNTER>].rst``.

What towncrier enforces itself, from ``[tool.towncrier]`` in pyproject.toml: ``towncrier build``
fails on a name without a known type (``7.feat.rst``, ``notes.rst``: strict because ``ignore`` is
set), on an issue that is not a number (``issue_pattern``) and on orphan fragments
(``+x.misc.rst``: ``orphan_prefix`` is empty). ``check`` runs ``towncrier build --draft`` and adds
the rules towncrier has no setting for: towncrier still accepts ``7.feature.md``,
``7.feature.one.rst`` and ``07.feature.rst``, takes empty fragments, and never looks into a folder
that is not a configured section (``changelog/core-tsk/``); and the sections must be the workspace's
members (scripts/workspace_members.py).

``release`` renders one distribution's fragments into the shared ``CHANGELOG.rst`` under the
title ``<dist name> <version> (<date>)`` and removes those fragments only, using a towncrier
configuration generated from ``[tool.towncrier]`` (towncrier renders every section at once). The
version defaults to the one in the distribution's version file.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workspace_members

__all__ = [
    "DRAFT_VERSION",
    "check_fragment_names",
    "check_sections",
    "main",
    "release_config",
]

REPO_ROOT = workspace_members.REPO_ROOT
DRAFT_VERSION = "0.0.0-draft"


class ChangelogError(RuntimeError):
    """The configuration or the fragments cannot be used as they are."""


def _towncrier_config(root: Path) -> dict:
    config = tomllib.loads((root / "pyproject.toml").read_text()).get("tool", {}).get("towncrier")
    if not config:
        raise ChangelogError(f"no [tool.towncrier] in {root / 'pyproject.toml'}")
    return config


def check_sections(root: Path = REPO_ROOT) -> list[str]:
    """The towncrier sections must be the Workspace plus one per member, named by its distribution."""
    config = _towncrier_config(root)
    declared = {entry.get("path", ""): entry.get("name", "") for entry in config.get("section", [])}
    wanted = {"": "Workspace"} | {
        m.changelog_section: m.dist for m in workspace_members.members(root)
    }
    if declared == wanted:
        return []
    return [
        f"[[tool.towncrier.section]] of pyproject.toml lists {declared}; the workspace's members "
        f"need {wanted} (path = member folder, name = distribution)"
    ]


def check_fragment_names(root: Path = REPO_ROOT) -> list[str]:
    """One message per file or folder under ``changelog/`` that breaks a rule towncrier lets pass."""
    config = _towncrier_config(root)
    directory = root / config.get("directory", "changelog")
    types = [entry["directory"] for entry in config.get("type", [])]
    sections = {entry.get("path", "") for entry in config.get("section", [])} or {""}
    pattern = re.compile(rf"^[1-9][0-9]*\.(?:{'|'.join(map(re.escape, types))})(?:\.[0-9]+)?\.rst$")
    template = f"<PR NUMBER>.<TYPE>[.<COUNTER>].rst with TYPE one of {', '.join(types)}"
    problems = []
    if not directory.is_dir():
        return problems
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if "__pycache__" in relative.parts:
            continue
        if path.is_dir():
            if relative.as_posix() not in sections:
                problems.append(
                    f"{path.relative_to(root)}/ is not a changelog section; use one of: "
                    f"{', '.join(sorted(s for s in sections if s)) or '(none)'}"
                )
            continue
        section = relative.parent.as_posix() if relative.parent != Path(".") else ""
        if section not in sections or path.name.startswith("."):
            continue  # reported with its folder; dot files are towncrier's to ignore
        if not set(path.name.split(".")[1:]) & set(types):
            continue  # towncrier refuses it with its own message
        if not pattern.match(path.name):
            problems.append(f"{path.relative_to(root)}: not the fragment template; use {template}")
        elif not path.read_text().strip():
            problems.append(
                f"{path.relative_to(root)} is empty; write one or two sentences of reStructuredText"
            )
    return problems


def _towncrier(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "towncrier", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # JSON strings, numbers and lists of strings are valid TOML


def release_config(project: str, root: Path = REPO_ROOT) -> str:
    """A towncrier configuration (TOML text) that sees only ``project``'s fragments."""
    base = _towncrier_config(root)
    target = workspace_members.by_key(project, root)
    directory = "/".join(
        filter(None, [base.get("directory", "changelog"), target.changelog_section])
    )
    settings = {key: value for key, value in base.items() if key not in ("section", "type")}
    settings.update(directory=directory, name=target.dist)
    lines = ["[tool.towncrier]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    for entry in base.get("type", []):
        lines.append("\n[[tool.towncrier.type]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"


def cmd_check(args: argparse.Namespace) -> int:
    problems = check_sections(args.root) + check_fragment_names(args.root)
    for problem in problems:
        print(f"changelog: {problem}", file=sys.stderr)
    draft = _towncrier(["build", "--draft", "--version", DRAFT_VERSION], args.root)
    if draft.returncode != 0:
        print(
            f"changelog: `towncrier build --draft` failed:\n{draft.stdout}{draft.stderr}",
            file=sys.stderr,
        )
        return 1
    if args.verbose:
        print(draft.stdout)
    if args.compare_with:
        check = _towncrier(["check", "--compare-with", args.compare_with], args.root)
        if check.returncode != 0:
            print(
                f"changelog: `towncrier check` failed:\n{check.stdout}{check.stderr}",
                file=sys.stderr,
            )
            return 1
    if problems:
        return 1
    print("changelog: fragment names OK, draft renders")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    problems = check_sections(args.root) + check_fragment_names(args.root)
    if problems:
        for problem in problems:
            print(f"changelog: {problem}", file=sys.stderr)
        return 1
    version = args.version or workspace_members.by_key(args.project, args.root).version
    with tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="towncrier-") as config:
        config.write(release_config(args.project, args.root))
        config.flush()
        command = [
            "build",
            "--config",
            config.name,
            "--dir",
            str(args.root),
            "--version",
            version,
        ]
        command.append("--draft" if args.draft else "--yes")
        result = _towncrier(command, args.root)
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr, end="")
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="refuse badly named fragments and render a draft")
    check.add_argument(
        "--compare-with",
        metavar="BRANCH",
        help="also run `towncrier check` against BRANCH",
    )
    check.add_argument("-v", "--verbose", action="store_true", help="print the draft")
    check.set_defaults(run=cmd_check)
    release = commands.add_parser(
        "release", help="render one distribution's fragments into CHANGELOG.rst"
    )
    release.add_argument("project", choices=[p.key for p in workspace_members.projects()])
    release.add_argument("--version", help="default: the version in the project's version file")
    release.add_argument("--draft", action="store_true", help="print instead of writing")
    release.set_defaults(run=cmd_release)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (
        ChangelogError,
        OSError,
        tomllib.TOMLDecodeError,
        KeyError,
        workspace_members.WorkspaceError,
    ) as error:
        print(f"changelog: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
