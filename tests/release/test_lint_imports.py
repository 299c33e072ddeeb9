"""The import contracts (``[tool.importlinter]``), run by ``scripts/lint_imports.py``, catch violations.

Besides the checkout itself, each test builds a small stand-in tree with one empty-ish module per
name in the layers contract, where every module imports one module of the layer below it (what
the real code does). Injecting a single bad import into that tree must fail the check.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from helpers.release import MEMBERS
from helpers.release import PACKAGE
from helpers.release import REPO_ROOT
from helpers.release import run

SCRIPT = REPO_ROOT / "scripts" / "lint_imports.py"
# highest layer first, as the contract lists them
LAYER_MEMBERS = list(reversed(MEMBERS))


def layers() -> list[list[str]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[name.strip() for name in layer.split(":")] for layer in contract["layers"]]


def lint(packages_dir: Path) -> tuple[int, str]:
    result = run([sys.executable, SCRIPT, "--packages-dir", packages_dir])
    # lint-imports wraps long lines at the terminal width
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def module_path(packages_dir: Path, member: str, module: str) -> Path:
    folder = packages_dir / member / "src" / PACKAGE
    return folder / module / "__init__.py" if module == "export" else folder / f"{module}.py"


@pytest.fixture
def stand_in_tree(tmp_path: Path) -> Path:
    packages_dir = tmp_path / "packages"
    all_layers = layers()
    for index, (member, modules) in enumerate(zip(LAYER_MEMBERS, all_layers, strict=True)):
        below = all_layers[index + 1][-1] if index + 1 < len(all_layers) else None
        for module in modules:
            path = module_path(packages_dir, member, module)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"from {PACKAGE} import {below}\n" if below else "import json\n")
    # The two real modules whose TYPE_CHECKING imports the contract ignores (the ignore must match).
    for module in ("__init__.py", "workflow.py"):
        shutil.copy(
            REPO_ROOT / "packages" / "core-task" / "src" / PACKAGE / module,
            packages_dir / "core-task" / "src" / PACKAGE / module,
        )
    return packages_dir


def test_the_checkout_keeps_its_contracts() -> None:
    status, output = lint(REPO_ROOT / "packages")
    assert status == 0, output
    assert "0 broken" in output


def test_the_stand_in_tree_keeps_the_contracts(stand_in_tree: Path) -> None:
    status, output = lint(stand_in_tree)
    assert status == 0, output


def test_a_lower_layer_importing_a_higher_one_is_caught(stand_in_tree: Path) -> None:
    config = module_path(stand_in_tree, "core-telemetry", "config")
    config.write_text(config.read_text() + f"from {PACKAGE}.workflow import Workflow\n")
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}.config is not allowed to import {PACKAGE}.workflow" in output


def test_an_indirect_upward_import_is_caught(stand_in_tree: Path) -> None:
    top = next(name for name in layers()[0] if not name.startswith("_"))
    naming = module_path(stand_in_tree, "core-task", "naming")
    naming.write_text(naming.read_text() + f"from {PACKAGE} import {top}\n")
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}.naming is not allowed to import {PACKAGE}.{top}" in output


def test_the_task_layer_may_use_the_public_api(stand_in_tree: Path) -> None:
    # the package __init__ (core-task) mentions Workflow/Node for type checkers only; using the
    # public API from the task layer must not count as importing the workflow layer
    naming = module_path(stand_in_tree, "core-task", "naming")
    naming.write_text(naming.read_text() + f"from {PACKAGE} import TaskBase\n")
    status, output = lint(stand_in_tree)
    assert status == 0, output


def test_telemetry_using_the_package_init_of_core_task_is_caught(stand_in_tree: Path) -> None:
    # a telemetry-only install (the Airflow scheduler) has no dkist_processing_core/__init__.py
    config = module_path(stand_in_tree, "core-telemetry", "config")
    config.write_text(config.read_text() + f"from {PACKAGE} import ResourceQueue\n")
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}.config is not allowed to import {PACKAGE}.resource_queue" in output


@pytest.mark.parametrize("source", ["task", "run_task"])
@pytest.mark.parametrize("external", ["airflow", "nbformat"])
def test_the_task_runtime_importing_airflow_or_nbformat_is_caught(
    stand_in_tree: Path, source: str, external: str
) -> None:
    # even a lazy import inside a function counts: the worker must never need the package
    path = module_path(stand_in_tree, "core-task", source)
    path.write_text(path.read_text() + f"\n\ndef later():\n    import {external}\n")
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}.{source} is not allowed to import {external}" in output


def test_the_task_runtime_reaching_airflow_through_telemetry_is_caught(stand_in_tree: Path) -> None:
    isb = module_path(stand_in_tree, "core-telemetry", "isb")
    isb.write_text(isb.read_text() + "import airflow.sdk\n")
    task = module_path(stand_in_tree, "core-task", "task")
    task.write_text(task.read_text() + f"from {PACKAGE} import isb\n")
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}.task is not allowed to import airflow" in output


def test_a_module_missing_from_its_members_layer_is_reported(stand_in_tree: Path) -> None:
    module_path(stand_in_tree, "core-telemetry", "brand_new").write_text("")
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}.brand_new ships in core-telemetry but is not in its layer" in output


def test_a_module_listed_in_the_wrong_members_layer_is_reported(stand_in_tree: Path) -> None:
    moved = module_path(stand_in_tree, "core-task", "naming")
    target = module_path(stand_in_tree, "core-workflow", "naming")
    moved.rename(target)
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}.naming ships in core-workflow but is not in its layer" in output
    assert "the core-task layer lists 'naming', which core-task does not ship" in output


def test_a_file_shipped_by_two_members_is_refused(stand_in_tree: Path) -> None:
    shutil.copy(
        module_path(stand_in_tree, "core-task", "naming"),
        module_path(stand_in_tree, "core-workflow", "naming"),
    )
    status, output = lint(stand_in_tree)
    assert status == 1, output
    assert f"{PACKAGE}/naming.py is shipped by both core-workflow and core-task" in output
