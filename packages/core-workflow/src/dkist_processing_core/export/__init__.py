"""Writers of a workflow's artifacts: the Airflow DAG file (:mod:`.dag`) and the notebook (:mod:`.notebook`).

Both produce text from validated values only; :class:`~dkist_processing_core.Workflow` writes it
into the target folder with :func:`dkist_processing_core._atomic.write_atomically` (nothing else is
touched).
"""

from __future__ import annotations

__all__ = ["GENERATOR"]


def _generator() -> str:
    from dkist_processing_core._version_workflow import __version__

    return f"dkist-processing-core-workflow {__version__}"


#: Distribution name and version written into every generated file.
GENERATOR = _generator()
