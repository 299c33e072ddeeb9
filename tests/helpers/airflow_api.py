"""The command line and REST API of a running Airflow, as a mixin of the test cluster.

The class that mixes it in provides ``python``, ``root``, ``base_url``, ``airflow_env()``,
``_check_alive()`` and ``diagnostics()``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.services import ClusterError

__all__ = ["AirflowApi"]

_TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowApi:
    """``airflow`` CLI calls and REST calls (simple auth manager, all users admin)."""

    python: str
    root: Path
    base_url: str

    def airflow_env(self) -> dict[str, str]:  # pragma: no cover - provided by the cluster
        raise NotImplementedError

    def _check_alive(self) -> None:  # pragma: no cover - provided by the cluster
        raise NotImplementedError

    def diagnostics(self, lines: int = 30) -> str:  # pragma: no cover - provided by the cluster
        raise NotImplementedError

    def run_cli(
        self, args: Sequence[str], timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS`` with the cluster's configuration; raise with its output on failure."""
        result = subprocess.run(
            [self.python, "-m", "airflow", *args],
            env=self.airflow_env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"`airflow {' '.join(args)}` exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """Call the REST API (simple auth manager, all users admin) and return the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise ClusterError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        return json.loads(payload) if payload else None

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120.0) -> None:
        """Wait until the DAG processor has serialized every DAG (and report import errors)."""
        deadline = time.monotonic() + timeout
        pending = set(dag_ids)
        while pending and time.monotonic() < deadline:
            self._check_alive()
            for dag_id in sorted(pending):
                try:
                    self.api(
                        "GET", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/details", timeout=10
                    )
                except ClusterError:
                    continue
                pending.discard(dag_id)
            if pending:
                time.sleep(2)
        if pending:
            errors = self.api("GET", "/api/v2/importErrors")
            raise ClusterError(
                f"DAGs not parsed in {timeout:.0f} s: {sorted(pending)}; import errors: "
                f"{json.dumps(errors, indent=1)[:4000]}\n{self.diagnostics()}"
            )

    def trigger(self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None) -> str:
        """Start a DAG run through the REST API; returns its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if run_id:
            body["dag_run_id"] = run_id
        self.api("PATCH", f"/api/v2/dags/{urllib.parse.quote(dag_id)}", {"is_paused": False})
        answer = self.api("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns", body)
        return answer["dag_run_id"]

    def wait_for_runs(
        self,
        runs: Iterable[tuple[str, str]],
        timeout: float,
        on_poll: Callable[[], None] | None = None,
    ) -> dict[tuple[str, str], str]:
        """Wait until each (dag_id, run_id) reaches success/failed; returns their states."""
        deadline = time.monotonic() + timeout
        states: dict[tuple[str, str], str] = {run: "" for run in runs}
        while time.monotonic() < deadline:
            self._check_alive()
            for dag_id, run_id in states:
                if states[(dag_id, run_id)] in _TERMINAL_RUN_STATES:
                    continue
                answer = self.api(
                    "GET",
                    f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}",
                )
                states[(dag_id, run_id)] = answer["state"]
            if all(s in _TERMINAL_RUN_STATES for s in states.values()):
                return states
            if on_poll:
                on_poll()
            time.sleep(2)
        tis = {f"{d}/{r}": self.task_states(d, r) for d, r in states}
        raise ClusterError(
            f"DAG runs not finished in {timeout:.0f} s: {states}; task states: {tis}\n{self.diagnostics()}"
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api(
            "GET",
            f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances",
        )
        return answer["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
