"""Helpers for the notebooks that run workflows by hand (the exported workflow notebooks use them).

``wait_for_notebook_save`` waits until the notebook file on disk is saved and stops changing, so
that what comes next (an export, an archive) sees the outputs of the cells just run.
``export_notebook_by_path`` converts a notebook file with nbconvert (HTML by default) and writes
the result next to it, as a record of the manual processing.

nbformat and nbconvert come from the extra ``dkist-processing-core-task[notebook]`` and are imported
inside the functions: a worker that only runs tasks never loads them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

__all__ = ["NOTEBOOK_EXTRA", "export_notebook_by_path", "wait_for_notebook_save"]

NOTEBOOK_EXTRA = "dkist-processing-core-task[notebook]"


def _notebook_modules() -> tuple[Any, Any]:
    try:
        import nbconvert
        import nbformat
    except ImportError as error:
        raise ImportError(
            f"dkist_processing_core.notebook_utils needs nbformat and nbconvert ({error.name} is missing); "
            f"install them with: pip install '{NOTEBOOK_EXTRA}'",
            name=error.name,
        ) from error
    return nbformat, nbconvert


def _notebook_path(notebook_path: str | os.PathLike[str] | None) -> Path:
    if notebook_path is not None:
        return Path(notebook_path).expanduser()
    # Jupyter Server (2.x) tells its kernels which notebook they run for.
    session_name = os.environ.get("JPY_SESSION_NAME")
    if session_name and session_name.endswith(".ipynb"):
        return Path(session_name)
    raise ValueError("no notebook path given and JPY_SESSION_NAME does not name a notebook; pass notebook_path")


def _snapshot(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def wait_for_notebook_save(
    notebook_path: str | os.PathLike[str] | None = None,
    *,
    saved_after: float | None = None,
    timeout: float = 60.0,
    settle_seconds: float = 1.0,
    poll_interval: float = 0.2,
) -> Path:
    """Wait until the notebook file is saved and has stopped changing; return its path.

    The file counts as saved when it exists, was modified after ``saved_after`` (a ``time.time()``
    value; default: any time), has not changed for ``settle_seconds`` and reads as a valid notebook.
    ``notebook_path`` defaults to the notebook of the running Jupyter kernel (``JPY_SESSION_NAME``).
    Raises TimeoutError naming the file after ``timeout`` seconds.
    """
    nbformat, _ = _notebook_modules()
    path = _notebook_path(notebook_path)
    threshold_ns = None if saved_after is None else int(saved_after * 1_000_000_000)
    deadline = time.monotonic() + timeout
    last = _snapshot(path)
    stable_since = time.monotonic()
    problem = "does not exist"
    while True:
        current = _snapshot(path)
        now = time.monotonic()
        if current != last:
            last, stable_since = current, now
        if current is None:
            problem = "does not exist"
        elif threshold_ns is not None and current[0] <= threshold_ns:
            problem = "was not saved since the wait began"
        elif now - stable_since < settle_seconds:
            problem = "is still changing"
        else:
            try:
                nbformat.read(path, as_version=nbformat.NO_CONVERT)
            except Exception as error:  # half-written JSON while the frontend saves
                problem = f"is not a readable notebook ({type(error).__name__})"
            else:
                return path
        if now >= deadline:
            raise TimeoutError(f"notebook {str(path)!r} {problem} after waiting {timeout:g} s; save it and try again")
        time.sleep(poll_interval)


def export_notebook_by_path(
    notebook_path: str | os.PathLike[str],
    output_format: str = "html",
    output_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Convert the notebook file with nbconvert's exporter ``output_format``; return the written file.

    The result goes to ``output_path``, by default next to the notebook with the exporter's file
    extension (``run.ipynb`` -> ``run.html``). Formats are nbconvert's (html, markdown, script,
    rst, pdf if LaTeX is installed, ...).
    """
    nbformat, nbconvert = _notebook_modules()
    source = Path(notebook_path).expanduser()
    if not source.is_file():
        raise FileNotFoundError(f"notebook {str(source)!r} does not exist")
    if output_format not in nbconvert.get_export_names():
        raise ValueError(
            f"unknown notebook export format {output_format!r}; nbconvert knows {', '.join(nbconvert.get_export_names())}"
        )
    notebook = nbformat.read(source, as_version=4)
    exporter = nbconvert.get_exporter(output_format)()
    body, resources = exporter.from_notebook_node(notebook, resources={"metadata": {"path": str(source.parent)}})
    extension = resources.get("output_extension") or exporter.file_extension
    target = Path(output_path).expanduser() if output_path is not None else source.with_suffix(extension)
    if target.resolve() == source.resolve():
        raise ValueError(f"exporting {str(source)!r} as {output_format!r} would overwrite the notebook itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(body, bytes):
        target.write_bytes(body)
    else:
        target.write_text(body, encoding="utf-8")
    return target
