"""The ``airflow`` engine: run an exported DAG with Airflow's ``dag.test()`` on a throw-away database.

:class:`AirflowEngine` prepares a temporary folder with the DAG file, an ``AIRFLOW_HOME`` and a
wheelhouse (each node's worker program installs the pipeline into a fresh venv, as on a worker; pip is
pointed at the wheelhouse with ``PIP_FIND_LINKS``/``PIP_NO_INDEX``), then starts
:mod:`dkist_processing_core.engines._airflow_child` in a session of its own with a clean Airflow
environment, shows its output and turns the JSON result it writes into a :class:`RunSummary`.
SIGINT, SIGTERM or SIGHUP meanwhile (and any error of ours) is passed on to the child's whole
process group, which gets the grace period before what is left is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import IO
from typing import TYPE_CHECKING
from typing import ClassVar

from dkist_processing_core._pinned import parse_version
from dkist_processing_core.engines._children import LineClipper
from dkist_processing_core.engines._children import forwarded_signals
from dkist_processing_core.engines._children import read_pieces
from dkist_processing_core.engines._children import start_in_session
from dkist_processing_core.engines._children import stop_group
from dkist_processing_core.engines._common import Output
from dkist_processing_core.engines._common import RunError
from dkist_processing_core.engines._common import RunInterrupted
from dkist_processing_core.engines._common import RunSummary
from dkist_processing_core.engines._common import TaskResult
from dkist_processing_core.engines._common import TaskState

if TYPE_CHECKING:
    from dkist_processing_core._workflow_model import Workflow

__all__ = ["AirflowEngine"]


def _preflight(workflow: Workflow) -> str:
    """The installed version of the workflow's distribution, which must be the workflow's version."""
    distribution = workflow.distribution
    try:
        have = installed_version(distribution)
    except PackageNotFoundError:
        raise RunError(
            f"--engine airflow installs {distribution} into a venv per task, like a worker, but it is not "
            "installed here; install the pipeline (pip install -e <pipeline>) or use the local engine"
        ) from None
    wanted = parse_version(workflow.workflow_version)
    if wanted is None or wanted != parse_version(have):
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


def _stream(command: list[str], env: dict[str, str], output: Output, prefix: str) -> int:
    """Run the Airflow child in a session of its own and show its output; return its exit status.

    SIGINT, SIGTERM or SIGHUP to the runner meanwhile (and any error of ours) is passed on to the
    child's whole process group (Airflow and the task processes it started), which gets the grace
    period to end before what is left is killed; then :class:`RunInterrupted` (or the error) goes up.
    """
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
    with forwarded_signals(on_signal):
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
            stop_group(process, stop_signal, lambda: hurry)
            raise
        finally:
            process.stdout.close()


class AirflowEngine:
    """``--engine airflow``: see the module docstring.

    ``wheelhouse`` is reused if it already holds the pipeline and its dependencies (else a
    temporary one is built); ``keep`` keeps the temporary folder for inspection.
    """

    name: ClassVar[str] = "airflow"
    options: ClassVar[frozenset[str]] = frozenset({"wheelhouse", "stream", "env", "keep"})

    def __init__(
        self,
        *,
        wheelhouse: str | Path | None = None,
        stream: IO[str] | None = None,
        env: dict[str, str] | None = None,
        keep: bool = False,
    ) -> None:
        self.wheelhouse = None if wheelhouse is None else Path(wheelhouse).expanduser().absolute()
        self.stream = stream
        self.env = env
        self.keep = keep

    def run(self, workflow: Workflow, recipe_run_id: int) -> RunSummary:
        """Export the DAG, run it with ``dag.test()`` in a child process and summarise the task states."""
        from dkist_processing_core._wheelhouse import WheelhouseError
        from dkist_processing_core._wheelhouse import ensure_wheelhouse

        output = Output(self.stream or sys.stdout)
        env = dict(os.environ if self.env is None else self.env)
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
                    self.wheelhouse if self.wheelhouse is not None else root / "wheelhouse",
                    workflow.distribution,
                    dist_version,
                    extras,
                    lambda message: output.line("runner", message),
                    required=self.wheelhouse is not None,
                )
            except WheelhouseError as error:
                raise RunError(str(error)) from None
            result_file = root / "result.json"
            command = [  # --opt=value: a DAG id that starts with "-" is never read as an option
                sys.executable,
                "-m",
                "dkist_processing_core.engines._airflow_child",
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
                ran = state in (TaskState.SUCCESS, TaskState.FAILED)
                results.append(
                    TaskResult(
                        node.task_id,
                        state=TaskState(state) if ran else TaskState.SKIPPED,
                        attempts=(item.get("try_number") or 0) if ran else 0,
                        started=item.get("start"),
                        ended=item.get("end"),
                        note="" if ran else f"not run ({state or 'no state'})",
                    )
                )
            return RunSummary(
                engine=self.name,
                dag_id=workflow.dag_name,
                run_id=result.get("run_id", "?"),
                recipe_run_id=recipe_run_id,
                results=results,
                duration=time.monotonic() - started,
                messages=[f"Airflow DagRun state: {result.get('state')}"]
                + ([f"Kept {root}"] if self.keep else []),
            )
        finally:
            if not self.keep:
                shutil.rmtree(root, ignore_errors=True)
