"""(j) validate and export of real pipelines against 7.5.0: dkist-processing-test and -vbi.

``build_utils.validate_workflows(<pipeline>.workflows)`` and ``build_utils.export_dags(...)`` of
dkist-processing-test 1.46.0 (32 workflows) and dkist-processing-vbi 2.3.0 (5), each core in its
own Python 3.13 venv built the way tests/clients builds them (the same pinned pipelines and
Airflow; only the core differs; ``_client_venvs``). Every run is a fresh process timed as a whole
(interpreter start to exit), bytecode warmed by one untimed run of each, runs alternated (7.5.0,
ours, 7.5.0, ours, ...); figures are medians. The floor row is ours importing the pipeline's
workflows and nothing else: what remains of a validate once Airflow is imported beside it.
Skipped with a line saying why where Python 3.13 or the package index is missing.
"""

from __future__ import annotations

from pathlib import Path

from _client_venvs import client_venvs
from _timing import BenchmarkError
from _timing import Context
from _timing import Row
from _timing import median
from _timing import minimal_env
from _timing import run_measured

__all__ = ["KEY", "TITLE", "run"]

KEY = "j"
TITLE = "real pipelines vs 7.5.0"
PIPELINES = {
    "dkist-processing-test": ("dkist_processing_test.workflows", "1.46.0"),
    "dkist-processing-vbi": ("dkist_processing_vbi.workflows", "2.3.0"),
}
_SNIPPET = """
import importlib, pkgutil, sys
command, package_name, folder = sys.argv[1:4]
package = importlib.import_module(package_name)
if command == "import":  # the floor: the workflow modules, nothing of Airflow
    for info in pkgutil.iter_modules(package.__path__, package_name + "."):
        importlib.import_module(info.name)
    sys.exit(0)
from dkist_processing_core import build_utils
if command == "validate":
    build_utils.validate_workflows(package)
else:
    build_utils.export_dags(package, folder)
"""


def _once(ctx: Context, python: Path, command: str, package: str, version: str, n: int) -> float:
    folder = ctx.workdir / f"real-{command}-{n}"
    env = minimal_env(
        AIRFLOW_HOME=str(ctx.workdir / "real-airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        BUILD_VERSION=version,
    )
    result = run_measured(
        [python, "-c", _SNIPPET, command, package, folder], env=env, cwd=ctx.workdir
    )
    if result.returncode != 0:
        raise BenchmarkError(
            f"{python}: {command} of {package} failed:\n{result.stdout[-1500:]}{result.stderr[-3000:]}"
        )
    return result.seconds


def run(ctx: Context) -> list[Row]:
    venvs = client_venvs(ctx.workdir)
    if isinstance(venvs, str):
        return [Row(KEY, "validate/export of real pipelines", "skipped", note=venvs)]
    runs = 1 if ctx.quick else max(3, ctx.runs)
    rows: list[Row] = []
    for dist, (package, version) in PIPELINES.items():
        for command in ("validate", "export"):
            for python in venvs.values():  # warm the bytecode of both cores and the pipeline
                _once(ctx, python, command, package, version, -1)
            samples: dict[str, list[float]] = {core: [] for core in venvs}
            for n in range(runs):
                for core, python in venvs.items():  # alternated: 7.5.0, ours, 7.5.0, ours, ...
                    samples[core].append(_once(ctx, python, command, package, version, n))
            old, ours = median(samples["7.5.0"]), median(samples["ours"])
            note = f"{dist} {version}, Python 3.13 client venvs, alternated, whole process"
            spread = ", ".join(
                f"{core} {sorted(round(v, 2) for v in values)}" for core, values in samples.items()
            )
            rows.append(
                Row(
                    KEY,
                    f"{command} {dist}",
                    round(ours, 2),
                    "s",
                    "",
                    round(old, 2),
                    f"{note}; samples {spread}",
                    runs,
                    samples["ours"],
                )
            )
            rows.append(
                Row(
                    KEY,
                    f"7.5.0 / ours, {command} {dist}",
                    round(old / ours, 2),
                    "x",
                    ">= 2",
                    note=note,
                    runs=runs,
                )
            )
        floor = [_once(ctx, venvs["ours"], "import", package, version, n) for n in range(runs)]
        rows.append(
            Row(
                KEY,
                f"floor: import {package}",
                round(median(floor), 2),
                "s",
                note="ours: the workflow modules alone (Airflow is imported beside them)",
                runs=runs,
            )
        )
    return rows
