"""Run the benchmarks of issue #7, print a table and write the results as JSON.

    python benchmarks/run_all.py --quick                 # CI: few repeats, no test-suite timing (< 3 min)
    python benchmarks/run_all.py                         # full: medians over 5 runs, plus the test suite
    python benchmarks/run_all.py --compare-venv PATH     # also (b), (c), (d) with PATH/bin/python
    python benchmarks/run_all.py --only b,c --json out.json

(a) lean worker install, (b) TaskBase import, (c) no-op task process, (d) validate + export
50 workflows x 20 nodes, (e) DagBag parse of those 50 files against files importing the whole
package, (f) test suite with -n auto vs -n 0, (g) task start of the example pipeline (pip, uv,
venv cache; benchmarks/task_start.py has the real pipeline too), (h) validate/export against
Airflow's DagBag floor, (i) what an exported task costs Airflow (file, serialized, rendered), DagBag
parse against 7.5.0 in the Python 3.13 client venvs, and add_node on long chains, (j) validate and
export of the real pipelines dkist-processing-test and -vbi against 7.5.0 (the real-pipeline rows
are the figures that matter; (d), (e) and (h) are synthetic). Each figure is a median over the runs. The
"compare" column is the same figure from --compare-venv (for (a): that venv's package count and
size as installed; for (e): the control files that import the whole package eagerly);
"ratio" is compare / ours, so > 1 means we are faster or smaller. Targets come from issue #7;
a missed target is shown, not an error. Exit status 1 if a benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dagbag
import bench_import
import bench_install
import bench_noop_task
import bench_real_pipelines
import bench_shape
import bench_task_start
import bench_tests
import bench_validate_floor
import bench_workflows
from _timing import REPO_ROOT
from _timing import BenchmarkError
from _timing import Context
from _timing import Row
from _timing import ratio

BENCHMARKS = [
    bench_install,
    bench_import,
    bench_noop_task,
    bench_workflows,
    bench_dagbag,
    bench_validate_floor,
    bench_task_start,
    bench_shape,
    bench_real_pipelines,
    bench_tests,
]
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "latest.json"


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_table(rows: list[Row], errors: dict[str, str]) -> str:
    header = [
        "",
        "benchmark",
        "metric",
        "value",
        "unit",
        "target",
        "ok",
        "compare",
        "ratio",
        "note",
    ]
    lines = []
    for row in rows:
        meets = row.meets_target()
        quotient = ratio(row.value, row.compare)
        lines.append(
            [
                row.bench,
                next(b.TITLE for b in BENCHMARKS if b.KEY == row.bench),
                row.metric,
                _format(row.value),
                row.unit,
                row.target,
                "" if meets is None else ("yes" if meets else "MISSED"),
                _format(row.compare),
                f"{quotient:.2f}x" if quotient is not None else "",
                row.note if len(row.note) <= 60 else row.note[:57] + "...",
            ]
        )
    for key, message in errors.items():
        title = next(b.TITLE for b in BENCHMARKS if b.KEY == key)
        lines.append([key, title, "ERROR", message.strip().splitlines()[0][:90], *[""] * 6])
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = [" | ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * width for width in widths))
    out += [
        " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 runs each, one install, no test-suite timing"
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 5, quick 2)")
    parser.add_argument(
        "--test-runs", type=int, default=1, help="runs of the whole test suite in (f) (default 1)"
    )
    parser.add_argument(
        "--compare-venv",
        type=Path,
        metavar="PATH",
        help="a venv holding another dkist-processing-core",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="OUT",
        help=f"default {DEFAULT_JSON.relative_to(REPO_ROOT)}",
    )
    parser.add_argument("--only", help="comma-separated keys, e.g. b,c")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the scratch folder (printed)"
    )
    args = parser.parse_args(argv)

    compare_python = None
    if args.compare_venv:
        compare_python = args.compare_venv.resolve() / "bin" / "python"
        if not compare_python.exists():
            parser.error(f"{compare_python} does not exist: --compare-venv takes a venv folder")
    selected = set(args.only.split(",")) if args.only else {b.KEY for b in BENCHMARKS}
    if args.quick and not args.only:
        selected.discard(bench_tests.KEY)
        selected.discard(bench_validate_floor.KEY)  # three fresh Airflow processes per run
    runs = args.runs or (2 if args.quick else 5)

    workdir = Path(tempfile.mkdtemp(prefix="dkist-bench-"))
    ctx = Context(quick=args.quick, runs=runs, workdir=workdir, compare_python=compare_python)
    ctx.shared["test_runs"] = args.test_runs
    rows: list[Row] = []
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1):
        print(
            f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs; times will be inflated",
            file=sys.stderr,
        )
    try:
        for bench in BENCHMARKS:
            if bench.KEY not in selected:
                continue
            print(f"[{bench.KEY}] {bench.TITLE} ...", file=sys.stderr, flush=True)
            begin = time.perf_counter()
            try:
                rows += bench.run(ctx)
            except BenchmarkError as error:
                errors[bench.KEY] = str(error)
            except Exception:  # a broken benchmark must not hide the others
                errors[bench.KEY] = traceback.format_exc()
            timings[bench.KEY] = round(time.perf_counter() - begin, 1)
            if bench.KEY in errors:
                print(f"[{bench.KEY}] FAILED: {errors[bench.KEY]}", file=sys.stderr, flush=True)
    finally:
        if args.keep_workdir:
            print(f"scratch folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(render_table(rows, errors))
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "runs": runs,
        "python": sys.executable,
        "compare_python": str(compare_python) if compare_python else None,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_benchmark": timings,
        "rows": [row.as_dict() for row in rows],
        "errors": errors,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        f"\nresults: {args.json}  ({result['seconds']} s; load average {load_before[0]:.1f} -> "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
