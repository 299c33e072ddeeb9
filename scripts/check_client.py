"""Check a real DKIST pipeline from PyPI against dkist-processing-core 7.5.0 and this checkout's core.

    .venv/bin/python scripts/check_client.py dkist-processing-vbi==2.3.0 dkist-processing-cryonirsp
    .venv/bin/python scripts/check_client.py --no-suite dkist-processing-visp==5.11.0   # quicker

tests/clients checks the two pipelines it names (dkist-processing-test, -ops) in CI; this script
checks any other one the same way, on demand, reusing that suite's helpers
(tests/helpers/client_venvs.py, tests/clients/support.py, tests/clients/client_probe.py).
For each ``DIST[==VERSION]`` (no version: the latest on the index):

1. Resolve ``DIST[test]==VERSION`` once for Python 3.13 (``uv pip compile``; not ``[frozen]``,
   whose certifi pin this machine's index lacks, nor ``gpu``). Cached.
2. Two venvs from that list with ``uv pip install --no-deps``: "old" with the core the pipeline
   resolves to (7.5.0 today), "new" with this checkout's five wheels (scripts/build_dists.py).
   ``--no-deps`` is how the pipelines' exact ``dkist-processing-core==7.5.0`` pin is overridden;
   ``uv pip check`` on "new" must name that pin and nothing else. Cached like tests/clients does,
   under ``~/.cache/dkist-processing-core-tests/`` (``DKIST_CLIENT_TEST_CACHE`` overrides).
3. On each venv, client_probe.py: every module of the pipeline imports, ``validate_workflows``,
   ``export_dags`` / ``export_notebooks`` (same file names as 7.5.0), the exported DAGs in an
   Airflow DagBag (same DAG ids, tags, task ids, upstreams, queues, pools, retries, retry_delay
   as 7.5.0's export), dkist-processing-common's provenance record (needs Redis).
4. A real task of the pipeline (``TASKS`` below): on "new" through
   ``python -m dkist_processing_core.run_task``, on "old" through the contract both cores share
   (``with Task(...) as task: task()``). Every DKIST ``WorkflowTaskBase`` keeps its tags in Redis,
   so "no external service" means Redis only (a private redis-server per run, as tests/clients
   does), as for dkist-processing-ops' smoke task.
5. The pipeline's own tests shipped in its wheel (``pytest --pyargs PACKAGE.tests``): the same
   outcome for every test on both cores; tests failing on both are listed (they need services or
   the internet), not hidden.

Prints a table (and the work folder with every report) and exits 0 when the new core behaves like
7.5.0 everywhere, 1 on any difference, 2 when a pipeline could not be set up. Reports stay in
``--workdir`` (default: a new temp folder), named after the venv they ran in: run again with the
same ``--workdir`` and only the steps whose venv changed (the "new" one, after a product change)
run again; the real task always runs. Needs Python 3.13
(pyenv, or ``DKIST_CLIENT_PYTHON``), uv (requirements-test.txt), Redis and RabbitMQ on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from clients.support import Client  # noqa: E402
from clients.support import _write_outcome  # noqa: E402
from clients.support import client_env  # noqa: E402
from clients.support import run_client_suite  # noqa: E402
from clients.support import run_probe  # noqa: E402
from clients.support import schedule_differences  # noqa: E402
from clients.support import scratch_inventory_on  # noqa: E402
from helpers.client_venvs import CACHE_ROOT  # noqa: E402
from helpers.client_venvs import _python_version  # noqa: E402
from helpers.client_venvs import digest  # noqa: E402
from helpers.client_venvs import pinned_venv  # noqa: E402
from helpers.client_venvs import python313  # noqa: E402
from helpers.client_venvs import uv_binary  # noqa: E402
from helpers.release import build_core_wheels  # noqa: E402
from helpers.release import build_once  # noqa: E402
from helpers.release import run  # noqa: E402
from helpers.services import private_redis  # noqa: E402

# The real task of step 4, per package: a class of the pipeline's DAGs that runs on an empty
# scratch folder with Redis alone (found by running each task class on 7.5.0). Its module and
# workflow name are taken from the exported DAG, as a worker gets them. dkist-processing-cryonirsp
# has no task of its own that runs without input frames or constants, so it runs common's
# QualityL1Metrics, a node of its DAGs. ``--task DIST=CLASS`` adds or overrides one.
TASKS: dict[str, str] = {
    "dkist_processing_vbi": "VbiQualityL0Metrics",
    "dkist_processing_visp": "VispWriteL1Frame",
    "dkist_processing_cryonirsp": "QualityL1Metrics",
    "dkist_processing_dlnirsp": "DlnirspWriteL1Frame",
    "dkist_processing_test": "NoOpTask",
    "dkist_processing_ops": "SmokeTask",
}
EXTRA_REQUIREMENTS = ["pytest"]  # for a pipeline without a `test` extra
# The contract both cores share; the old one has no run_task module. argv: module class id name.
STABLE_CONTRACT = (
    "import importlib, sys\n"
    "cls = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])\n"
    "with cls(recipe_run_id=int(sys.argv[3]), workflow_name=sys.argv[4],"
    " workflow_version=sys.argv[5]) as task:\n"
    "    task()\n"
)


@dataclass
class Row:
    check: str
    old: str
    new: str
    same: bool
    detail: str = ""


@dataclass
class Report:
    dist: str
    version: str = "?"
    rows: list[Row] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    setup_error: str = ""

    def add(self, check: str, old: str, new: str, same: bool, detail: str = "") -> None:
        """One row of the table."""
        self.rows.append(Row(check, old, new, same, detail))


class SetupError(RuntimeError):
    """The pipeline could not be resolved or installed."""


def _timed(report: Report, name: str, start: float) -> None:
    report.seconds[name] = round(time.monotonic() - start, 1)


def resolve(dist: str, version: str | None) -> tuple[str, Path, str]:
    """(version, pins file without the core, the core the pipeline resolves to), cached."""
    uv, python = uv_binary(), python313()
    base: list[str | Path] = [
        uv,
        "pip",
        "compile",
        "-",
        "--python",
        python,
        "--no-annotate",
        "--no-header",
    ]
    if version is None:
        result = run([*base, "--no-deps"], input=dist)
        found = re.search(rf"^{re.escape(dist)}==(\S+)$", result.stdout, re.MULTILINE)
        if not found:
            raise SetupError(f"no release of {dist} found:\n{result.stdout}{result.stderr}")
        version = found.group(1)
    requirements = "\n".join([f"{dist}[test]=={version}", *EXTRA_REQUIREMENTS]) + "\n"

    def produce(folder: Path) -> None:
        result = run([*base, "--python-platform", "x86_64-manylinux_2_28"], input=requirements)
        if result.returncode != 0:
            raise SetupError(f"uv pip compile {dist}=={version} failed:\n{result.stderr}")
        lines = result.stdout.splitlines()
        cores = [line for line in lines if line.startswith("dkist-processing-core==")]
        if len(cores) != 1:
            raise SetupError(f"{dist}=={version} resolves to dkist-processing-core {cores}")
        (folder / "core.txt").write_text(cores[0])
        (folder / "pins.txt").write_text("\n".join(line for line in lines if line != cores[0]))

    key = digest(requirements, _python_version(python))
    folder = build_once(CACHE_ROOT / "resolutions", f"{dist}-{version}-{key}", produce)
    return version, folder / "pins.txt", (folder / "core.txt").read_text()


def venv(name: str, pins: Path, extras: list[str | Path]) -> Path:
    """A cached venv of ``pins`` + ``extras`` (tests/clients' ``pinned_venv``, another pins file)."""
    try:
        return pinned_venv(name, extras, pins=pins)
    except AssertionError as error:
        raise SetupError(str(error)) from None


def build_wheels(outdir: Path) -> list[Path]:
    try:
        return build_core_wheels(outdir)
    except AssertionError as error:
        raise SetupError(str(error)) from None


def _step(report: dict[str, Any], name: str) -> tuple[bool, Any, str]:
    if "crash" in report:
        return False, None, "probe crashed:\n" + report["crash"]
    step = report[name]
    return step["ok"], step["value"], step["error"]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def _dag_counts(bag: dict[str, Any]) -> str:
    tasks = sum(len(dag["tasks"]) for dag in bag["dags"].values())
    return f"{len(bag['dags'])} DAGs / {tasks} tasks"


# probe step -> how its value is shown in the table
PROBE_STEPS: dict[str, Callable[[Any], str]] = {
    "imports": lambda modules: f"{len(modules)} modules",
    "validate": lambda _: "ok",
    "export_dags": lambda files: f"{len(files)} files",
    "export_notebooks": lambda files: f"{len(files)} files",
    "dagbag": _dag_counts,
    "library_versions": lambda versions: f"core {versions.get('dkist-processing-core')}",
}


def compare_probes(out: Report, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Rows for imports, validate, exports, DagBag and provenance: both succeed, same results."""
    for name, describe in PROBE_STEPS.items():
        (old_ok, old_value, old_error), (new_ok, new_value, new_error) = (
            _step(old, name),
            _step(new, name),
        )
        same = old_ok and new_ok
        detail = "" if same else f"old: {_last_line(old_error)}\nnew: {new_error}"
        if same and name.startswith("export") and old_value != new_value:
            same, detail = False, f"file names differ: {sorted(set(old_value) ^ set(new_value))}"
        if same and name == "dagbag":
            same, detail = _compare_dags(old_value, new_value, _step(new, "export_dags")[1])
        if same and name == "library_versions":  # common records the core actually installed
            recorded = [value.get("dkist-processing-core") for value in (old_value, new_value)]
            installed = [_step(report, "core_version")[1] for report in (old, new)]
            same, detail = recorded == installed, f"recorded {recorded}, installed {installed}"
        row = "provenance" if name == "library_versions" else name
        old_shown = describe(old_value) if old_ok else "FAIL"
        new_shown = describe(new_value) if new_ok else "FAIL"
        out.add(row, old_shown, new_shown, same, "" if same else detail)


def _compare_dags(
    old: dict[str, Any], new: dict[str, Any], files: list[str] | None
) -> tuple[bool, str]:
    """(same, problems): the new export schedules like the old one."""
    problems = [f"import error in {name}: {text}" for name, text in new["import_errors"].items()]
    problems += [f"7.5.0 import error in {name}" for name in old["import_errors"]]
    if files and sorted(dag["file"] for dag in new["dags"].values()) != sorted(files):
        problems.append(f"DagBag loaded {len(new['dags'])} DAGs from {len(files)} exported files")
    problems += schedule_differences(old["dags"], new["dags"])
    return not problems, "\n".join(problems)


def task_target(new_probe: dict[str, Any], name: str) -> tuple[str, str] | None:
    """(module, workflow name) of task class ``name`` in the smallest exported DAG that has it."""
    ok, bag, _ = _step(new_probe, "dagbag")
    if not ok:
        return None
    having = sorted(
        (len(dag["tasks"]), dag_id) for dag_id, dag in bag["dags"].items() if name in dag["tasks"]
    )
    if not having:
        return None
    env = bag["dags"][having[0][1]]["tasks"][name]["env"] or {}
    return env.get("DKIST_TASK_MODULE", ""), env.get("DKIST_WORKFLOW_NAME", "")


def run_real_task(
    python: Path, core: str, target: tuple[str, str, str], version: str, folder: Path
) -> tuple[int, str]:
    """Run a task (module, class, workflow) as a worker would; (exit status, output)."""
    module, name, workflow = target
    recipe_run_id = str(random.randint(10**8, 10**9))  # its own scratch folder and Redis keys
    if core == "new":
        command: list[str | Path] = [
            python, "-m", "dkist_processing_core.run_task", "--module", module, "--task", name,
            "--workflow-name", workflow, "--workflow-version", version,
            "--recipe-run-id", recipe_run_id,
        ]  # fmt: skip
    else:
        command = [python, "-c", STABLE_CONTRACT, module, name, recipe_run_id, workflow, version]
    cwd = folder / recipe_run_id
    cwd.mkdir(parents=True)
    with private_redis(cwd / "redis") as port:  # the tags of this run only
        env = client_env(
            BUILD_VERSION=version,
            SCRATCH_BASE_PATH=str(cwd / "scratch"),
            MESH_CONFIG=scratch_inventory_on(port),
        )
        result = subprocess.run(
            [str(part) for part in command],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    (cwd / "output.txt").write_text(result.stdout + result.stderr)
    return result.returncode, result.stdout + result.stderr


def compare_tasks(out: Report, name: str, results: dict[str, tuple[int, str]]) -> None:
    """Both exit 0 and log the task's completion line exactly once (no duplicated log lines)."""
    shown: dict[str, str] = {}
    problems: list[str] = []
    for core, (code, output) in results.items():
        completed = len(re.findall(rf"\.{name} complete$", output, re.MULTILINE))
        shown[core] = f"exit {code}, {len(output.splitlines())} log lines"
        if code != 0 or completed != 1:
            problems.append(f"{core}: exit {code}, '{name} complete' logged {completed} times")
            problems.append(output[-6000:])
    out.add(f"task {name}", shown["old"], shown["new"], not problems, "\n".join(problems))


def failure_reasons(junit: Path) -> dict[str, str]:
    """Test id -> first line of its failure or error message, from the suite's JUnit XML."""
    reasons = {}
    if junit.exists():
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            for child in case:
                if child.tag in ("failure", "error"):
                    message = (child.get("message") or child.text or "").strip()
                    first = message.splitlines()[0] if message else "(no message)"
                    reasons[f"{case.get('classname')}::{case.get('name')}"] = first[:200]
    return reasons


def compare_suites(
    out: Report, outcomes: dict[str, dict[str, Any]], folders: dict[str, Path]
) -> None:
    """Every test has the same outcome on both cores; failures on both are listed by reason."""
    old, new = outcomes["old"]["outcomes"], outcomes["new"]["outcomes"]
    reasons = {core: failure_reasons(folder / "junit.xml") for core, folder in folders.items()}

    def counts(core: str) -> str:
        values = list(outcomes[core]["outcomes"].values())
        failed = values.count("failure") + values.count("error")
        text = (
            f"{values.count('passed')} passed, {failed} failed, {values.count('skipped')} skipped"
        )
        return text if values else f"no tests ran (exit {outcomes[core]['returncode']})"

    changed = [
        f"{test}: {old.get(test)} -> {new.get(test)} {reasons['new'].get(test, '')}"
        for test in sorted(set(old) | set(new))
        if old.get(test) != new.get(test)
    ]
    both: dict[str, list[str]] = {}
    for test, outcome in sorted(old.items()):
        if outcome in ("failure", "error") and new.get(test) == outcome:
            both.setdefault(reasons["old"].get(test, "?"), []).append(test)
    detail = [f"changed: {line}" for line in changed]
    if not old:
        detail.append(f"no test ran on the old core:\n{outcomes['old']['output']}")
    if changed:
        detail.append(f"new core's output (end):\n{outcomes['new']['output']}")
    for reason, tests in both.items():
        detail.append(f"failing on both cores ({len(tests)}): {reason}")
        detail += [f"  {test}" for test in tests]
    out.add("own tests", counts("old"), counts("new"), not changed and bool(old), "\n".join(detail))


def _venv_name(python: Path) -> str:
    return python.parents[2].name  # CACHE/venvs/NAME/venv/bin/python


def _suite(python: Path, client: Client, timeout: float, workers: int, folder: Path) -> None:
    """``outcome.json`` of the pipeline's own tests, as tests/clients runs them (own Redis).

    With a timeout of our own (some suites take over 25 minutes on two cores), recorded as an
    outcome with no tests instead of ending the whole check, and optionally pytest-xdist workers.
    """
    started = time.monotonic()
    try:
        run_client_suite(python, client, folder, timeout=timeout, workers=workers)
    except subprocess.TimeoutExpired:
        result = subprocess.CompletedProcess([], -9, "", f"timed out after {timeout} s")
        _write_outcome(folder, folder / "junit.xml", result, started)


def check_deps(out: Report, pythons: dict[str, Path]) -> None:
    """``uv pip check``: nothing broken on "old", only the core pin on "new"."""
    broken = {}
    for core, python in pythons.items():
        result = run([uv_binary(), "pip", "check", "--python", python])
        lines = (result.stdout + result.stderr).splitlines()  # uv reports on stderr
        broken[core] = [line for line in lines if "requires" in line]
    extra = [line for line in broken["new"] if "dkist-processing-core==" not in line]
    same = not extra and not broken["old"] and bool(broken["new"])
    shown = (f"{len(broken['old'])} broken", f"{len(broken['new'])} broken (the core pin)")
    out.add("pip check", *shown, same, "\n".join([*broken["old"], *extra]))


def check_task(
    out: Report, pythons: dict[str, Path], name: str | None, probe: dict[str, Any], here: Path
) -> None:
    found = task_target(probe, name) if name else None
    if not name or not found:
        what = f"task class {name} is in no exported DAG" if name else "no task chosen"
        out.add("real task", "-", "-", not name, f"{what}; see TASKS in {Path(__file__).name}")
        return
    results = {}
    for core, python in pythons.items():
        start = time.monotonic()
        target = (found[0], name, found[1])
        results[core] = run_real_task(python, core, target, out.version, here / f"task-{core}")
        _timed(out, f"task {core}", start)
    compare_tasks(out, name, results)


def check(
    spec: str,
    wheels: list[Path],
    work: Path,
    suite: tuple[float, int] | None,
    tasks: dict[str, str],
) -> Report:
    """All checks of one pipeline (``DIST`` or ``DIST==VERSION``); ``suite``: (timeout, workers)."""
    dist, _, wanted = spec.partition("==")
    out = Report(dist)
    try:
        start = time.monotonic()
        out.version, pins, old_core = resolve(dist, wanted or None)
        _timed(out, "resolve", start)
        start = time.monotonic()
        pythons = {
            "old": venv(f"{dist}-{out.version}-old", pins, [old_core]),
            "new": venv(f"{dist}-{out.version}-new", pins, list(wheels)),
        }
        _timed(out, "venvs", start)
    except SetupError as error:
        out.setup_error = str(error)
        return out
    package = dist.replace("-", "_")
    client = Client(package, dist, out.version, 0, "", ())
    here = work / f"{dist}-{out.version}"
    check_deps(out, pythons)

    # Results are kept in WORKDIR/DIST-VERSION/STEP-VENV (VENV: the cached venv's folder name,
    # which changes with our wheels), so a rerun with the same --workdir redoes only what changed.
    reports = {}
    for core, python in pythons.items():
        start = time.monotonic()
        folder = build_once(here, f"probe-{_venv_name(python)}", partial(run_probe, python, client))
        reports[core] = json.loads((folder / "report.json").read_text())
        _timed(out, f"probe {core}", start)
    compare_probes(out, reports["old"], reports["new"])
    check_task(out, pythons, tasks.get(package), reports["new"], here)

    if suite is not None:
        outcomes, folders = {}, {}
        timeout, workers = suite
        for core, python in pythons.items():
            start = time.monotonic()
            name = f"tests-{_venv_name(python)}" + (f"-n{workers}" if workers else "")
            folders[core] = build_once(here, name, partial(_suite, python, client, *suite))
            outcomes[core] = json.loads((folders[core] / "outcome.json").read_text())
            _timed(out, f"tests {core}", start)
        compare_suites(out, outcomes, folders)
    return out


def print_table(reports: list[Report]) -> None:
    header = ("pipeline", "check", "old (pinned core)", "new (this checkout)", "result")
    lines: list[tuple[str, ...]] = [header]
    for report in reports:
        name = f"{report.dist} {report.version}"
        if report.setup_error:
            lines.append((name, "setup", "-", "-", "SETUP FAILED"))
        for row in report.rows:
            lines.append((name, row.check, row.old, row.new, "same" if row.same else "DIFFERS"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))
    for report in reports:
        timings = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in report.seconds.items())
        print(f"\n{report.dist} {report.version}: {timings}")
        if report.setup_error:
            print(f"  setup failed:\n{report.setup_error}")
        for row in report.rows:
            if row.detail:
                label = "DIFFERS" if not row.same else "note"
                print(f"  [{label}] {row.check}:\n    " + row.detail.replace("\n", "\n    "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipelines", nargs="+", metavar="DIST[==VERSION]")
    parser.add_argument("--no-suite", action="store_true", help="skip the pipelines' own tests")
    parser.add_argument(
        "--suite-timeout", type=float, default=3600, help="seconds per test suite run (3600)"
    )
    parser.add_argument(
        "--suite-workers", type=int, default=0, help="pytest-xdist workers (default: none)"
    )
    parser.add_argument("--wheels", type=Path, help="a folder with our five wheels (else built)")
    parser.add_argument("--workdir", type=Path, help="where reports go (default: a new temp dir)")
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="DIST=CLASS",
        help="the real task class to run for DIST (see TASKS)",
    )
    args = parser.parse_args(argv)
    tasks = dict(TASKS)
    for item in args.task:
        dist, _, name = item.partition("=")
        tasks[dist.split("==")[0].replace("-", "_")] = name
    work = args.workdir or Path(tempfile.mkdtemp(prefix="check-client-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder (probe reports, DAG exports, test outcomes): {work}", flush=True)
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels else build_wheels(work / "wheels")
    reports = []
    for spec in args.pipelines:
        print(f"checking {spec} ...", flush=True)
        suite = None if args.no_suite else (args.suite_timeout, args.suite_workers)
        reports.append(check(spec, wheels, work, suite, tasks))
    print_table(reports)
    if any(report.setup_error for report in reports):
        return 2
    return 0 if all(row.same for report in reports for row in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
