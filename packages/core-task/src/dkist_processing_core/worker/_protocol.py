"""The worker program's one output protocol: a line per event on standard output.

``dkist-processing-core worker: <event> <JSON object>``, e.g.
``dkist-processing-core worker: setup {"installer": "uv", "cache": "hit", ...}``. The JSON is one
line (non-ASCII escaped), so operators can grep the task log and tools can parse it
(:func:`read_events`). Output of the installers and of the task itself is not part of it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

from dkist_processing_core.errors import DKISTProcessingCoreError

__all__ = ["EVENT_PREFIX", "WorkerError", "emit", "note", "read_events"]

EVENT_PREFIX = "dkist-processing-core worker:"


class WorkerError(DKISTProcessingCoreError):
    """A step cannot go on; ``status`` is the worker's exit status (2: bad invocation).

    Per instance, unlike ``exit_status``: a failed install exits with the installer's status.
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def emit(event: str, **fields: object) -> None:
    """Print one event line (flushed, so it is in the log even if the worker is killed next)."""
    print(f"{EVENT_PREFIX} {event} {json.dumps(fields)}", file=sys.stdout, flush=True)


def note(message: str) -> None:
    """An event ``note``: something an operator should read (a wait, a fallback, a rebuild)."""
    emit("note", message=message)


def read_events(text: str) -> Iterator[tuple[str, dict[str, object]]]:
    """``(event, fields)`` of every protocol line in ``text`` (a task log), in order.

    A log line may wrap the event in its own prefix and suffix (Airflow's timestamp, level and
    logger name): the event is read from the marker on and text after its JSON object is ignored;
    a line whose text after the marker is not JSON (task output that mentions it) is skipped.
    """
    marker = EVENT_PREFIX + " "
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        start = line.find(marker)
        if start < 0:
            continue
        event, _, body = line[start + len(marker) :].partition(" ")
        try:
            fields, _end = decoder.raw_decode(body.lstrip() or "{}")
        except ValueError:
            continue
        yield event, fields if isinstance(fields, dict) else {}
