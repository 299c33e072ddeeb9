"""(e) Parsing the 50 exported DAG files the way Airflow does, against two heavier controls.

Controls are the same files with imports added on top:
- "+workflow/build_utils": ``import dkist_processing_core.workflow`` and ``.build_utils`` (files
  that build their DAG from the package). Thanks to the lazy imports of this product that is
  almost free, so it cannot show the difference the split makes;
- "whole package, eager": every module of ``dkist_processing_core`` plus the third-party modules
  they import lazily (nbformat, nbconvert, pika, the OpenTelemetry SDK and OTLP/gRPC exporters),
  i.e. what importing the package cost when everything was imported up front (the
  single-distribution product). The target (at least 2x) is measured against this control.

Two measurements, each in a fresh interpreter that has already imported Airflow's DagBag (that
import is not counted):
- per file, forked: every file is parsed in its own forked child, which is what Airflow 3's DAG
  processor does, so whatever a DAG file imports is paid on every parse; this is the figure the
  target (control at least 2x slower) is about;
- one DagBag over the folder, in-process: imports are paid once for all 50 files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from _timing import BenchmarkError
from _timing import Context
from _timing import Row
from _timing import median
from _timing import minimal_env
from _timing import run_measured
from bench_workflows import NODES
from bench_workflows import WORKFLOWS
from bench_workflows import exported_dags

__all__ = ["KEY", "TITLE", "run"]

KEY = "e"
QUICK_FORKED_FILES = 10
MAX_RUNS = 3  # the eager control costs ~1 s per file and run
TITLE = "DagBag parse of 50 DAG files"
CONTROLS = {
    "workflow": (
        "import dkist_processing_core.workflow  # control\n"
        "import dkist_processing_core.build_utils  # control\n"
    ),
    "eager": (
        "import importlib, pkgutil, dkist_processing_core  # control: the whole package, eagerly\n"
        "for _module in pkgutil.walk_packages(dkist_processing_core.__path__, 'dkist_processing_core.'):\n"
        "    importlib.import_module(_module.name)\n"
        "import nbformat, nbconvert, pika  # control\n"
        "import opentelemetry.sdk.trace, opentelemetry.sdk.metrics  # control\n"
        "import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # control\n"
        "import opentelemetry.exporter.otlp.proto.grpc.metric_exporter  # control\n"
    ),
}

_SNIPPET = """
import json, os, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
limit = int(sys.argv[2])
from airflow.dag_processing.dagbag import DagBag
files = sorted(folder.glob("*.py"))[:limit]
per_file = []
failures = 0
for path in files:
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        bag = DagBag(dag_folder=str(path))
        os._exit(0 if len(bag.dags) == 1 and not bag.import_errors else 1)
    _, status = os.waitpid(pid, 0)
    per_file.append(time.perf_counter() - start)
    failures += os.waitstatus_to_exitcode(status) != 0
start = time.perf_counter()
bag = DagBag(dag_folder=str(folder))
whole = time.perf_counter() - start
print(json.dumps({
    "per_file_total_s": sum(per_file),
    "per_file_median_s": sorted(per_file)[len(per_file) // 2],
    "forked_failures": failures,
    "forked_files": len(files),
    "whole_s": whole,
    "dags": len(bag.dags),
    "errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()},
}))
"""


def _control_copy(source: Path, target: Path, header: str) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.py")):
        text = path.read_text()
        # keep a leading comment header and `from __future__` lines first
        lines = text.splitlines(keepends=True)
        cut = 0
        while cut < len(lines) and (
            lines[cut].startswith("#")
            or lines[cut].startswith("from __future__")
            or not lines[cut].strip()
        ):
            cut += 1
        (target / path.name).write_text("".join(lines[:cut]) + header + "".join(lines[cut:]))
    return target


def _runs(ctx: Context) -> int:
    return min(ctx.runs, MAX_RUNS)


def _measure(ctx: Context, folder: Path, limit: int) -> dict:
    samples = []
    for _ in range(_runs(ctx)):
        env = minimal_env(
            AIRFLOW_HOME=str(ctx.workdir / "airflow-home"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(folder),
        )
        result = run_measured(
            [ctx.python, "-c", _SNIPPET, folder, str(limit)], env=env, cwd=ctx.workdir
        )
        if result.returncode != 0:
            raise BenchmarkError(f"DagBag parse of {folder} failed:\n{result.stderr[-4000:]}")
        sample = json.loads(result.stdout.strip().splitlines()[-1])
        if sample["errors"] or sample["dags"] != WORKFLOWS or sample["forked_failures"]:
            raise BenchmarkError(
                f"DagBag of {folder}: {sample['dags']} DAGs, {sample['forked_failures']} failed forked parses, "
                f"import errors: {json.dumps(sample['errors'])[:3000]}"
            )
        samples.append(sample)
    return {
        key: median([s[key] for s in samples])
        for key in ("per_file_total_s", "per_file_median_s", "whole_s")
    } | {"samples": [s["per_file_total_s"] for s in samples]}


def run(ctx: Context) -> list[Row]:
    ours_folder = Path(exported_dags(ctx))
    # quick mode parses a subset in forked children (the eager control costs ~1 s a file)
    limit = QUICK_FORKED_FILES if ctx.quick else WORKFLOWS
    ours = _measure(ctx, ours_folder, limit)
    controls = {
        name: _measure(
            ctx, _control_copy(ours_folder, ctx.workdir / f"control-{name}-dags", header), limit
        )
        for name, header in CONTROLS.items()
    }
    eager, light = controls["eager"], controls["workflow"]
    size = sum(path.stat().st_size for path in ours_folder.glob("*.py"))
    note = "compare column = control: whole package imported eagerly"
    return [
        Row(
            KEY,
            f"{limit} files, one forked parse each",
            round(ours["per_file_total_s"], 3),
            "s",
            "",
            round(eager["per_file_total_s"], 3),
            note,
            _runs(ctx),
            ours["samples"],
        ),
        Row(
            KEY,
            "per file (median, forked)",
            round(ours["per_file_median_s"] * 1000, 1),
            "ms",
            "",
            round(eager["per_file_median_s"] * 1000, 1),
            note,
            _runs(ctx),
        ),
        Row(
            KEY,
            "eager control / ours (forked)",
            round(eager["per_file_total_s"] / ours["per_file_total_s"], 2),
            "x",
            ">= 2",
            note="how much slower files importing the whole package parse",
            runs=_runs(ctx),
        ),
        Row(
            KEY,
            "+workflow/build_utils control / ours",
            round(light["per_file_total_s"] / ours["per_file_total_s"], 2),
            "x",
            note="lazy imports: importing workflow/build_utils costs little",
            runs=_runs(ctx),
        ),
        Row(
            KEY,
            "one DagBag over the folder",
            round(ours["whole_s"], 3),
            "s",
            "",
            round(eager["whole_s"], 3),
            note,
            _runs(ctx),
        ),
        Row(
            KEY,
            "bytes per node",
            round(size / (WORKFLOWS * NODES)),
            "B",
            note=f"{size} bytes in {WORKFLOWS} files",
        ),
    ]
