"""TaskBase: the interface between processing code and the place it runs.

A pipeline subclasses :class:`TaskBase` and implements :meth:`TaskBase.run`. Workers, the local
runner and notebooks all run a task the same way (see ``dkist_processing_core.run_task``)::

    with MyTask(recipe_run_id=1, workflow_name="My_Workflow", workflow_version="1.0.0") as task:
        task()

Importing this module is cheap: the configuration (pydantic), loguru and OpenTelemetry are loaded
when the first task is constructed, not at import.
"""

from __future__ import annotations

import threading
from abc import ABC
from abc import abstractmethod
from contextlib import contextmanager
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from dkist_processing_core.recipe_run_id import parse_recipe_run_id

if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Sequence
    from types import TracebackType

    from opentelemetry.context import Context
    from opentelemetry.metrics import Counter
    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Link
    from opentelemetry.trace import Span
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace import Tracer
    from opentelemetry.util.types import Attributes

    from dkist_processing_core.config import DKISTProcessingCoreConfiguration

__all__ = [
    "METER_NAME",
    "TASK_EXECUTION_COUNTER",
    "TRACER_NAME",
    "TaskBase",
    "apply_file_descriptor_limit",
]

TRACER_NAME = "dkist_processing_core"
"""Instrumentation scope of the spans of every task."""
TASK_EXECUTION_COUNTER = "tasks.executed"
"""Counter incremented once per task run, exported as ``dkist.processing.tasks.executed``."""

_fd_limit_lock = threading.Lock()
_fd_limit_applied = False
_configuration_log_lock = threading.Lock()
_logged_configuration: DKISTProcessingCoreConfiguration | None = None


METER_NAME = "dkist"
"""Name of the meter of every task, as in the previous product: metric names built with
:meth:`TaskBase.format_metric_name` are ``dkist.processing.<name>``, what dashboards query."""


def apply_file_descriptor_limit(wanted: int) -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` of this process to ``wanted`` if it is lower.

    Never above the hard limit and never lowered: instrument tasks open many files, and a worker
    may already grant more than ``MAX_FILE_DESCRIPTORS``. Returns the soft limit now in force (None
    where the platform has no such limit). The outcome is logged once per process.
    """
    global _fd_limit_applied
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    unlimited = soft == resource.RLIM_INFINITY
    target = soft if unlimited or soft >= ceiling else ceiling
    with _fd_limit_lock:
        if target != soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError) as error:
                raise OSError(
                    f"cannot raise the soft limit of open files to MAX_FILE_DESCRIPTORS={wanted}: {error}"
                ) from None
        if not _fd_limit_applied:
            _fd_limit_applied = True
            from loguru import logger

            hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
            soft_text = "unlimited" if unlimited else str(soft)
            if target == soft:
                logger.info(
                    "soft limit of open files kept at {} (MAX_FILE_DESCRIPTORS={}, hard limit {})",
                    soft_text,
                    wanted,
                    hard_text,
                )
            elif target < wanted:
                logger.warning(
                    "MAX_FILE_DESCRIPTORS={} is above the hard limit {}; soft limit of open files raised from {} to {}",
                    wanted,
                    hard_text,
                    soft_text,
                    target,
                )
            else:
                logger.info(
                    "soft limit of open files raised to {} (was {}, hard limit {})",
                    target,
                    soft_text,
                    hard_text,
                )
    return target


def _log_configuration_once(configuration: DKISTProcessingCoreConfiguration) -> None:
    """Log the core's effective settings (secrets masked) the first time a task sees them.

    The previous product logged them when its configuration module was imported; here importing
    stays free of side effects and the task log still starts with the settings it ran with.
    """
    global _logged_configuration
    with _configuration_log_lock:
        if configuration is _logged_configuration:
            return
        _logged_configuration = configuration
    configuration.log_configurations(log_parent_configurations=True)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__} {value!r}")
    return value


class TaskBase(ABC):
    """One step of a workflow. Subclass it and implement :meth:`run`.

    ``__call__`` runs :meth:`pre_run`, :meth:`run` and :meth:`post_run` inside a root span
    ``"{workflow_name}.{task_name}"`` with child spans ``Pre Run``, ``Run`` and ``Post Run``. An
    exception is recorded on the spans (status ERROR) and re-raised unchanged. :meth:`rollback` is
    never called for you: it is a manual step (the notebook cell has a commented ``t.rollback()``).
    Use the task as a context manager: leaving it flushes telemetry.

    Parameters
    ----------
    recipe_run_id
        Id of the recipe run this task is part of: an int, a whole-number float or a string of
        ASCII digits, from 0 to 2**63 - 1 (:mod:`dkist_processing_core.recipe_run_id`).
    workflow_name
        Name of the workflow this task belongs to.
    workflow_version
        Version of that workflow.

    The constructor takes no other arguments: nodes, workers and notebooks construct every task
    with exactly these three.
    """

    retries: ClassVar[int] = 0
    """How often Airflow retries the task after a failure."""
    retry_delay_seconds: ClassVar[int] = 60
    """Seconds Airflow waits before a retry."""

    def __init__(self, recipe_run_id: int, workflow_name: str, workflow_version: str) -> None:
        self.recipe_run_id: int = parse_recipe_run_id(recipe_run_id)
        self.workflow_name: str = _text(workflow_name, "workflow_name")
        self.workflow_version: str = _text(workflow_version, "workflow_version")
        self.task_name: str = type(self).__name__

        from dkist_processing_core.config import core_configuration
        from dkist_processing_core.logging import configure_logging

        configure_logging()
        configuration = core_configuration()
        _log_configuration_once(configuration)
        apply_file_descriptor_limit(configuration.max_file_descriptors)
        self._tracer: Tracer | None = None
        self._meter: Meter | None = None

        self.base_telemetry_attributes: dict[str, str | int] = {
            "recipe.run.id": self.recipe_run_id,
            "workflow.name": self.workflow_name,
            "workflow.version": self.workflow_version,
            "task.name": self.task_name,
            "nomad.allocation.id": configuration.nomad_alloc_id,
            "nomad.allocation.name": configuration.nomad_alloc_name,
            "nomad.allocation.group": configuration.nomad_group_name,
        }
        self.task_execution_counter: Counter = self.meter.create_counter(
            name=self.format_metric_name(TASK_EXECUTION_COUNTER),
            unit="1",
            description="The number of tasks executed in the processing stack.",
        )

        from loguru import logger

        logger.info("Task {} initialized", self.task_name)

    # -- telemetry -------------------------------------------------------------------------------

    @property
    def tracer(self) -> Tracer:
        """Tracer of this process's tracer provider (a no-op tracer when no endpoint is configured)."""
        if self._tracer is None:
            from dkist_processing_core._version_task import __version__
            from dkist_processing_core.telemetry import get_tracer

            self._tracer = get_tracer(TRACER_NAME, __version__)
        return self._tracer

    @property
    def meter(self) -> Meter:
        """Meter ``"dkist"`` of this process's meter provider."""
        if self._meter is None:
            from dkist_processing_core.telemetry import get_meter

            self._meter = get_meter(METER_NAME)
        return self._meter

    def format_metric_name(self, name: str) -> str:
        """``"{meter name}.processing.{name}"``, e.g. ``dkist.processing.tasks.executed``."""
        return f"{self.meter.name}.processing.{name}"

    @contextmanager
    def telemetry_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        """Open a span ``name`` as the current span, with :attr:`base_telemetry_attributes`.

        An exception leaving the block is recorded on the span, sets its status to ERROR and
        propagates unchanged; otherwise the status is OK.
        """
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace import StatusCode

        span_attributes: dict[str, Any] = dict(attributes or {})
        span_attributes.update(self.base_telemetry_attributes)
        with self.tracer.start_as_current_span(
            name=name,
            context=context,
            kind=SpanKind.INTERNAL if kind is None else kind,
            attributes=span_attributes,
            links=links,
            start_time=start_time,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
            end_on_exit=end_on_exit,
        ) as span:
            from loguru import logger

            # The previous product's progress lines in the task log; operators read them.
            logger.info("Span started: {}", name)
            yield span
            logger.info("Span ended: {}", name)
            span.set_status(StatusCode.OK)

    # -- hooks -----------------------------------------------------------------------------------

    def pre_run(self) -> None:  # noqa: B027 - an optional hook
        """Runs before :meth:`run`, in the span ``Pre Run``. Does nothing unless overridden."""

    @abstractmethod
    def run(self) -> None:
        """The work of the task, in the span ``Run``. Every subclass implements it."""

    def post_run(self) -> None:  # noqa: B027 - an optional hook
        """Runs after :meth:`run`, in the span ``Post Run``. Does nothing unless overridden."""

    def rollback(self) -> None:  # noqa: B027 - an optional hook
        """Undo what a run left in persistent stores. Does nothing unless overridden.

        A manual operation, as in the previous product: workers, the local runner and notebooks never
        call it on their own (for ``dkist-processing-common`` tasks it deletes scratch files and
        resets the recipe run, which would hide the failure from operators).
        """

    # -- running ---------------------------------------------------------------------------------

    def __call__(self) -> None:
        """Run pre_run, run and post_run inside the task's spans; count the run.

        When the worker program reports how it made the task's environment (see
        :mod:`dkist_processing_core.environment_setup`), the root span starts at that setup's start
        and has a first child span ``Environment Setup``.
        """
        from loguru import logger

        from dkist_processing_core.environment_setup import SETUP_DURATION_METRIC
        from dkist_processing_core.environment_setup import take_environment_setup

        verbose_task_name = f"{self.workflow_name}.{self.task_name}"
        logger.info("{} started (recipe run {})", verbose_task_name, self.recipe_run_id)
        self.task_execution_counter.add(1, attributes=self.base_telemetry_attributes)
        # The worker program made this task's environment: the root span starts where that began.
        setup = take_environment_setup()
        try:
            with self.telemetry_span(
                verbose_task_name, start_time=setup.start_ns if setup else None
            ) as span:  # root span
                span.set_attribute("dkist.root", "True")
                if setup is not None:
                    setup.record(
                        self.tracer,
                        self.meter,
                        self.format_metric_name(SETUP_DURATION_METRIC),
                        self.base_telemetry_attributes,
                    )
                with self.telemetry_span("Pre Run"):
                    self.pre_run()
                with self.telemetry_span("Run"):
                    self.run()
                with self.telemetry_span("Post Run"):
                    self.post_run()
        except BaseException as error:
            logger.error("{} failed: {}: {}", verbose_task_name, type(error).__name__, error)
            raise
        logger.info("{} complete", verbose_task_name)

    def __enter__(self) -> TaskBase:
        """Return the task. Subclasses that override it call ``super().__enter__()``."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Flush telemetry. Never swallows the exception; subclasses call ``super().__exit__(...)``."""
        from dkist_processing_core.telemetry import flush_telemetry

        flush_telemetry()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(recipe_run_id={self.recipe_run_id!r}, "
            f"workflow_name={self.workflow_name!r}, workflow_version={self.workflow_version!r})"
        )
