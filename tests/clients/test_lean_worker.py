"""A lean worker: real pipelines on dkist-processing-core-task alone (issue 21, item 1).

This does what docs/migration.md tells dkist-processing-common's maintainers, before they release
it: the dkist-processing-common 14.8.0 wheel from the package index gets its
``Requires-Dist: dkist-processing-core==7.5.0`` line rewritten to the requirement of the guide's
``dkist-processing-common`` row (read from docs/migration.md here, so the documented line is the
tested line, word for word). That wheel goes into a find-links folder beside this checkout's
core-task and core-telemetry wheels and nothing else of ours (no core-workflow, core-build or meta
wheel is in reach; the package index has none of our 1.x distributions), and uv installs it on
Python 3.13 together with real pipelines from the index: dkist-processing-test 1.46.0 and
dkist-processing-vbi 2.3.0. The rewritten wheel is a direct file requirement, so uv cannot take
the index's 14.8.0 (same name and version) instead; the installed METADATA is checked.

Found, not assumed: the pipelines declare no dkist-processing-core in their own base requirements
(checked below), only in their ``frozen`` extra, so the guide's first row needs no rewrite of
them. They are installed without ``[frozen]``: it pins dkist-processing-core 7.5.0, and
``certifi==2026.10.19``, which this machine's index does not serve (only ``.post1``).

For comparison, a "7.5.0" venv is built the same way (uv, Python 3.13, the same pipeline
requirements, without ``[frozen]``) with common as published, so with dkist-processing-core 7.5.0.
Its ``uv pip freeze`` constrains the lean venv: both hold the same versions of everything they
share and their figures differ by the core alone. It is not the "old" venv of test_clients.py,
which holds ops and the clients' test tools instead of vbi.

Everything is cached under CACHE_ROOT (tests/helpers/client_venvs.py), keyed by content and built
once under a file lock: a warm run costs the task-module imports and one task run. The test needs
no service: the task's services are addresses where nothing listens.

The figures (packages and MB of both venvs) are printed (``-s`` without xdist) and shown in the
terminal summary under "lean worker, measured" (tests/clients/conftest.py), xdist or not.
``DKIST_LEAN_ALL_PIPELINES=1`` adds a lean venv of each of the six pipelines alone (the figures of
docs/migration.md's "Lean worker, measured"); CI runs the default lineup only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from clients.support import client_env
from dkist_processing_core.workflow import workflow_name_from_details
from helpers.client_venvs import CACHE_ROOT
from helpers.client_venvs import OLD_CORE
from helpers.client_venvs import digest
from helpers.client_venvs import pip_download
from helpers.client_venvs import prune_stale
from helpers.client_venvs import python313
from helpers.client_venvs import rewrite_requirement
from helpers.client_venvs import uv_binary
from helpers.release import REPO_ROOT
from helpers.release import build_once
from helpers.release import run
from helpers.services import free_port
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.clients

MIGRATION_GUIDE = REPO_ROOT / "docs" / "migration.md"
PROBE = Path(__file__).with_name("lean_probe.py")
COMMON = "dkist-processing-common==14.8.0"
# Our distributions a lean worker holds; anything else of ours, or Airflow, must be absent.
LEAN_CORE = {"dkist-processing-core-task", "dkist-processing-core-telemetry"}
NOT_ON_A_LEAN_WORKER = {
    "dkist-processing-core",  # 7.5.0, or our meta distribution
    "dkist-processing-core-workflow",
    "dkist-processing-core-build",
    "apache-airflow",
    "apache-airflow-core",
    "apache-airflow-task-sdk",
}


@dataclass(frozen=True)
class Pipeline:
    dist: str
    version: str

    @property
    def package(self) -> str:
        return self.dist.replace("-", "_")

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


TEST = Pipeline("dkist-processing-test", "1.46.0")
VBI = Pipeline("dkist-processing-vbi", "2.3.0")
# the six pipelines of docs/migration.md, each at a version that uses common 14.8.0
ALL_PIPELINES = [
    TEST,
    Pipeline("dkist-processing-ops", "1.11.8"),
    VBI,
    Pipeline("dkist-processing-visp", "5.11.0"),
    Pipeline("dkist-processing-cryonirsp", "4.1.1"),
    Pipeline("dkist-processing-dlnirsp", "1.9.0"),
]
LINEUPS: dict[str, tuple[Pipeline, ...]] = {"test+vbi": (TEST, VBI)}
if os.environ.get("DKIST_LEAN_ALL_PIPELINES"):
    LINEUPS |= {p.dist.removeprefix("dkist-processing-"): (p,) for p in ALL_PIPELINES}
WITH_TEST = [name for name, lineup in LINEUPS.items() if TEST in lineup]


def guide_requirement_for_common() -> str:
    """The "now" cell of docs/migration.md's ``dkist-processing-common`` row: one requirement."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in MIGRATION_GUIDE.read_text().splitlines()
        if line.startswith("|")
    ]
    matching = [row for row in rows if row[0] == "`dkist-processing-common`"]
    assert len(matching) == 1, f"{MIGRATION_GUIDE}: expected one `dkist-processing-common` row"
    (row,) = matching
    header = rows[0]
    assert header[-1] == "now", f"{MIGRATION_GUIDE}: the last column is {header[-1]!r}, not now"
    match = re.fullmatch(r"`([^`]+)`", row[-1])
    assert match, (
        f"{MIGRATION_GUIDE}: the `dkist-processing-common` row's 'now' cell must be exactly one "
        f"requirement in backticks (the line common declares), not {row[-1]!r}"
    )
    return match.group(1)


# ----------------------------------------------------------------------------- cached venvs


def _python_version(python: Path) -> str:
    return run([python, "-c", "import sys; print(sys.version)"]).stdout.strip()


def _uv_install(python: Path, arguments: list[str | Path]) -> None:
    """``uv pip install`` (with dependencies) from uv's cache if it can, else from the index."""
    base = [uv_binary(), "pip", "install", "--quiet", "--python", python, *arguments]
    if run([*base, "--offline"]).returncode == 0:
        return
    result = run(base)
    assert result.returncode == 0, (
        "uv pip install of a lean-worker venv failed (a cold cache needs the package index once):"
        f"\n{result.stdout}{result.stderr}"
    )


def _site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


def _footprint(venv: Path) -> dict[str, Any]:
    """Distributions (name==version) and MB (10**6 bytes) of the files, .pyc and symlinks left out.

    Measured once, right after the install: bytes as a worker's copy of the venv would hold them
    (uv hard-links from its cache; each file counts fully).
    """
    size = 0
    for root, dirs, files in os.walk(venv):
        dirs[:] = [name for name in dirs if name != "__pycache__"]
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                size += path.stat().st_size
    dists = sorted(
        f"{canonicalize_name(d.metadata['Name'])}=={d.version}"
        for d in metadata.distributions(path=[str(_site_packages(venv))])
    )
    return {"dists": dists, "mb": round(size / 1e6, 1)}


def _new_venv(folder: Path) -> Path:
    result = run([uv_binary(), "venv", "--quiet", "--python", python313(), folder / "venv"])
    assert result.returncode == 0, f"uv venv failed:\n{result.stdout}{result.stderr}"
    return folder / "venv" / "bin" / "python"


def _reference_venv(name: str, lineup: tuple[Pipeline, ...]) -> Path:
    """The lineup with dkist-processing-common as published, so on dkist-processing-core 7.5.0."""
    requirements = [p.requirement for p in lineup]
    key = digest(_python_version(python313()), *requirements)

    def produce(folder: Path) -> None:
        python = _new_venv(folder)
        _uv_install(python, requirements)
        freeze = run([uv_binary(), "pip", "freeze", "--python", python])
        assert freeze.returncode == 0, freeze.stderr
        (folder / "freeze.txt").write_text(freeze.stdout)
        (folder / "footprint.json").write_text(json.dumps(_footprint(folder / "venv")))

    root = CACHE_ROOT / "venvs"
    folder = build_once(root, f"core750-{name}-{key}", produce)
    os.utime(root / f"core750-{name}-{key}.done")
    prune_stale(root, f"core750-{name}", folder)
    return folder


def _find_links(core_wheels: list[Path], requirement: str) -> Path:
    """Our core-task and core-telemetry wheels and common 14.8.0 requiring ``requirement``."""
    ours = [w for w in core_wheels if canonicalize_name(w.name.split("-")[0]) in LEAN_CORE]
    assert len(ours) == 2, f"no core-task and core-telemetry wheels in {core_wheels}"
    downloaded = pip_download("lean-common", ["--no-deps", COMMON], ["--no-deps", COMMON])
    (common,) = downloaded.glob("dkist_processing_common-14.8.0-*.whl")
    key = digest(common, requirement, *ours)

    def produce(folder: Path) -> None:
        for wheel in ours:
            shutil.copy2(wheel, folder)
        rewrite_requirement(common, folder, OLD_CORE, requirement)

    root = CACHE_ROOT / "wheelhouses"
    folder = build_once(root, f"lean-find-links-{key}", produce)
    os.utime(root / f"lean-find-links-{key}.done")
    prune_stale(root, "lean-find-links", folder)
    return folder


def _lean_venv(name: str, lineup: tuple[Pipeline, ...], find_links: Path, reference: Path) -> Path:
    """The lineup with common from ``find_links`` (a direct file requirement), same versions as
    the 7.5.0 ``reference`` for everything both hold."""
    requirements = [p.requirement for p in lineup]
    ours = ("dkist-processing-core==", "dkist-processing-common==")
    constraints = [
        line
        for line in (reference / "freeze.txt").read_text().splitlines()
        if line.strip() and not line.startswith(ours)
    ]
    (common,) = find_links.glob("dkist_processing_common-*.whl")
    key = digest(_python_version(python313()), find_links.name, *constraints, *requirements)

    def produce(folder: Path) -> None:
        (folder / "constraints.txt").write_text("\n".join(constraints) + "\n")
        python = _new_venv(folder)
        arguments: list[str | Path] = ["--find-links", find_links]
        arguments += ["-c", folder / "constraints.txt", common, *requirements]
        _uv_install(python, arguments)
        (folder / "footprint.json").write_text(json.dumps(_footprint(folder / "venv")))

    root = CACHE_ROOT / "venvs"
    folder = build_once(root, f"lean-{name}-{key}", produce)
    os.utime(root / f"lean-{name}-{key}.done")
    prune_stale(root, f"lean-{name}", folder)
    return folder


@dataclass(frozen=True)
class LeanWorker:
    name: str
    lineup: tuple[Pipeline, ...]
    find_links: Path
    venv: Path  # the lean venv folder
    footprint: dict[str, Any]
    reference_footprint: dict[str, Any]  # the 7.5.0 venv's
    report: dict[str, Any]  # lean_probe.py's

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return _site_packages(self.venv)

    def installed(self) -> dict[str, metadata.Distribution]:
        return {
            canonicalize_name(d.metadata["Name"]): d
            for d in metadata.distributions(path=[str(self.site_packages)])
        }


def _probe(python: Path, lineup: tuple[Pipeline, ...], folder: Path) -> None:
    (folder / "cwd").mkdir()
    result = run(
        [python, "-I", PROBE, folder / "report.json", *(p.package for p in lineup)],
        env=client_env(),
        cwd=folder / "cwd",
        timeout=600,
    )
    if result.returncode != 0 or not (folder / "report.json").exists():
        output = (result.stdout + result.stderr)[-6000:]
        (folder / "report.json").write_text(json.dumps({"crash": output}))


@pytest.fixture(scope="session")
def lean_worker(shared_tmp: Path, core_wheels: list[Path]) -> Callable[[str], LeanWorker]:
    """``lean_worker(name)``: the lean venv of ``LINEUPS[name]``, its figures and its probe report."""
    made: dict[str, LeanWorker] = {}

    def get(name: str) -> LeanWorker:
        if name not in made:
            lineup = LINEUPS[name]
            find_links = _find_links(core_wheels, guide_requirement_for_common())
            reference = _reference_venv(name, lineup)
            venv = _lean_venv(name, lineup, find_links, reference) / "venv"
            report_folder = build_once(
                shared_tmp,
                f"lean-probe-{name}",
                lambda folder: _probe(venv / "bin" / "python", lineup, folder),
            )
            report = json.loads((report_folder / "report.json").read_text())
            assert "crash" not in report, f"lean_probe.py crashed:\n{report['crash']}"
            made[name] = LeanWorker(
                name=name,
                lineup=lineup,
                find_links=find_links,
                venv=venv,
                footprint=json.loads((venv.parent / "footprint.json").read_text()),
                reference_footprint=json.loads((reference / "footprint.json").read_text()),
                report=report,
            )
        return made[name]

    return get


# ------------------------------------------------------------------------------------ tests


def test_guide_gives_common_a_usable_requirement() -> None:
    requirement = Requirement(guide_requirement_for_common())
    assert requirement.name == "dkist-processing-core-task", requirement
    assert not requirement.marker and not requirement.extras and not requirement.url, requirement
    assert requirement.specifier.contains("1.0.0"), requirement


@pytest.mark.parametrize("name", LINEUPS)
def test_find_links_hold_only_core_task_core_telemetry_and_common(
    lean_worker: Callable[[str], LeanWorker], name: str
) -> None:
    worker = lean_worker(name)
    names = sorted(canonicalize_name(w.name.split("-")[0]) for w in worker.find_links.iterdir())
    assert names == sorted([*LEAN_CORE, "dkist-processing-common"]), names


@pytest.mark.parametrize("name", LINEUPS)
def test_installed_common_is_the_rewritten_one(
    lean_worker: Callable[[str], LeanWorker], name: str
) -> None:
    common = lean_worker(name).installed()["dkist-processing-common"]
    core_lines = [
        line
        for line in (common.read_text("METADATA") or "").splitlines()
        if line.startswith("Requires-Dist: dkist-processing-core")
    ]
    assert core_lines == [f"Requires-Dist: {guide_requirement_for_common()}"], (
        f"the lean venv's dkist-processing-common {common.version} is not the rewritten wheel "
        f"(uv took another one?): {core_lines}"
    )


@pytest.mark.parametrize("name", LINEUPS)
def test_our_task_and_telemetry_wheels_are_what_is_installed(
    lean_worker: Callable[[str], LeanWorker], name: str
) -> None:
    worker = lean_worker(name)
    for wheel in worker.find_links.glob("dkist_processing_core_*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if ".dist-info/" in member:
                    continue
                installed = worker.site_packages / member
                assert installed.is_file() and installed.read_bytes() == archive.read(member), (
                    f"{member} of {wheel.name} is not installed as built by this checkout"
                )


@pytest.mark.parametrize("name", LINEUPS)
def test_no_workflow_layer_and_no_airflow(
    lean_worker: Callable[[str], LeanWorker], name: str
) -> None:
    worker = lean_worker(name)
    installed = worker.installed()
    assert LEAN_CORE <= set(installed), sorted(installed)
    present = sorted(NOT_ON_A_LEAN_WORKER & set(installed))
    assert not present, f"the lean venv holds {present}"
    airflow_dists = sorted(d for d in installed if d.startswith("apache-airflow"))
    assert not airflow_dists, f"the lean venv holds {airflow_dists}"
    report = worker.report
    assert not report["airflow_findable"], "an `airflow` import package is installed"
    assert not report["airflow_loaded"], (
        f"importing the task modules loaded {report['airflow_loaded']}"
    )
    assert report["workflow"].startswith("ImportError") and (
        "dkist-processing-core-workflow" in report["workflow"]
    ), report["workflow"]


@pytest.mark.parametrize("name", LINEUPS)
def test_pipelines_declare_no_core_in_their_base_requirements(
    lean_worker: Callable[[str], LeanWorker], name: str
) -> None:
    """Else docs/migration.md's first row applies to them and their wheels need the rewrite too."""
    worker = lean_worker(name)
    installed = worker.installed()
    for pipeline in worker.lineup:
        requirements = [Requirement(r) for r in installed[pipeline.dist].requires or []]
        base = [
            str(r)
            for r in requirements
            if not r.marker and canonicalize_name(r.name).startswith("dkist-processing-core")
        ]
        assert not base, f"{pipeline.requirement} requires {base} itself: rewrite it like common"


@pytest.mark.parametrize("name", LINEUPS)
def test_every_task_module_imports(lean_worker: Callable[[str], LeanWorker], name: str) -> None:
    worker = lean_worker(name)
    imports = worker.report["imports"]
    for pipeline in worker.lineup:
        modules = [m for m in imports if m.startswith(f"{pipeline.package}.tasks")]
        assert len(modules) > 1, f"no task modules of {pipeline.dist} found: {modules}"
    failed = {module: error for module, error in imports.items() if error}
    assert not failed, "task modules that fail to import on the lean worker:\n" + "\n".join(
        f"--- {module}\n{error[-3000:]}" for module, error in failed.items()
    )


@pytest.mark.parametrize("name", LINEUPS)
def test_footprint_beside_7_5_0(
    lean_worker: Callable[[str], LeanWorker],
    record_property: Callable[[str, object], None],
    name: str,
) -> None:
    worker = lean_worker(name)
    lean, old = worker.footprint, worker.reference_footprint
    lean_names = {d.split("==")[0] for d in lean["dists"]}
    old_names = {d.split("==")[0] for d in old["dists"]}
    figures = (
        f"{name} (Python 3.13, uv, no [frozen]): lean worker {len(lean['dists'])} packages, "
        f"{lean['mb']} MB; with 7.5.0 {len(old['dists'])} packages, {old['mb']} MB "
        f"({len(old_names - lean_names)} packages only with 7.5.0)"
    )
    print(figures)
    record_property("lean_footprint", figures)
    # Same versions of everything both hold (constrained by the 7.5.0 freeze): ours are the only
    # additions.
    assert lean_names - old_names <= LEAN_CORE, f"{figures}\nonly lean: {lean_names - old_names}"
    assert len(lean["dists"]) < len(old["dists"]) and lean["mb"] < old["mb"], figures


@pytest.mark.parametrize("name", WITH_TEST)
def test_worker_runs_a_common_task_past_every_import(
    lean_worker: Callable[[str], LeanWorker], tmp_path: Path, name: str
) -> None:
    """ParseL0TestInputData (a dkist-processing-common ParseL0InputDataBase), started as a worker
    starts it; its first need outside the process is the scratch inventory (Redis)."""
    worker = lean_worker(name)
    ports: set[int] = set()
    while len(ports) < 3:  # free_port: bound and released, nothing listens there
        ports.add(free_port())
    scratch_inventory, metadata_store, interservice_bus = sorted(ports)
    mesh = {
        "automated-processing-scratch-inventory": scratch_inventory,
        "internal-api-gateway": metadata_store,
        "interservice-bus": interservice_bus,
    }
    env = client_env(
        RECIPE_RUN_ID="4242",
        MESH_CONFIG=json.dumps(
            {
                service: {"mesh_address": "127.0.0.1", "mesh_port": port}
                for service, port in mesh.items()
            }
        ),
        SCRATCH_BASE_PATH=str(tmp_path / "scratch"),
        ISB_OUTBOX_DIR=str(tmp_path / "outbox"),
    )
    workflow = workflow_name_from_details(
        input_data="input", output_data="output", category="test", detail="parse-input-data"
    )
    result = run(
        [
            worker.python,
            "-m",
            "dkist_processing_core.run_task",
            "--module=dkist_processing_test.tasks",
            "--task=ParseL0TestInputData",
            f"--workflow-name={workflow}",
            f"--workflow-version={TEST.version}",
        ],
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    output = result.stdout + result.stderr
    shown = output[-6000:]
    for missing in ("ModuleNotFoundError", "ImportError"):
        assert missing not in output, f"the task did not get past its imports:\n{shown}"
    assert result.returncode == 1, f"exit status {result.returncode} (1: the task raised):\n{shown}"
    # run_task's last line names the task's exception: Redis refused at the scratch inventory.
    last = result.stderr.strip().splitlines()[-1]
    expected = (
        r"dkist-processing-core: task ParseL0TestInputData failed: ConnectionError: "
        rf".*\b127\.0\.0\.1:{scratch_inventory}\b.*Connection refused\.?"
    )
    assert re.fullmatch(expected, last), (
        f"expected the task to stop at the scratch inventory (Redis, port {scratch_inventory}; "
        f"metadata store {metadata_store}, interservice-bus {interservice_bus}):\n{shown}"
    )
    assert "dkist_processing_common/_util/tags.py" in output, shown
