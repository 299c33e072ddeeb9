"""Check the import contracts of ``[tool.importlinter]`` (pyproject.toml) on the whole package.

    python scripts/lint_imports.py                       # the checkout's packages/
    python scripts/lint_imports.py --packages-dir DIR    # another tree with core-*/src/ folders
    python scripts/lint_imports.py --update-layers       # rewrite the layer lists from the members

Why not plain ``lint-imports``: the four members put their modules into one package,
``dkist_processing_core``, but in the editable dev install each member keeps its own folder and
only core-task's folder holds ``__init__.py``. grimp (import-linter's graph builder) finds the
package through ``importlib.util.find_spec``, which does not run ``__init__`` and so never sees
the ``pkgutil.extend_path`` merge: it would analyse core-task's modules alone. This script copies
the four ``src/dkist_processing_core`` trees into one temporary folder (what a regular install of
all four wheels looks like), then runs ``lint-imports`` with that folder first on ``sys.path``.

Before that it checks that the layers contract lists, for each member, exactly the modules that
member ships (layer order: highest first, from each member's ``[tool.dkist-processing-core] layer``), so a module cannot slip into the
wrong layer, and that no file is shipped by two members.

Exit status: 0 contracts kept, 1 a contract is broken, the layers do not match the members or a
file is shipped by two members, 2 the tools or the configuration are missing.
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

__all__ = [
    "LAYER_MEMBERS",
    "LintSetupError",
    "check_layers_match_members",
    "layers_from_members",
    "main",
    "merge_trees",
    "update_layers",
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workspace_members

REPO_ROOT = workspace_members.REPO_ROOT
PACKAGE = workspace_members.PACKAGE

# members in the order of the layers contract (highest layer first), from each member's
# [tool.dkist-processing-core] layer
LAYER_MEMBERS = [project.key for project in reversed(workspace_members.members())]

_IGNORED_NAMES = {"__pycache__", "__init__.py", "py.typed"}


class LintSetupError(RuntimeError):
    """The trees or the configuration cannot be checked as they are."""


def _member_tree(packages_dir: Path, member: str) -> Path:
    tree = packages_dir / member / "src" / PACKAGE
    if not tree.is_dir():
        raise LintSetupError(f"{tree} does not exist: expected one src/{PACKAGE} folder per member")
    return tree


def merge_trees(packages_dir: Path, target: Path) -> list[str]:
    """Copy every member's ``src/dkist_processing_core`` into ``target/dkist_processing_core``.

    Returns one message per file that two members ship (the first member's copy is kept): two
    wheels installing the same file is a packaging error even when the imports are fine.
    """
    merged = target / PACKAGE
    owner: dict[Path, str] = {}
    problems = []
    for member in LAYER_MEMBERS:
        tree = _member_tree(packages_dir, member)
        for source in sorted(tree.rglob("*")):
            relative = source.relative_to(tree)
            if "__pycache__" in relative.parts or source.suffix == ".pyc" or source.is_dir():
                continue
            if relative in owner:
                problems.append(
                    f"{PACKAGE}/{relative.as_posix()} is shipped by both {owner[relative]} and {member}"
                )
                continue
            owner[relative] = member
            destination = merged / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    if not (merged / "__init__.py").is_file():
        raise LintSetupError(f"no member ships {PACKAGE}/__init__.py (core-task should)")
    return problems


def _top_level_modules(tree: Path) -> set[str]:
    names = set()
    for entry in tree.iterdir():
        if entry.name in _IGNORED_NAMES:
            continue
        if entry.is_dir() and any(entry.rglob("*.py")):
            names.add(entry.name)
        elif entry.suffix == ".py":
            names.add(entry.stem)
    return names


def _layers_contract(config: dict) -> dict:
    contracts = config.get("tool", {}).get("importlinter", {}).get("contracts", [])
    for contract in contracts:
        if contract.get("type") == "layers" and contract.get("containers") == [PACKAGE]:
            return contract
    raise LintSetupError(
        f"no layers contract with containers = [{PACKAGE!r}] in [tool.importlinter]"
    )


def _layer_modules(layer: str) -> set[str]:
    parts = layer.replace("|", ":").split(":")
    return {part.strip().strip("()").strip() for part in parts if part.strip()}


def check_layers_match_members(config: dict, packages_dir: Path) -> list[str]:
    """Return one message per difference between the layers and the members' modules."""
    layers = _layers_contract(config)["layers"]
    if len(layers) != len(LAYER_MEMBERS):
        return [
            f"the layers contract has {len(layers)} layers; expected one per member: {LAYER_MEMBERS}"
        ]
    problems = []
    for member, layer in zip(LAYER_MEMBERS, layers, strict=True):
        declared = _layer_modules(layer)
        shipped = _top_level_modules(_member_tree(packages_dir, member))
        for name in sorted(shipped - declared):
            problems.append(
                f"{PACKAGE}.{name} ships in {member} but is not in its layer {layer!r}: add it there "
                f"([tool.importlinter] in pyproject.toml, or run with --update-layers)"
            )
        for name in sorted(declared - shipped):
            problems.append(f"the {member} layer lists {name!r}, which {member} does not ship")
    return problems


def layers_from_members(packages_dir: Path) -> list[str]:
    """The layer lines the contract should have: each member's modules, sorted, highest first."""
    return [
        " : ".join(sorted(_top_level_modules(_member_tree(packages_dir, m)))) for m in LAYER_MEMBERS
    ]


_LAYERS_ARRAY = re.compile(
    r'(type = "layers"\n(?:[^\[\n][^\n]*\n)*?layers = \[\n)(.*?)(^\])',
    re.DOTALL | re.MULTILINE,
)


def update_layers(config_path: Path, packages_dir: Path) -> bool:
    """Rewrite the ``layers = [...]`` list of the layers contract in place; True if it changed."""
    text = config_path.read_text()
    lines = "".join(f'    "{line}",\n' for line in layers_from_members(packages_dir))
    new_text, count = _LAYERS_ARRAY.subn(lambda m: m.group(1) + lines + m.group(3), text, count=1)
    if count != 1:
        raise LintSetupError(
            f"cannot find the `layers = [` list of the layers contract in {config_path}"
        )
    config_path.write_text(new_text)
    return new_text != text


def _lint_imports_command() -> list[str]:
    script = Path(sys.executable).with_name("lint-imports")
    if script.is_file():
        return [str(script)]
    found = shutil.which("lint-imports")
    if found:
        return [found]
    raise LintSetupError(f"lint-imports not found: `{sys.executable} -m pip install import-linter`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages-dir", type=Path, default=REPO_ROOT / "packages")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "pyproject.toml")
    parser.add_argument(
        "--update-layers",
        action="store_true",
        help="first rewrite the layer lists in the config from the members' modules (review the diff)",
    )
    args = parser.parse_args(argv)
    config_path = args.config.resolve()
    try:
        if args.update_layers and update_layers(config_path, args.packages_dir):
            print(
                f"lint_imports: updated the layer lists in {config_path}",
                file=sys.stderr,
            )
        config = tomllib.loads(config_path.read_text())
        problems = check_layers_match_members(config, args.packages_dir)
        command = _lint_imports_command()
        with tempfile.TemporaryDirectory(prefix="lint-imports-") as scratch:
            problems += merge_trees(args.packages_dir, Path(scratch))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [scratch, env.get("PYTHONPATH")]))
            result = subprocess.run(
                [*command, "--no-cache", "--no-logo", str(config_path)],
                cwd=scratch,
                env=env,
                check=False,
            )
    except (LintSetupError, OSError, tomllib.TOMLDecodeError) as error:
        print(f"lint_imports: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"lint_imports: {problem}", file=sys.stderr)
    if result.returncode != 0 or problems:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
