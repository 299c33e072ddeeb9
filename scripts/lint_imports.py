"""Check the import contracts of ``[tool.importlinter]`` (pyproject.toml) on the merged package.

    python scripts/lint_imports.py                     # the checkout's packages/ (gates:imports)
    python scripts/lint_imports.py --packages-dir DIR  # another tree with <member>/src/ folders

Not plain ``lint-imports``: grimp finds a package by ``importlib.util.find_spec``, which never runs
the ``pkgutil.extend_path`` merge of the members' folders, so it would see core-task's alone. The
four trees are copied into one folder, as the four wheels install, and linted there. Checked
first, as no tool knows it: no file ships in two members, and each member's layer (highest
first) lists exactly its modules (a mismatch prints the lists to paste into the contract).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import workspace_members

PACKAGE = workspace_members.PACKAGE
LAYER_MEMBERS = [member.key for member in reversed(workspace_members.members())]


def merge_trees(packages_dir: Path, target: Path) -> list[str]:
    """Copy every member's tree into ``target/dkist_processing_core``; report files shipped twice."""
    owner: dict[Path, str] = {}
    problems = []
    for member in LAYER_MEMBERS:
        tree = packages_dir / member / "src" / PACKAGE
        for source in sorted(p for p in tree.rglob("*") if p.is_file() and p.suffix != ".pyc"):
            relative = source.relative_to(tree)
            if relative in owner:
                problems.append(
                    f"{PACKAGE}/{relative.as_posix()} is shipped by both {owner[relative]} and {member}"
                )
                continue
            owner[relative] = member
            (target / PACKAGE / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / PACKAGE / relative)
    return problems


def shipped_modules(packages_dir: Path, member: str) -> list[str]:
    """The top-level modules and subpackages of ``member``'s tree, sorted."""
    tree = packages_dir / member / "src" / PACKAGE
    return sorted(
        entry.stem
        for entry in tree.iterdir()
        if entry.name != "__init__.py"
        and (entry.suffix == ".py" or (entry.is_dir() and any(entry.rglob("*.py"))))
    )


def check_layers(layers: list[str], packages_dir: Path) -> list[str]:
    """One message per difference between the contract's layers and the members' modules."""
    if len(layers) != len(LAYER_MEMBERS):
        return [
            f"the layers contract has {len(layers)} layers; expected one per member: {LAYER_MEMBERS}"
        ]
    problems = []
    for member, layer in zip(LAYER_MEMBERS, layers, strict=True):
        declared = {name.strip(" ()") for name in re.split(r"[:|]", layer) if name.strip()}
        shipped = set(shipped_modules(packages_dir, member))
        problems += [
            f"{PACKAGE}.{name} ships in {member} but is not in its layer {layer!r}: add it there"
            for name in sorted(shipped - declared)
        ]
        problems += [
            f"the {member} layer lists {name!r}, which {member} does not ship"
            for name in sorted(declared - shipped)
        ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--packages-dir", type=Path, default=workspace_members.REPO_ROOT / "packages"
    )
    parser.add_argument(
        "--config", type=Path, default=workspace_members.REPO_ROOT / "pyproject.toml"
    )
    args = parser.parse_args(argv)
    contracts = tomllib.loads(args.config.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [contract["layers"] for contract in contracts if contract["type"] == "layers"]
    if problems := check_layers(layers, args.packages_dir):
        wanted = [" : ".join(shipped_modules(args.packages_dir, m)) for m in LAYER_MEMBERS]
        problems.append("the layers should read:\n" + "".join(f'    "{w}",\n' for w in wanted))
    lint_imports = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="lint-imports-") as scratch:
        problems += merge_trees(args.packages_dir, Path(scratch))
        command = [str(lint_imports) if lint_imports.is_file() else "lint-imports", "--no-cache"]
        command += ["--no-logo", str(args.config.resolve())]
        result = subprocess.run(command, cwd=scratch, env={**os.environ, "PYTHONPATH": scratch})
    for problem in problems:
        print(f"lint_imports: {problem}", file=sys.stderr)
    return int(result.returncode != 0 or bool(problems))


if __name__ == "__main__":
    sys.exit(main())
