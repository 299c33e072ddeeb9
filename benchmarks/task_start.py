"""(g) Task start: from the worker's start to the task's ``run()``, per way of making the venv.

    python benchmarks/task_start.py                 # the example pipeline, median of 3 runs
    python benchmarks/task_start.py --real          # also dkist-processing-test 1.46.0 (Python 3.13)
    python benchmarks/task_start.py --runs 5 --json out.json

The exported task's command (``worker.WORKER_COMMAND``: the worker program of core-task) runs as a
BashOperator runs it (``bash -c``, values in the environment) and starts a probe task (a
``TaskBase`` on ``PYTHONPATH``) that writes the time its ``run()`` began; the figure is that time
minus the time the command was started. Scenarios:

- ``pip fresh (7.5.0's script)``: the steps of the bash command dkist-processing-core 7.5.0 exports
  for every task (:data:`SCRIPT_750`, copied from a DAG file it wrote, with the probe in place of
  the task): a venv with pip (ensurepip), pip upgraded, ``pip install`` with byte-compilation, ``pip
  list`` before and after;
- ``pip fresh``: no uv on PATH, no venv cache (pip's own cache warm, as on a worker);
- ``uv fresh, cold``: uv on PATH, an empty uv cache every run;
- ``uv fresh, warm``: uv on PATH, its cache warmed by an untimed run;
- ``cache build``: the first task of a version with ``DKIST_VENV_CACHE_DIR`` (uv; informational);
- ``cache hit``: later tasks of that version;
- ``direct``: the probe started with that venv's python directly (no script): the floor, so
  "overhead" = a scenario minus this.

Pipelines: the example (wheels of this checkout, offline wheelhouse) and, with ``--real``,
``dkist-processing-test==1.46.0`` without ``[frozen]`` (its frozen extra pins a certifi this
machine's index lacks) on Python 3.13, offline from the wheelhouse that tests/clients cache
(``~/.cache/dkist-processing-core-tests``; built from the package index once if missing). It pins
dkist-processing-core 7.5.0, so its task starts through the stable contract, not ``run_task``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import REPO_ROOT
from _timing import BenchmarkError

#: What dkist-processing-core 7.5.0's DAG files run for a task (from an exported DAG file of
#: dkist-processing-test 1.46.0: the echo lines of the worker's identity left out, the requirement
#: and the task statement taken from the environment / replaced by the probe).
SCRIPT_750 = """\
pwd
python3 -m pip install --upgrade pip
pip list
python3 -m venv .task_venv
. .task_venv/bin/activate
which python
cat /proc/self/limits
python -m pip install --upgrade pip
python -m pip install "$DKIST_REQUIREMENT"
pip list
python -c "from bench_task_start_probe import Probe
with Probe(recipe_run_id=1, workflow_name='bench', workflow_version='1') as task:
    task()
"
export exit_code=$?
deactivate
rm -rf .task_venv
exit $exit_code
"""
PROBE = """\
import os
import time

from dkist_processing_core import TaskBase


class Probe(TaskBase):
    def run(self):
        with open(os.environ["BENCH_PROBE_FILE"], "w") as stream:
            stream.write(str(time.time_ns()))
"""


class Pipeline:
    def __init__(self, name: str, requirement: str, python: Path, wheelhouse: Path) -> None:
        self.name, self.requirement, self.python, self.wheelhouse = (
            name,
            requirement,
            python,
            wheelhouse,
        )


def _worker_bin(folder: Path, python: Path, with_uv: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    wrapper.chmod(0o755)
    if with_uv:
        uv = Path(sys.executable).with_name("uv")
        if not uv.is_file():
            raise BenchmarkError(f"uv not found next to {sys.executable}: pip install uv")
        (folder / "uv").unlink(missing_ok=True)
        (folder / "uv").symlink_to(uv)
    return folder


class Bench:
    def __init__(self, pipeline: Pipeline, workdir: Path) -> None:
        self.pipeline, self.workdir = pipeline, workdir
        self.probe_dir = workdir / "probe"
        self.probe_dir.mkdir(parents=True, exist_ok=True)
        (self.probe_dir / "bench_task_start_probe.py").write_text(PROBE)

    def env(self, with_uv: bool, **more: str) -> dict[str, str]:
        env = {
            "PATH": f"{_worker_bin(self.workdir / ('bin-uv' if with_uv else 'bin-pip'), self.pipeline.python, with_uv)}:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.workdir),
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(self.pipeline.wheelhouse),
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONPATH": str(self.probe_dir),
            "RECIPE_RUN_ID": "1",
            # the worker program's inputs, and what Airflow adds (the DAG id)
            "DKIST_WORKER_PYTHON": sys.executable,
            "DKIST_TASK": "bench_task_start_probe.Probe",
            "DKIST_REQUIREMENT": self.pipeline.requirement,
            "AIRFLOW_CTX_DAG_ID": f"bench_{self.pipeline.requirement.rpartition('==')[2]}",
            "DKIST_PIP_TIMEOUT": "15",
            "DKIST_PIP_RETRIES": "2",
            "BENCH_PROBE_FILE": str(self.workdir / "probe.ns"),
        }
        env.update(more)
        return env

    def once(self, script: str, env: dict[str, str]) -> float:
        probe = Path(env["BENCH_PROBE_FILE"])
        probe.unlink(missing_ok=True)
        started = time.time_ns()
        result = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, cwd=self.workdir
        )
        if result.returncode or not probe.exists():
            raise BenchmarkError(
                f"{self.pipeline.name}: the script failed:\n{(result.stdout + result.stderr)[-4000:]}"
            )
        seconds = (int(probe.read_text()) - started) / 1e9
        print(f"  {self.pipeline.name}: {seconds:.2f} s", file=sys.stderr, flush=True)
        return seconds

    def direct(self, python: Path, env: dict[str, str], contract: bool) -> float:
        probe = Path(env["BENCH_PROBE_FILE"])
        probe.unlink(missing_ok=True)
        if contract:
            from dkist_processing_core.worker._steps import CONTRACT

            command = [str(python), "-c", CONTRACT]
        else:
            command = [
                str(python),
                "-m",
                "dkist_processing_core.run_task",
                "--module=bench_task_start_probe",
            ]
            command += ["--task=Probe", "--workflow-name=bench", "--workflow-version=1"]
        # what the worker program hands the task process (the 7.x statement reads these)
        given = {
            "DKIST_TASK_MODULE": "bench_task_start_probe",
            "DKIST_TASK_CLASS": "Probe",
            "DKIST_WORKFLOW_NAME": "bench",
            "DKIST_WORKFLOW_VERSION": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        started = time.time_ns()
        result = subprocess.run(command, env={**env, **given}, capture_output=True, text=True)
        if result.returncode:
            raise BenchmarkError(f"direct start failed:\n{result.stderr[-3000:]}")
        return (int(probe.read_text()) - started) / 1e9

    def run(self, runs: int) -> dict[str, list[float]]:
        from dkist_processing_core.worker import WORKER_COMMAND as script

        samples: dict[str, list[float]] = {"pip fresh": [], "pip fresh (7.5.0's script)": []}
        pip_env = self.env(False)
        self.once(script, pip_env)  # warms pip's cache and the page cache, as on a worker
        self.once(SCRIPT_750, pip_env)
        # Alternated, so that a drift of the machine (page cache, disk) hits both scripts alike.
        for _ in range(runs):
            samples["pip fresh (7.5.0's script)"].append(self.once(SCRIPT_750, pip_env))
            samples["pip fresh"].append(self.once(script, pip_env))
        cold = []
        for index in range(runs):
            cold.append(
                self.once(
                    script, self.env(True, UV_CACHE_DIR=str(self.workdir / f"uv-cold-{index}"))
                )
            )
            shutil.rmtree(self.workdir / f"uv-cold-{index}", ignore_errors=True)
        samples["uv fresh, cold"] = cold
        warm_env = self.env(True, UV_CACHE_DIR=str(self.workdir / "uv-warm"))
        self.once(script, warm_env)
        samples["uv fresh, warm"] = [self.once(script, warm_env) for _ in range(runs)]
        cache_env = self.env(
            True,
            UV_CACHE_DIR=str(self.workdir / "uv-warm"),
            DKIST_VENV_CACHE_DIR=str(self.workdir / "venvs"),
        )
        samples["cache build"] = [self.once(script, cache_env)]
        samples["cache hit"] = [self.once(script, cache_env) for _ in range(runs)]
        (entry,) = (self.workdir / "venvs").glob("venvs-v1/*/current")
        marker = json.loads((entry / ".dkist-venv-cache.json").read_text())
        contract = not any(
            line.lower().startswith("dkist-processing-core-task==")
            for line in marker["distributions"]
        )
        samples["direct"] = [
            self.direct(entry / "bin" / "python", cache_env, contract) for _ in range(runs)
        ]
        samples["packages"] = [float(len(marker["distributions"]))]
        return samples


def example_pipeline(workdir: Path) -> Pipeline:
    """The example at 1.0.0 with core-telemetry/-task of this checkout and their dependencies."""
    from bench_install import dependency_wheelhouse

    wheelhouse = workdir / "example-wheels"
    wheelhouse.mkdir(parents=True)
    for project in ("packages/core-telemetry", "packages/core-task", "examples"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "build",
                "-q",
                "--no-isolation",
                "--wheel",
                "--outdir",
                wheelhouse,
                REPO_ROOT / project,
            ],
            check=True,
            capture_output=True,
        )
    for wheel in dependency_wheelhouse(Path(sys.executable)).glob("*.whl"):
        (wheelhouse / wheel.name).symlink_to(wheel)
    return Pipeline(
        "example", "dkist-processing-example[frozen]==1.0.0", Path(sys.executable), wheelhouse
    )


def real_pipeline() -> Pipeline:
    # What pytest puts on the path (pyproject: pythonpath = ["tests", "scripts"]).
    sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT / "scripts")]
    from helpers.client_venvs import PINS
    from helpers.client_venvs import pip_download
    from helpers.client_venvs import python313

    requirements = [
        "dkist-processing-test==1.46.0",
        "dkist-processing-ops==1.11.8",
    ]  # tests/clients
    wheelhouse = pip_download("clients", ["-c", str(PINS), *requirements], [PINS, *requirements])
    return Pipeline(
        "dkist-processing-test 1.46.0", "dkist-processing-test==1.46.0", python313(), wheelhouse
    )


def table(results: dict[str, dict[str, list[float]]]) -> str:
    lines = [
        "| pipeline | scenario | median s | ratio to pip fresh | overhead over direct s | runs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, samples in results.items():
        pip = statistics.median(samples["pip fresh"])
        direct = statistics.median(samples["direct"])
        for scenario, values in samples.items():
            if scenario == "packages":
                continue
            value = statistics.median(values)
            lines.append(
                f"| {name} ({int(samples['packages'][0])} packages) | {scenario} | {value:.3f} | "
                f"{value / pip:.3f} | {value - direct:+.3f} | {len(values)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--real", action="store_true", help="also dkist-processing-test 1.46.0 (Python 3.13)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dkist-task-start-"))
    results: dict[str, dict[str, list[float]]] = {}
    try:
        pipelines = [example_pipeline(workdir / "example")]
        if args.real:
            pipelines.append(real_pipeline())
        for pipeline in pipelines:
            print(f"task start: {pipeline.name} ...", file=sys.stderr, flush=True)
            results[pipeline.name] = Bench(pipeline, workdir / pipeline.name.split()[0]).run(
                args.runs
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
