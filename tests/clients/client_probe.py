"""Exercise one client pipeline with whichever dkist-processing-core is installed; print JSON.

Run by tests/clients with a client venv's interpreter (Python 3.13), never imported by pytest:

    python -I client_probe.py PACKAGE OUTDIR

Every step is tried even when an earlier one failed, and reports ``{"ok", "error", "value"}``:
``imports`` (every module of PACKAGE except its tests, plus the dkist_processing_common modules
the clients build on), ``validate`` / ``export_dags`` / ``export_notebooks`` (the public
build_utils calls, with the signatures both the old and the new core accept), and ``dagbag``
(the exported files loaded by Airflow's DagBag, each DAG reduced to what a scheduler uses),
``library_versions`` (dkist-processing-common's provenance record; needs Redis).
The caller sets AIRFLOW_HOME, BUILD_VERSION and the working directory.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import pkgutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMON_MODULES = ["dkist_processing_common.config", "dkist_processing_common.tasks"]


def step(function: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "error": "", "value": function()}
    except BaseException:  # SystemExit from a client import is a failure too
        return {"ok": False, "error": traceback.format_exc(), "value": None}


def client_modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not info.name.startswith(f"{package}.tests"):
            names.append(info.name)
    return sorted(names)


def import_all(package: str) -> dict[str, str]:
    """Module name -> "" or the import error (the step fails if any module failed)."""
    errors: dict[str, str] = {}
    for name in [*client_modules(package), *COMMON_MODULES]:
        try:
            importlib.import_module(name)
            errors[name] = ""
        except BaseException:
            errors[name] = traceback.format_exc()
    if any(errors.values()):
        failed = {name: error for name, error in errors.items() if error}
        raise ImportError(json.dumps(failed, indent=1))
    return errors


def validate(workflows: str) -> None:
    from dkist_processing_core.build_utils import validate_workflows

    validate_workflows(importlib.import_module(workflows))


def export(kind: str, workflows: str, folder: Path) -> list[str]:
    from dkist_processing_core import build_utils

    function = getattr(build_utils, f"export_{kind}")
    written = function(importlib.import_module(workflows), folder)
    assert all(Path(path).is_file() for path in written), f"missing files in {written}"
    if kind == "notebooks":
        for path in written:
            json.loads(Path(path).read_text())  # a notebook is JSON
    return sorted(Path(path).name for path in written)


def dagbag(folder: Path) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "file": Path(dag.fileloc).name,
            "tags": sorted(dag.tags),
            "tasks": {
                task.task_id: {
                    "upstream": sorted(task.upstream_task_ids),
                    "queue": task.queue,
                    "pool": task.pool,
                    "retries": task.retries,
                    "retry_delay": task.retry_delay.total_seconds(),
                    "bash_command": getattr(task, "bash_command", None),
                    "env": getattr(task, "env", None),
                }
                for task in dag.tasks
            },
        }
    errors = {Path(path).name: text for path, text in bag.import_errors.items()}
    return {"dags": dags, "import_errors": errors}


def library_versions() -> dict[str, str]:
    """dkist-processing-common's provenance record of the installed dkist* dists (needs Redis).

    It looks up every non-extra Requires-Dist of every ``dkist*`` distribution by name, so our
    wheels' metadata must survive that walk.
    """
    from dkist_processing_common.tasks import WorkflowTaskBase

    class ProbeTask(WorkflowTaskBase):
        def run(self) -> None:
            pass

    task = ProbeTask(recipe_run_id=987654321, workflow_name="probe", workflow_version="0")
    return json.loads(task.library_versions)


def main(package: str, outdir: str) -> None:
    out = Path(outdir)
    workflows = f"{package}.workflows"
    report = {
        "core_version": step(lambda: importlib.metadata.version("dkist-processing-core")),
        "imports": step(lambda: import_all(package)),
        "validate": step(lambda: validate(workflows)),
        "export_dags": step(lambda: export("dags", workflows, out / "dags")),
        "export_notebooks": step(lambda: export("notebooks", workflows, out / "notebooks")),
    }
    report["dagbag"] = step(lambda: dagbag(out / "dags"))
    report["library_versions"] = step(library_versions)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:])
