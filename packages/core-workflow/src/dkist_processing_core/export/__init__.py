"""Writers of a workflow's artifacts: the Airflow DAG file (:mod:`.dag`) and the notebook (:mod:`.notebook`).

Both produce text from validated values only, and write it atomically into the target folder
(nothing else is touched).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["GENERATOR", "write_text_atomically"]


def _generator() -> str:
    from dkist_processing_core._version_workflow import __version__

    return f"dkist-processing-core-workflow {__version__}"


#: Distribution name and version written into every generated file.
GENERATOR = _generator()


def write_text_atomically(folder: Path, file_name: str, text: str) -> Path:
    """Write ``text`` to ``folder/file_name`` (creating the folder) via a temporary file and rename."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file_name
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
