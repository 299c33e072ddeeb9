"""Airflow ``on_failure_callback`` that reports a failed task on the interservice bus.

Every exported DAG file imports this module in the Airflow scheduler, so it imports only the
standard library; the configuration, the ISB producer and pika load when a task actually fails.

A report is never lost because of the configuration: when it cannot be read (any bad variable),
the report is kept in the outbox (``ISB_OUTBOX_DIR`` if that variable alone is usable, else the
default folder) with one ERROR line naming the problem and the folder, and ``isb flush`` sends it
once the configuration is fixed.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from dkist_processing_core.isb import IsbTarget
    from dkist_processing_core.isb import PublishResult

__all__ = ["chat_ops_notification", "failure_report_body"]

logger = logging.getLogger("dkist_processing_core.isb")


def chat_ops_notification(
    context: Mapping[str, Any] | None,
    workflow_name: str,
    workflow_version: str,
    task_name: str,
    *,
    target: IsbTarget | None = None,
) -> PublishResult | None:
    """Publish a failure report for chat operations; never raises.

    Used as ``functools.partial(chat_ops_notification, workflow_name=..., workflow_version=...,
    task_name=...)``. Returns within ``ISB_PUBLISH_TIMEOUT`` seconds; a report the broker did
    not confirm by then waits in the outbox (see :mod:`dkist_processing_core.isb`). ``target``
    overrides the configured broker, exchange, queue and outbox.
    """
    body: dict[str, Any] | None = None
    try:
        body = failure_report_body(context, workflow_name, workflow_version, task_name)
        logger.warning(
            "task %s of workflow %s %s failed (dag run %s); reporting it on the interservice bus "
            "as conversation %s",
            task_name,
            workflow_name,
            workflow_version,
            body["dagRunId"],
            body["conversationId"],
        )
        from dkist_processing_core.isb import IsbTarget
        from dkist_processing_core.isb import publish

        if target is None:
            try:
                target = IsbTarget.from_configuration()
            except Exception as error:  # ConfigurationError, or a value IsbTarget refuses
                return _keep_without_configuration(body, error)
        return publish(body, target)
    except Exception:  # an exception here would only hide the task's own failure
        logger.exception(
            "failure report of task %s of workflow %s %s could not be published "
            "(the report is lost unless recovered from this line): %s",
            task_name,
            workflow_name,
            workflow_version,
            _as_json(body),
        )
        return None


def _keep_without_configuration(body: dict[str, Any], problem: Exception) -> PublishResult:
    from dkist_processing_core.config import isb_outbox_dir_from_environment
    from dkist_processing_core.isb import keep

    folder = isb_outbox_dir_from_environment()
    result = keep(body, folder)
    logger.error(
        "the configuration cannot be used (%s); failure report %s of task %s is kept in the ISB "
        "outbox %s and is sent by `dkist-processing-core isb flush` (with ISB_OUTBOX_DIR=%s) "
        "once the configuration is fixed",
        problem,
        result.message_id,
        body["taskName"],
        folder,
        folder,
    )
    return result


def _as_json(body: dict[str, Any] | None) -> str:
    try:
        return json.dumps(body)
    except Exception:
        return repr(body)


def failure_report_body(
    context: Mapping[str, Any] | None, workflow_name: str, workflow_version: str, task_name: str
) -> dict[str, Any]:
    """The JSON body of a failure report; unknown context values become ``None``."""
    context = context if isinstance(context, Mapping) else {}
    ti = _first(lambda: context.get("task_instance"), lambda: context.get("ti"))
    run_id = _first(
        lambda: context.get("run_id"),
        lambda: getattr(context.get("dag_run"), "run_id", None),
        lambda: ti.run_id,
    )
    # Airflow 3: both the scheduler's TaskInstance and the task SDK's RuntimeTaskInstance have a
    # ``log_url`` property built from [api] base_url; it can fail if the configuration is broken.
    log_url = _first(lambda: ti.log_url)
    return {
        "conversationId": uuid.uuid4().hex,
        "workflowName": workflow_name,
        "workflowVersion": workflow_version,
        "taskName": task_name,
        "dagRunId": None if run_id is None else str(run_id),
        "logUrl": None if log_url is None else str(log_url),
    }


def _first(*reads: Callable[[], Any]) -> Any:
    """The first value of ``reads`` that is not ``None`` and does not raise, else ``None``."""
    for read in reads:
        try:
            value = read()
        except AttributeError:  # no such attribute, or no such object (None)
            continue
        except Exception:  # lazy context values and properties may need a database or settings
            logger.debug("a context value is not available", exc_info=True)
            continue
        if value is not None:
            return value
    return None
