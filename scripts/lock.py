"""The lock: ``requirements/constraints.txt`` and ``requirements-test.txt``, both resolved by uv.

    python scripts/lock.py            # after changing a dependency (keeps locked versions that fit)
    python scripts/lock.py --upgrade  # the newest allowed version of everything
    python scripts/lock.py --check    # exit 1 if re-resolving would change either file (gates:lock)

``requirements/constraints.txt``: ``uv pip compile --universal`` (oldest Python, markers for the
newer) of the hatch workspace's members with their features and the ``dev`` group; versions only,
applied by the hatch environments (``UV_CONSTRAINT``). ``requirements-test.txt``, for the README's
plain pip: the members (editable) and the ``test`` group resolved within that lock. ``--check``
resolves again with the committed files as preferences and fails on any difference (it needs the
package index, as ``uv lock --check`` does).
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parent.parent
FILES = ("requirements/constraints.txt", "requirements-test.txt")
PYTHON = "3.11"  # the oldest supported Python (requires-python); markers cover the newer ones


def resolve(root: Path, out: Path, *, upgrade: bool = False) -> None:
    """Write both files under ``out`` (the files already there are uv's preferences)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    members = config["tool"]["hatch"]["envs"]["default"]["workspace"]["members"]
    editables = "".join(f"-e {m['path']}[{','.join(m.get('features', []))}]\n" for m in members)
    own = [
        tomllib.loads((root / m["path"] / "pyproject.toml").read_text())["project"]["name"]
        for m in members
    ]
    base = [find_uv_bin(), "pip", "compile", "-", "--universal", "--python-version", PYTHON, "-q"]
    base += ["--custom-compile-command", "python scripts/lock.py"]
    lock, test = (out / name for name in FILES)
    no_emit = [arg for name in own for arg in ("--no-emit-package", name)]
    lock_options = ["--annotation-style=line", *no_emit, *["--upgrade"] * upgrade]
    commands = [
        [*base, "--group", "pyproject.toml:dev", *lock_options, "-o", lock],
        [*base, "--group", "pyproject.toml:test", "--no-annotate", "-c", lock, "-o", test],
    ]
    env = {key: value for key, value in os.environ.items() if key != "UV_CONSTRAINT"}
    for command in commands:
        result = subprocess.run(
            command, input=editables, cwd=root, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            sys.exit(f"lock: uv pip compile failed:\n{result.stdout}{result.stderr}")


def check(root: Path = ROOT) -> list[str]:
    """The unified diff of the committed files against a fresh resolution (empty: in sync)."""
    with tempfile.TemporaryDirectory(prefix="lock-check-") as scratch:
        (Path(scratch) / "requirements").mkdir()
        for name in FILES:
            shutil.copy(root / name, Path(scratch) / name)
        resolve(root, Path(scratch))
        texts = {
            name: [(d / name).read_text().splitlines() for d in (root, Path(scratch))]
            for name in FILES
        }
    return [
        line
        for name, (old, new) in texts.items()
        for line in difflib.unified_diff(old, new, name, "uv", lineterm="")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if the files are stale")
    mode.add_argument("--upgrade", action="store_true", help="take the newest allowed versions")
    args = parser.parse_args(argv)
    if not args.check:
        resolve(args.root, args.root, upgrade=args.upgrade)
        print(f"lock: wrote {' and '.join(FILES)}")
        return 0
    if diff := check(args.root):
        print("\n".join(diff), file=sys.stderr)
        print("lock: stale; run `python scripts/lock.py` and commit both files", file=sys.stderr)
        return 1
    print(f"lock: {' and '.join(FILES)} are what uv resolves from the pyproject files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
