"""Helpers for tasks that run inside a Jupyter notebook (manual processing), as in the previous product.

``wait_for_notebook_save`` prints a sentinel into the running cell's output and waits until the
notebook file on disk contains it, i.e. until the frontend has saved the outputs of the cell being
run. ``export_notebook_by_path`` renders a notebook file as Markdown and returns the bytes, for a
task to keep as a record of the manual processing (``dkist-processing-common`` writes it to scratch).

nbformat and nbconvert come from the extra ``dkist-processing-core-task[notebook]`` and are imported
inside ``export_notebook_by_path``: a worker that only runs tasks never loads them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import uuid4

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


def wait_for_notebook_save(
    notebook_path: Path,
    sentinel: str | None = None,
    attempts: int = 120,
    delay_s: float = 1,
) -> None:
    """Wait until the notebook file on disk contains ``sentinel``; raise TimeoutError otherwise.

    ``sentinel`` defaults to a fresh random string, printed (flushed) into the output of the
    running cell so that it reaches the file when the notebook is saved. The file is read
    ``attempts`` times, ``delay_s`` seconds apart; a file that does not exist yet counts as not saved.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
    if not 0 <= delay_s <= 3600:
        raise ValueError(f"delay_s must be between 0 and 3600 seconds, got {delay_s!r}")
    path = Path(notebook_path)
    sentinel = sentinel or uuid4().hex
    print(f"Waiting for notebook to save with sentinel '{sentinel}'...", flush=True)
    for attempt in range(attempts):
        try:
            if sentinel in path.read_text(encoding="utf-8", errors="replace"):
                return
        except FileNotFoundError:
            pass
        if attempt + 1 < attempts:
            time.sleep(delay_s)
    raise TimeoutError(
        f"Notebook did not save updated outputs in time: {str(path)!r} did not contain the sentinel "
        f"after {attempts} attempts {delay_s:g} s apart; save the notebook and run the cell again"
    )


def export_notebook_by_path(notebook_path: Path) -> bytes:
    """The notebook at ``notebook_path`` rendered as Markdown (nbconvert), as UTF-8 bytes."""
    nbformat, nbconvert = _notebook_modules()
    source = Path(notebook_path)
    if not source.is_file():
        raise FileNotFoundError(f"notebook {str(source)!r} does not exist")
    notebook = nbformat.read(source, as_version=nbformat.NO_CONVERT)
    body, _ = nbconvert.MarkdownExporter().from_notebook_node(notebook)
    markdown: str = body
    return markdown.encode("utf-8")
