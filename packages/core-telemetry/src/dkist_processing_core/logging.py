"""Logging of dkist-processing-core: loguru at ``LOGURU_LEVEL``, with stdlib logging routed into it.

Nothing happens at import. :func:`configure_logging` is called by ``TaskBase`` when a task is
constructed (and may be called by any entry point); calling it again is cheap and adds no second
sink. Records of stdlib loggers (pika, grpc, opentelemetry, client libraries) reach loguru through
:class:`InterceptHandler`, so one level and one format govern everything a task writes.

Client pipelines also import ``dkist_service_configuration.logging`` (the previous product's
logging), which at import replaces every loguru sink with its own stderr sink (at the same
``LOGURU_LEVEL``) and routes stdlib logging into loguru with a handler of its own. Where that module
is loaded, this one adds neither a sink nor a handler, so every line is written once whichever of
the two is set up first.
"""

from __future__ import annotations

import contextlib
import logging as _stdlib_logging
import sys
import threading
from types import FrameType

__all__ = ["InterceptHandler", "configure_logging", "reset_logging"]

#: The previous product's logging set-up, which client pipelines import (see the module docstring).
FOREIGN_LOGGING_MODULE = "dkist_service_configuration.logging"

_lock = threading.Lock()
_sink_id: int | None = None
_sink_level: str | None = None
_removed_default_sink = False
# loguru's own stderr sink; reset_logging() puts it back under a new id.
_default_sink_id = 0
_root_level_before: int | None = None


class InterceptHandler(_stdlib_logging.Handler):
    """A stdlib logging handler that hands every record to loguru, keeping level and caller."""

    def emit(self, record: _stdlib_logging.LogRecord) -> None:
        """Hand ``record`` to loguru at its level, as logged by its real caller."""
        from loguru import logger

        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Find the frame that called the stdlib logger, so loguru reports the real caller.
        frame: FrameType | None = _stdlib_logging.currentframe()
        depth = 0
        while frame is not None and (
            depth == 0 or frame.f_code.co_filename == _stdlib_logging.__file__
        ):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str | int | None = None) -> None:
    """Send loguru's output to stderr at ``level`` (default: ``LOGURU_LEVEL``) and route stdlib logging into it.

    Idempotent: a second call with the same level does nothing; a call with another level replaces
    the sink this function added (sinks added by the application are left alone). Loguru's own
    default stderr sink is removed on the first call so that messages are not written twice. Where
    ``dkist_service_configuration.logging`` is loaded, its sink and handler are used instead.
    """
    global _sink_id, _sink_level, _removed_default_sink, _root_level_before
    from loguru import logger

    if level is None:
        from dkist_processing_core.config import core_configuration

        level = core_configuration().loguru_level
    name = str(level).strip().upper()
    try:
        number = int(name) if name.isdigit() else logger.level(name).no
    except ValueError:
        raise ValueError(
            f"unknown log level {name!r}; use TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR, CRITICAL or a number"
        ) from None
    sink_level: str | int = number if name.isdigit() else name
    with _lock:
        root = _stdlib_logging.getLogger()
        if FOREIGN_LOGGING_MODULE in sys.modules:
            # It removed every loguru sink when it was imported, ours included (if any).
            _sink_id = None
            _sink_level = name
            _quiet_pika(number)
            return
        if _sink_id is not None and _sink_level == name:
            return
        if _sink_id is None:
            _root_level_before = root.level
            with contextlib.suppress(ValueError):  # already removed by the application
                logger.remove(_default_sink_id)
                _removed_default_sink = True
        else:
            with contextlib.suppress(ValueError):  # removed by the application
                logger.remove(_sink_id)
        # diagnose=False: tracebacks must not print local variables (they may hold secrets).
        _sink_id = logger.add(sys.stderr, level=sink_level, backtrace=False, diagnose=False)
        _sink_level = name
        # Ours, or the previous product's class of the same name and job.
        if not any(
            isinstance(h, InterceptHandler) or type(h).__name__ == "InterceptHandler"
            for h in root.handlers
        ):
            root.addHandler(InterceptHandler())
        # Records below the level are dropped by the stdlib before they are formatted.
        root.setLevel(number)
        _quiet_pika(number)


def _quiet_pika(level: int) -> None:
    # pika logs every connection step at INFO and each refused attempt as an ERROR with a
    # traceback; dkist_processing_core.isb logs every outcome itself, so pika speaks only when
    # debugging.
    _stdlib_logging.getLogger("pika").setLevel(
        level if level <= _stdlib_logging.DEBUG else _stdlib_logging.CRITICAL
    )


def reset_logging() -> None:
    """Undo :func:`configure_logging`: remove its sink and the stdlib handler, restore the root level.

    Loguru's default stderr sink comes back if :func:`configure_logging` removed it. For tests, and
    for applications that want to set logging up their own way after a task ran.
    """
    global _sink_id, _sink_level, _removed_default_sink, _root_level_before, _default_sink_id
    from loguru import logger

    with _lock:
        if _sink_id is None:
            return
        with contextlib.suppress(ValueError):  # removed by the application already
            logger.remove(_sink_id)
        if _removed_default_sink:
            _default_sink_id = logger.add(sys.stderr)
        root = _stdlib_logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, InterceptHandler)]:
            root.removeHandler(handler)
        if _root_level_before is not None:
            root.setLevel(_root_level_before)
        _sink_id = _sink_level = _root_level_before = None
        _removed_default_sink = False
