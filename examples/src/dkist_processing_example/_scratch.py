"""Where the example tasks keep their files, and the small helpers they share."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "SCRATCH_VARIABLE",
    "SLEEP_VARIABLE",
    "read_json",
    "scratch_dir",
    "task_sleep",
    "write_json",
]

SCRATCH_VARIABLE = "DKIST_EXAMPLE_SCRATCH"
SLEEP_VARIABLE = "DKIST_EXAMPLE_TASK_SLEEP"


def scratch_dir(recipe_run_id: int) -> Path:
    """``$DKIST_EXAMPLE_SCRATCH/recipe-run-<id>`` (default root: the system temporary folder)."""
    root = os.environ.get(SCRATCH_VARIABLE) or os.path.join(
        tempfile.gettempdir(), "dkist-processing-example"
    )
    folder = Path(root) / f"recipe-run-{recipe_run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def task_sleep() -> float:
    """Seconds the calibration tasks sleep (``$DKIST_EXAMPLE_TASK_SLEEP``, default 0)."""
    raw = os.environ.get(SLEEP_VARIABLE, "").strip()
    if not raw:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{SLEEP_VARIABLE} must be a number of seconds, got {raw!r}") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"{SLEEP_VARIABLE} must be between 0 and 3600 seconds, got {raw!r}")
    return seconds


def write_json(path: Path, content: Any) -> Path:
    """Write ``content`` as JSON atomically (write a sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def now() -> float:
    return time.time()
