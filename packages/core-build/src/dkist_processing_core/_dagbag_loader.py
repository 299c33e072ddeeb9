"""Load exported DAG files in Airflow's DagBag, in a child process started before they exist.

``validate_workflows`` and ``export_dags`` used to import the pipeline, write the DAG files and
then import Airflow (1-4 s, see :mod:`._dagbag_child`) and fill a DagBag, all one after the other
in the caller's process. :class:`DagBagLoader` starts the child first, so Airflow is imported
while the caller imports the pipeline and writes the files; the child then parses the files and
answers with each file's import error and each DAG's tasks and upstreams. The caller never
imports Airflow. What the DagBag checks is unchanged: the files go through
Airflow's own ``DagBag.process_file``, and every import error is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dkist_processing_core.errors import DKISTProcessingCoreError

__all__ = ["DagBagLoader", "DagBagResult", "LoaderError"]

#: Longest a DagBag fill may take (Airflow's own per-file import timeout is 30 s).
TIMEOUT_SECONDS = 900.0


class LoaderError(DKISTProcessingCoreError, RuntimeError):
    """The DagBag child failed or did not answer; the message carries the end of its output."""


@dataclass(frozen=True)
class DagBagResult:
    """What the DagBag made of a folder: import errors by file, and each DAG's upstreams by task."""

    import_errors: dict[str, str]
    dags: dict[str, dict[str, list[str]]]


class DagBagLoader:
    """The child that loads DAG files; use as a context manager, call :meth:`load` once."""

    def __init__(self) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="dkist-dagbag-")
        self._log = Path(self._scratch.name) / "child.log"
        env = dict(os.environ)
        # Airflow writes logs and a config under AIRFLOW_HOME (default ~/airflow): keep a
        # library call from creating one in the user's home.
        env.setdefault("AIRFLOW_HOME", str(Path(self._scratch.name) / "airflow-home"))
        with self._log.open("wb") as log:
            self._child = subprocess.Popen(
                [sys.executable, "-P", "-m", "dkist_processing_core._dagbag_child"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def load(self, folder: Path) -> DagBagResult:
        """Every ``*.py`` file of ``folder`` through ``DagBag.process_file``; LoaderError if the child fails."""
        result = Path(self._scratch.name) / "result.json"
        request = {"folder": str(folder), "result": str(result)}
        try:  # (a child that died already is reported below)
            self._child.communicate((json.dumps(request) + "\n").encode(), TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
            raise LoaderError(f"the DagBag did not finish in {TIMEOUT_SECONDS:.0f} s") from None
        status = self._child.returncode
        if status != 0 or not result.exists():
            tail = self._log.read_text(errors="replace")[-3000:]
            raise LoaderError(
                f"loading the DAG files in a DagBag failed (exit status {status}):\n{tail}"
            )
        data = json.loads(result.read_text(encoding="utf-8"))
        return DagBagResult(import_errors=data["import_errors"], dags=data["dags"])

    def __enter__(self) -> DagBagLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        if self._child.stdin is not None and not self._child.stdin.closed:
            self._child.stdin.close()
        self._scratch.cleanup()
