"""How the task's environment was made, as the worker program reports it, recorded in telemetry.

The worker program (:mod:`dkist_processing_core.worker`) makes the task venv before the task
process exists, so it passes what happened in environment variables: ``DKIST_ENV_SETUP_INSTALLER``
(``uv``, ``pip``, or ``none`` for a cache hit), ``DKIST_ENV_SETUP_CACHE`` (``off``, ``uncacheable``,
``hit``, ``built``, ``rebuilt``, ``error``) and the real start and end of the setup,
``DKIST_ENV_SETUP_START_NS`` / ``DKIST_ENV_SETUP_END_NS`` (nanoseconds since the epoch).
:meth:`TaskBase.__call__ <dkist_processing_core.task.TaskBase.__call__>` starts the task's root span
at the setup's start and records a child span ``Environment Setup`` with those times, and the
histogram ``dkist.processing.environment.setup.duration`` (seconds, attributes ``installer`` and
``cache``). The variables are taken out of ``os.environ`` when read, so one setup is recorded
once, by the first task of the process, and never again by processes the task starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from collections.abc import MutableMapping

    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Tracer

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "SETUP_DURATION_METRIC",
    "SETUP_SPAN_NAME",
    "EnvironmentSetup",
    "take_environment_setup",
]

SETUP_SPAN_NAME = "Environment Setup"
#: Metric name below the meter's ``<meter>.processing.`` prefix.
SETUP_DURATION_METRIC = "environment.setup.duration"
ENVIRONMENT_VARIABLES = (
    "DKIST_ENV_SETUP_INSTALLER",
    "DKIST_ENV_SETUP_CACHE",
    "DKIST_ENV_SETUP_START_NS",
    "DKIST_ENV_SETUP_END_NS",
)
_WORD = re.compile(r"[a-z_]{1,20}")
# ASCII digits only (str.isdigit() also takes "²", which int() refuses), within OTLP's 64 bits
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class EnvironmentSetup:
    """One setup of a task environment by the worker program."""

    installer: str
    cache: str
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        """How long the setup took."""
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def attributes(self) -> dict[str, str]:
        """The metric's attributes: ``installer`` and ``cache``."""
        return {"installer": self.installer, "cache": self.cache}

    def record(
        self,
        tracer: Tracer,
        meter: Meter,
        metric_name: str,
        base_attributes: Mapping[str, str | int],
    ) -> None:
        """The span ``Environment Setup`` (child of the current span) and the duration histogram.

        ``metric_name`` is the task's name for :data:`SETUP_DURATION_METRIC`
        (``TaskBase.format_metric_name``); ``base_attributes`` are the task's.
        """
        attributes = {**base_attributes, **self.attributes}
        span = tracer.start_span(SETUP_SPAN_NAME, attributes=attributes, start_time=self.start_ns)
        span.end(end_time=self.end_ns)
        histogram = meter.create_histogram(
            name=metric_name,
            unit="s",
            description="Time the worker took to make the task's environment (venv and install).",
        )
        histogram.record(self.seconds, attributes=self.attributes)


def take_environment_setup(
    environ: MutableMapping[str, str] | None = None,
) -> EnvironmentSetup | None:
    """The setup the worker program reported (removing its variables), or None if none or malformed."""
    environ = os.environ if environ is None else environ
    values = [environ.pop(name, "") for name in ENVIRONMENT_VARIABLES]
    installer, cache, start, end = (value.strip() for value in values)
    if not (
        _WORD.fullmatch(installer)
        and _WORD.fullmatch(cache)
        and _DIGITS.fullmatch(start)
        and _DIGITS.fullmatch(end)
    ):
        return None
    if int(end) < int(start):
        return None
    return EnvironmentSetup(installer=installer, cache=cache, start_ns=int(start), end_ns=int(end))
