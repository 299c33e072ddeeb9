"""``run --engine airflow``: run an exported DAG with Airflow's ``dag.test()`` on a throw-away database.

The parent side (:func:`run`) prepares a temporary folder with the DAG file, an ``AIRFLOW_HOME``
and a wheelhouse, then starts this module as a child process (``python -m
dkist_processing_core._airflow_engine``) with a clean Airflow environment. The child migrates the
SQLite metadata database (``airflow db migrate``), loads the DAG from the folder and calls
``dag.test(run_conf={"recipe_run_id": N})``, which runs the tasks in dependency order (retries and
failure callbacks included) and writes their final states to a JSON file that the parent turns
into a :class:`~dkist_processing_core.runner.RunSummary`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._process_group import GRACE_SECONDS
from dkist_processing_core._process_group import ForwardedSignals
from dkist_processing_core._process_group import LineClipper
from dkist_processing_core._process_group import read_pieces
from dkist_processing_core._process_group import signal_group
from dkist_processing_core._process_group import start_in_session

if TYPE_CHECKING:
    from dkist_processing_core.runner import RunSummary
    from dkist_processing_core.runner import _Output
    from dkist_processing_core.workflow import Workflow

__all__ = ["main", "run"]

_RESULT_FORMAT = 1


def _canonical_version(text: str) -> str | None:
    from packaging.version import InvalidVersion
    from packaging.version import Version

    try:
        return str(Version(text))
    except InvalidVersion:
        return None


def _preflight(workflow: Workflow) -> str:
    """The installed version of the workflow's distribution, which must be the workflow's version."""
    from dkist_processing_core.runner import RunError

    distribution = workflow.distribution
    try:
        have = installed_version(distribution)
    except PackageNotFoundError:
        raise RunError(
            f"--engine airflow installs {distribution} into a venv per task, like a worker, but it is not "
            "installed here; install the pipeline (pip install -e <pipeline>) or use the local engine"
        ) from None
    wanted = _canonical_version(workflow.workflow_version)
    if wanted is None or wanted != _canonical_version(have):
        raise RunError(
            f"--engine airflow: each task pip-installs {distribution}=={workflow.workflow_version} like a "
            f"worker does, but the installed {distribution} is version {have}; build the workflow at that "
            f"version (BUILD_VERSION={have}, or workflow_version={have!r}) or use the local engine"
        )
    return have


def _child_env(
    base: dict[str, str], home: Path, dags: Path, wheelhouse: Path | None
) -> dict[str, str]:
    env = {name: value for name, value in base.items() if not name.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONUNBUFFERED": "1",
            # The node's script creates its venv with `python3`: use this interpreter's.
            "PATH": os.pathsep.join(
                [str(Path(sys.executable).parent), base.get("PATH", os.defpath)]
            ),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_COMPILE": "1",
        }
    )
    if wheelhouse is not None:
        env["PIP_FIND_LINKS"] = str(wheelhouse)
        env["PIP_NO_INDEX"] = "1"
    return env


def _stream(command: list[str], env: dict[str, str], output: _Output, prefix: str) -> int:
    """Run the Airflow child in a session of its own and show its output; return its exit status.

    SIGINT, SIGTERM or SIGHUP to the runner meanwhile (and any error of ours) is passed on to the
    child's whole process group (Airflow and the task processes it started), which gets the grace
    period to end before what is left is killed; then :class:`RunInterrupted` (or the error) goes up.
    """
    from dkist_processing_core.runner import RunInterrupted

    stop_signal: int | None = None  # once set, a signal only ends the grace period
    hurry = False

    def on_signal(signum: int) -> None:
        nonlocal stop_signal, hurry
        if stop_signal is None:
            stop_signal = signum
            raise RunInterrupted(signum)
        hurry = True

    process = start_in_session(command, env)
    assert process.stdout is not None
    clipper = LineClipper(lambda left_out: f"... ({left_out} more bytes not shown)")
    with ForwardedSignals(on_signal):
        try:
            for piece in read_pieces(process.stdout):
                if (line := clipper.feed(piece)) is not None:
                    output.line(prefix, line)
            if (line := clipper.finish()) is not None:
                output.line(prefix, line)
            return process.wait()
        except BaseException:  # never leave Airflow or its tasks running behind us
            if stop_signal is None:  # an error of ours
                stop_signal = signal.SIGTERM
            signal_group(process, stop_signal)
            give_up = time.monotonic() + GRACE_SECONDS
            while not hurry and time.monotonic() < give_up and process.poll() is None:
                time.sleep(0.1)
            signal_group(process, signal.SIGKILL)
            process.wait()
            raise
        finally:
            process.stdout.close()


def run(
    workflow: Workflow,
    recipe_run_id: int,
    *,
    wheelhouse: Path | None,
    output: _Output,
    env: dict[str, str],
    keep: bool = False,
) -> RunSummary:
    from dkist_processing_core._wheelhouse import WheelhouseError
    from dkist_processing_core._wheelhouse import ensure_wheelhouse
    from dkist_processing_core.runner import RunError
    from dkist_processing_core.runner import RunSummary
    from dkist_processing_core.runner import TaskResult

    workflow.check_dag()
    dist_version = _preflight(workflow)
    root = Path(tempfile.mkdtemp(prefix="dkist-airflow-run-"))
    started = time.monotonic()
    try:
        dags, home = root / "dags", root / "airflow-home"
        home.mkdir()
        dag_file = workflow.export_dag(dags)
        output.line("runner", f"exported {dag_file.name} to {dags}; AIRFLOW_HOME={home}")
        extras = sorted({extra for node in workflow.nodes for extra in node.install_extras})
        try:
            house = ensure_wheelhouse(
                wheelhouse if wheelhouse is not None else root / "wheelhouse",
                workflow.distribution,
                dist_version,
                extras,
                lambda message: output.line("runner", message),
                required=wheelhouse is not None,
            )
        except WheelhouseError as error:
            raise RunError(str(error)) from None
        result_file = root / "result.json"
        command = [  # --opt=value: a DAG id that starts with "-" is never read as an option
            sys.executable,
            "-m",
            "dkist_processing_core._airflow_engine",
            f"--dag-folder={dags}",
            f"--dag-id={workflow.dag_name}",
            f"--recipe-run-id={recipe_run_id}",
            f"--result={result_file}",
        ]
        output.line(
            "runner",
            f"running {workflow.dag_name} with Airflow's dag.test() for recipe run {recipe_run_id}",
        )
        exit_code = _stream(command, _child_env(env, home, dags, house), output, "airflow")
        if not result_file.exists():
            raise RunError(
                f"the Airflow run ended (exit {exit_code}) without a result; see its output above"
            )
        result = json.loads(result_file.read_text(encoding="utf-8"))
        if result.get("error"):
            raise RunError(f"the Airflow run failed: {result['error']}")
        by_id = {item["task_id"]: item for item in result["task_instances"]}
        results = []
        for node in workflow.topological_sort():
            item = by_id.get(node.task_id, {})
            state = item.get("state")
            if state == "success":
                mapped, note = "success", ""
            elif state == "failed":
                mapped, note = "failed", ""
            else:
                mapped, note = "skipped", f"not run ({state or 'no state'})"
            try_number = item.get("try_number") or 0
            results.append(
                TaskResult(
                    node.task_id,
                    state=mapped,
                    attempts=try_number if mapped != "skipped" else 0,
                    started=item.get("start"),
                    ended=item.get("end"),
                    note=note,
                )
            )
        return RunSummary(
            engine="airflow",
            dag_id=workflow.dag_name,
            run_id=result.get("run_id", "?"),
            recipe_run_id=recipe_run_id,
            results=results,
            duration=time.monotonic() - started,
            messages=[f"Airflow DagRun state: {result.get('state')}"]
            + ([f"Kept {root}"] if keep else []),
        )
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------- the child
def _epoch(value: Any) -> float | None:
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    return None


def _write(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps({"format": _RESULT_FORMAT, **content}, indent=2), encoding="utf-8")


def _child(dag_folder: Path, dag_id: str, recipe_run_id: int, result: Path) -> int:
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=False)
    if migrate.returncode != 0:
        _write(result, {"error": f"airflow db migrate failed (exit {migrate.returncode})"})
        return 1
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_folder))
    if bag.import_errors:
        errors = "; ".join(
            f"{Path(path).name}: {str(trace).strip().splitlines()[-1]}"
            for path, trace in bag.import_errors.items()
        )
        _write(result, {"error": f"the DAG file does not load: {errors}"})
        return 1
    dag = bag.dags.get(dag_id)
    if dag is None:
        _write(result, {"error": f"no DAG {dag_id!r} in {dag_folder}"})
        return 1
    dag_run = dag.test(run_conf={"recipe_run_id": recipe_run_id})
    task_instances = [
        {
            "task_id": ti.task_id,
            "state": None if ti.state is None else str(ti.state),
            "try_number": ti.try_number,
            "start": _epoch(ti.start_date),
            "end": _epoch(ti.end_date),
        }
        for ti in dag_run.get_task_instances()
    ]
    state = str(dag_run.state)
    _write(result, {"run_id": dag_run.run_id, "state": state, "task_instances": task_instances})
    return 0 if state == "success" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dkist_processing_core._airflow_engine")
    parser.add_argument("--dag-folder", type=Path, required=True)
    parser.add_argument("--dag-id", required=True)
    parser.add_argument("--recipe-run-id", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.dag_id) or args.recipe_run_id < 0:
        parser.error("invalid --dag-id or --recipe-run-id")
    return _child(args.dag_folder, args.dag_id, args.recipe_run_id, args.result)


if __name__ == "__main__":
    sys.exit(main())
