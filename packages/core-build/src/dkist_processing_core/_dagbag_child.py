"""``python -m dkist_processing_core._dagbag_child REQUEST``: load DAG files in Airflow's DagBag.

The child of :mod:`._dagbag_loader`. It imports Airflow at once, then reads one request line on
stdin, ``{"folder": ..., "result": ...}``, parses every ``*.py`` file of the folder with
``DagBag.process_file`` and writes ``{"import_errors": {file: trace}, "dags": {dag_id: {task_id:
[upstream ids]}}}`` to the result file. Standard library plus Airflow. (Parsing is the small part:
32 DAG files of dkist-processing-test take 0.1 s, so it is not spread over processes.)

Airflow's configuration set-up builds the providers manager, which imports jsonschema, whose
format module imports rfc3987-syntax, which compiles 38 lark grammars at import (about 2.6 s here)
for the ``iri`` formats; nothing in a DagBag fill checks those. A stand-in module imports the real
one when a format check first calls it, so jsonschema behaves the same, minus the start-up cost.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _lazy_rfc3987_syntax() -> None:
    """Put a stand-in for ``rfc3987_syntax`` whose functions import the real module on first call."""
    name = "rfc3987_syntax"
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    stand_in = types.ModuleType(name)

    def real() -> types.ModuleType:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)

    def is_valid_syntax(*args: Any, **kwargs: Any) -> Any:
        return real().is_valid_syntax(*args, **kwargs)

    def __getattr__(attribute: str) -> Any:  # any other name: the real module's
        if attribute.startswith("__"):  # the import system probes __path__ and the like
            raise AttributeError(attribute)
        return getattr(real(), attribute)

    stand_in.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    stand_in.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = stand_in


def _parse(files: list[str]) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    # The files are in an export's staging folder: no __pycache__ may be moved into the target.
    sys.dont_write_bytecode = True
    bag = DagBag(dag_folder=os.path.dirname(files[0]), collect_dags=False)
    for file in files:
        bag.process_file(file, only_if_updated=False, safe_mode=True)  # type: ignore[no-untyped-call]
    return {
        "import_errors": {str(path): str(trace) for path, trace in bag.import_errors.items()},
        "dags": {
            dag_id: {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks}
            for dag_id, dag in bag.dags.items()
        },
    }


def main() -> int:
    """Import Airflow, answer one request (see the module docstring); exit status 0 when answered."""
    _lazy_rfc3987_syntax()
    import airflow.dag_processing.dagbag  # noqa: F401 - the slow part, done while the caller works

    line = sys.stdin.readline()
    if not line:
        return 0  # the caller had nothing to load
    request = json.loads(line)
    files = sorted(str(path) for path in Path(request["folder"]).glob("*.py"))
    result = _parse(files) if files else {"import_errors": {}, "dags": {}}
    Path(request["result"]).write_text(json.dumps(result), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    # The caller waits for this process to end: skip tearing down Airflow's modules (~0.4 s).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
