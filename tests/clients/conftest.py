"""Fixtures of the client compatibility tests.

Venvs and downloaded wheelhouses are cached across runs (tests/helpers/client_venvs.py); this
session's products (our wheels, probe reports, client suite runs, the new-core wheelhouse) are
made once for all pytest-xdist workers in the session's shared temp folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clients.support import Client
from clients.support import run_client_suite
from clients.support import run_probe
from helpers.client_venvs import OLD_CORE
from helpers.client_venvs import PINS
from helpers.client_venvs import pinned_venv
from helpers.client_venvs import pip_download
from helpers.client_venvs import rewrite_requirement
from helpers.release import build_core_wheels
from helpers.release import build_once
from helpers.release import wheel_metadata

CLIENT_REQUIREMENTS = ["dkist-processing-test==1.46.0", "dkist-processing-ops==1.11.8"]
# What a dkist-processing-common release migrated to the new core would declare.
MIGRATED_CORE_PIN = "dkist-processing-core>=8"


@pytest.fixture(scope="session")
def core_wheels(shared_tmp: Path) -> list[Path]:
    """This checkout's five wheels, built by scripts/build_dists.py."""
    wheels = sorted(build_once(shared_tmp, "client-core-wheels", build_core_wheels).glob("*.whl"))
    assert len(wheels) == 5, f"expected five wheels, got {[w.name for w in wheels]}"
    return wheels


@pytest.fixture(scope="session")
def venvs(core_wheels: list[Path]) -> Callable[[Client], dict[str, Path]]:
    """``venvs(client)``: interpreters of the client's venvs, "old" with its 7.5.0, "new" with
    our wheels (see helper); the pinned clients share theirs."""

    def get(client: Client) -> dict[str, Path]:
        return {
            "old": pinned_venv("old", [client.old_core], pins=client.pins),
            "new": pinned_venv("new", core_wheels, pins=client.pins),
        }

    return get


def _cached_json(shared_tmp: Path, name: str, file: str, produce: Callable[[Path], None]) -> Any:
    return json.loads((build_once(shared_tmp, name, produce) / file).read_text())


@pytest.fixture(scope="session")
def probe(
    shared_tmp: Path, venvs: Callable[[Client], dict[str, Path]]
) -> Callable[[str, Client], dict[str, Any]]:
    """``probe(core, client)``: the client_probe.py report of ``client`` on core "old"/"new"."""

    def get(core: str, client: Client) -> dict[str, Any]:
        return _cached_json(
            shared_tmp,
            f"client-probe-{core}-{client.package}",
            "report.json",
            lambda folder: run_probe(venvs(client)[core], client, folder),
        )

    return get


@pytest.fixture(scope="session")
def client_suite(
    shared_tmp: Path, venvs: Callable[[Client], dict[str, Path]]
) -> Callable[[str, Client], dict[str, Any]]:
    """``client_suite(core, client)``: outcomes of the client's own tests on core "old"/"new"."""

    def get(core: str, client: Client) -> dict[str, Any]:
        return _cached_json(
            shared_tmp,
            f"client-suite-{core}-{client.package}",
            "outcome.json",
            lambda folder: run_client_suite(
                venvs(client)[core], client, folder, timeout=client.suite_timeout
            ),
        )

    return get


@pytest.fixture(scope="session")
def task_wheelhouses(shared_tmp: Path, core_wheels: list[Path]) -> dict[str, Path]:
    """Offline wheelhouses for the worker's pip: "old" resolves the clients with core 7.5.0 (as
    every pipeline does today, common pins it); "new" has common 14.8.0 rewritten to require
    ``dkist-processing-core>=8`` and our wheels instead of 7.5.0.

    Downloads are cached across runs (constrained by the pins, so they match the venvs); the
    "new" folder is assembled from links for this session.
    """
    old = pip_download(
        "clients", ["-c", str(PINS), *CLIENT_REQUIREMENTS], [PINS, *CLIENT_REQUIREMENTS]
    )
    requires = sorted(
        line
        for wheel in core_wheels
        for line in wheel_metadata(wheel).get_all("Requires-Dist") or []
    )
    core_deps = pip_download(
        "core-deps",
        ["--find-links", str(core_wheels[0].parent), "-c", str(PINS), *map(str, core_wheels)],
        [PINS, *requires],
    )

    def assemble(folder: Path) -> None:
        ours = "dkist_processing_core"  # our five wheels and the old core all start with it
        for source in [*old.iterdir(), *core_deps.iterdir()]:
            replaced = source.name.startswith((ours, "dkist_processing_common-"))
            if source.suffix == ".whl" and not replaced and not (folder / source.name).exists():
                (folder / source.name).symlink_to(source)
        for wheel in core_wheels:
            shutil.copy2(wheel, folder)
        (common,) = old.glob("dkist_processing_common-14.8.0-*.whl")
        rewrite_requirement(common, folder, OLD_CORE, MIGRATED_CORE_PIN)

    new = build_once(shared_tmp, "client-task-wheelhouse-new", assemble)
    return {"old": old, "new": new}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the lean-worker figures (test_lean_worker.py) also under pytest-xdist, which hides -s."""
    figures = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", [])
        if name == "lean_footprint"
    ]
    if figures:
        terminalreporter.section("lean worker, measured")
        for line in dict.fromkeys(figures):
            terminalreporter.write_line(str(line))
