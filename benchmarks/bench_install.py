"""(a) Lean worker install: what a worker's throw-away venv costs with only core-task in it.

Builds the core-telemetry and core-task wheels from this checkout and, once, a wheelhouse of
their third-party dependencies (cached in benchmarks/results/cache/; neither step is timed).
Then, like the worker program of an exported DAG (pip path): ``python -m venv --without-pip`` and an offline
``python -m pip --python VENV/bin/python install dkist-processing-core-task`` from those folders
(timed separately). Reports the number of installed distributions (without pip), the venv size
and the install time.
The last venv stays for benchmarks (b) and (c): they measure what a worker really has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tomllib
from pathlib import Path

from _timing import REPO_ROOT
from _timing import BenchmarkError
from _timing import Context
from _timing import Row
from _timing import check
from _timing import median
from _timing import run_measured

__all__ = ["KEY", "TITLE", "run"]

KEY = "a"
TITLE = "lean worker install"
TASK_DIST = "dkist-processing-core-task"
CACHE = REPO_ROOT / "benchmarks" / "results" / "cache"
HEAVY = {
    "apache-airflow",
    "apache-airflow-core",
    "nbformat",
    "nbconvert",
    "jupyter-core",
    "grpcio-tools",
    "docker",
}


def _pip_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _worker_wheels(ctx: Context) -> Path:
    folder = ctx.workdir / "worker-wheels"
    if not folder.is_dir():
        command = [
            ctx.python,
            REPO_ROOT / "scripts" / "build_dists.py",
            "core-telemetry",
            "core-task",
        ]
        check(
            run_measured([*command, "--wheel-only", "--outdir", folder]), "scripts/build_dists.py"
        )
    return folder


def dependency_wheelhouse(python: Path) -> Path:
    """The third-party wheels of core-telemetry and core-task, downloaded once per dependency list
    (needs an index once)."""
    requirements = sorted(
        requirement
        for member in ("core-telemetry", "core-task")
        for requirement in tomllib.loads(
            (REPO_ROOT / "packages" / member / "pyproject.toml").read_text()
        )["project"]["dependencies"]
        if not requirement.startswith("dkist-processing-core-")
    )
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:16]
    folder = CACHE / f"wheelhouse-{key}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        download = [
            python,
            "-m",
            "pip",
            "download",
            "--only-binary=:all:",
            "--dest",
            folder,
            *requirements,
        ]
        check(
            run_measured(download),
            "pip download of the lean worker's dependencies (needs the package index once)",
        )
        (folder / ".complete").touch()
    return folder


def _folder_mb(folder: Path) -> float:
    total = sum(
        entry.stat().st_size
        for entry in folder.rglob("*")
        if entry.is_file() and not entry.is_symlink()
    )
    return total / 1e6


def _distributions(python: Path) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    )
    result = check(run_measured([python, "-c", script]), "listing the venv's distributions")
    return json.loads(result.stdout)


def _pip_mb(venv: Path) -> float:
    return sum(
        _folder_mb(path)
        for path in (venv / "lib").glob("python*/site-packages/*")
        if path.is_dir() and (path.name == "pip" or path.name.startswith("pip-"))
    )


def _install(
    ctx: Context, venv: Path, wheels: Path, wheelhouse: Path, options: list[str]
) -> tuple[float, float]:
    """The worker program's pip path: a venv without pip, then the outer pip installs into it."""
    shutil.rmtree(venv, ignore_errors=True)
    created = check(
        run_measured([ctx.python, "-m", "venv", "--without-pip", venv]), "python -m venv"
    )
    command = [
        ctx.python,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "--no-index",
    ]
    command += ["--find-links", wheels, "--find-links", wheelhouse, *options, TASK_DIST]
    installed = check(run_measured(command, env=_pip_env()), "offline pip install")
    return created.seconds, installed.seconds


def run(ctx: Context) -> list[Row]:
    wheels = _worker_wheels(ctx)
    wheelhouse = dependency_wheelhouse(ctx.python)
    runs = 1 if ctx.quick else max(1, min(ctx.runs, 3))
    venv_seconds, install_seconds, no_compile_seconds = [], [], []
    venv = ctx.workdir / "worker-venv"
    for _ in range(runs):
        if not ctx.quick:
            no_compile_seconds.append(_install(ctx, venv, wheels, wheelhouse, ["--no-compile"])[1])
        # last: installed like the worker program does; this venv is kept for (b) and (c)
        created, installed = _install(ctx, venv, wheels, wheelhouse, [])
        venv_seconds.append(created)
        install_seconds.append(installed)
    python = venv / "bin" / "python"
    distributions = _distributions(python)
    heavy = sorted(HEAVY & set(distributions))
    if heavy:
        raise BenchmarkError(f"the worker venv contains {heavy}: core-task must not pull them")
    ctx.shared["worker_python"] = python
    packages = len([name for name in distributions if name not in {"pip", "setuptools"}])
    other_packages = other_mb = None
    note = ""
    if ctx.compare_python:  # the reference venv as it is (not reinstalled, so no install time)
        other_venv = ctx.compare_python.parent.parent
        other = _distributions(ctx.compare_python)
        other_packages = len([name for name in other if name not in {"pip", "setuptools"}])
        other_mb = round(_folder_mb(other_venv) - _pip_mb(other_venv), 1)
        note = f"compare: {other_venv} as installed"
    return [
        Row(KEY, "packages (without pip)", packages, "", "<= 40", other_packages, note, runs),
        Row(
            KEY,
            "venv size (without pip)",
            round(_folder_mb(venv) - _pip_mb(venv), 1),
            "MB",
            "<= 60",
            other_mb,
            note,
            runs,
        ),
        Row(
            KEY,
            "offline pip install",
            round(median(install_seconds), 3),
            "s",
            target="<= 4",
            note="pip --python into a venv made with --without-pip, as the DAG's script does",
            runs=runs,
            samples=install_seconds,
        ),
        Row(
            KEY,
            "offline pip install --no-compile",
            round(median(no_compile_seconds), 3) if no_compile_seconds else "skipped (quick)",
            "s" if no_compile_seconds else "",
            runs=runs,
            samples=no_compile_seconds,
            note="no .pyc for every module; a one-task venv compiles only what it imports",
        ),
        Row(
            KEY,
            "python -m venv --without-pip",
            round(median(venv_seconds), 3),
            "s",
            runs=runs,
            samples=venv_seconds,
        ),
        Row(
            KEY,
            "airflow/jupyter/docker in venv",
            "none",
            note="checked: " + ", ".join(sorted(HEAVY)),
        ),
    ]
