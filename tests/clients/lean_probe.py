"""Import every task module of some pipelines with whatever is installed; write a JSON report.

Run by tests/clients/test_lean_worker.py with a lean venv's interpreter (Python 3.13), never
imported by pytest:

    python -I lean_probe.py REPORT PACKAGE...

``imports``: every module under ``PACKAGE.tasks`` (``pkgutil.walk_packages``), each imported on
its own, name -> "" or the traceback. Then what the worker's process holds after all of them:
``airflow_findable`` (an ``airflow`` import package is installed), ``airflow_loaded`` (airflow
modules in ``sys.modules``) and ``workflow`` (what ``from dkist_processing_core import Workflow``
says on a worker without dkist-processing-core-workflow).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import sys
import traceback
from pathlib import Path


def task_modules(package: str, errors: dict[str, str]) -> list[str]:
    """``PACKAGE.tasks`` and every module below it; a package that fails to walk goes to ``errors``."""
    root = f"{package}.tasks"
    spec = importlib.util.find_spec(root)  # imports PACKAGE itself, not PACKAGE.tasks
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{root} is not a package")

    def walk_error(name: str) -> None:
        errors[name] = traceback.format_exc()

    found = pkgutil.walk_packages(
        spec.submodule_search_locations, prefix=f"{root}.", onerror=walk_error
    )
    return [root, *sorted(info.name for info in found)]


def main() -> None:
    report_path, packages = Path(sys.argv[1]), sys.argv[2:]
    imports: dict[str, str] = {}
    for package in packages:
        try:
            names = task_modules(package, imports)
        except BaseException:
            imports[f"{package}.tasks"] = traceback.format_exc()
            continue
        for name in names:
            try:
                importlib.import_module(name)
                imports.setdefault(name, "")
            except BaseException:  # SystemExit from a pipeline's import is a failure too
                imports[name] = traceback.format_exc()
    try:
        from dkist_processing_core import Workflow

        workflow = f"imported {Workflow!r}"
    except ImportError as error:
        workflow = f"ImportError: {error}"
    report = {
        "imports": imports,
        "airflow_findable": importlib.util.find_spec("airflow") is not None,
        "airflow_loaded": sorted(
            name for name in sys.modules if name == "airflow" or name.startswith("airflow.")
        ),
        "workflow": workflow,
    }
    report_path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
