"""Producer of the interservice bus (ISB, RabbitMQ): bounded in time, never loses a message.

How one :func:`publish` goes:

1. The message is written to the durable local outbox first (write-ahead, see
   :mod:`dkist_processing_core.isb_outbox`), so a crash or a kill at any later moment loses
   nothing.
2. A worker thread connects (``pika.BlockingConnection``; connect and handshake bounded by the
   time left, at most 10 s per attempt; blocked-connection timeout = the time left),
   declares the exchange (direct, durable), the queue (durable, ``x-queue-type``) and the binding,
   switches on publisher confirms, and drains the outbox oldest first (the new message is the
   newest file), publishing each persistent with ``mandatory=True`` and deleting its file only
   after the broker confirmed it.
3. A refused connection, a stalled or lost connection, a nack or an unroutable return is retried
   with the backoff of ``RETRY_CONFIG`` until ``ISB_PUBLISH_TIMEOUT`` runs out. Refused
   credentials, a refused virtual host and a topology that contradicts the broker's (e.g. a queue
   of another type) are not retried: waiting does not fix them.
4. The caller waits for the worker at most until the time bound, whatever pika is blocked on
   (DNS, a broker that accepts bytes and never answers), then returns. A message that was not
   confirmed stays in the outbox, a warning names its file, and the next successful publish or
   :func:`flush_outbox` (CLI ``dkist-processing-core isb flush``) sends it.

An outbox folder belongs to one destination: draining publishes its files to the exchange and
routing key of the target that drains (the files record where they were meant to go, for
inspection).

The broker may receive a message twice (a confirm lost with the connection, an abandoned worker
that finishes late); consumers deduplicate by ``conversationId`` / ``message_id``.

pika and the configuration are imported only when a message is published, so importing this
module costs nothing in the Airflow scheduler.

This module is the public API; the parts live beside it: ``_isb_target`` (where to publish and
the limits), ``_isb_delivery`` (the bounded, retrying job over one confirming pika channel) and
``isb_outbox`` (the durable outbox and the checks of its entries).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dkist_processing_core._isb_delivery import Delivery
from dkist_processing_core._isb_target import FAILURE_QUEUE
from dkist_processing_core._isb_target import FAILURE_ROUTING_KEY
from dkist_processing_core._isb_target import MAX_SECONDS
from dkist_processing_core._isb_target import IsbTarget
from dkist_processing_core._isb_target import check_seconds
from dkist_processing_core.isb_outbox import ENVELOPE_FORMAT
from dkist_processing_core.isb_outbox import InvalidMessageError
from dkist_processing_core.isb_outbox import Outbox
from dkist_processing_core.isb_outbox import OutboxError
from dkist_processing_core.isb_outbox import check_envelope

__all__ = [
    "FAILURE_QUEUE",
    "FAILURE_ROUTING_KEY",
    "MAX_SECONDS",
    "FlushResult",
    "InvalidMessageError",
    "IsbTarget",
    "PublishResult",
    "flush_outbox",
    "keep",
    "publish",
]

logger = logging.getLogger("dkist_processing_core.isb")


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :func:`publish`."""

    message_id: str
    delivered: bool
    outbox_path: Path | None  # the message's outbox file while it is still pending
    attempts: int
    drained: int  # older outbox messages delivered on the way
    duration: float
    error: str | None = None


@dataclass(frozen=True)
class FlushResult:
    """Outcome of :func:`flush_outbox`."""

    delivered: int
    remaining: int
    attempts: int
    duration: float
    error: str | None = None

    def __int__(self) -> int:
        return self.delivered


def publish(
    body: Mapping[str, Any], target: IsbTarget | None = None, *, message_id: str | None = None
) -> PublishResult:
    """Publish ``body`` as one persistent JSON message; never raises for broker problems.

    Returns within ``target.publish_timeout`` seconds. ``message_id`` defaults to
    ``body["conversationId"]`` or a new uuid. A message that no broker can ever accept (a message
    id over 255 bytes of UTF-8, a body that is not strict JSON or is over 1 MiB) raises
    :class:`InvalidMessageError` before any work, as does a body that is not JSON-serialisable
    (``TypeError``): both are programming errors, and keeping such a message would block nothing
    but never deliver it either.
    """
    started = time.monotonic()
    target = target or IsbTarget.from_configuration()
    message_id, envelope = _envelope(body, message_id, target.exchange, target.routing_key)
    outbox = target.outbox
    own: Path | None = None
    try:
        own = outbox.put(envelope)
    except OutboxError as problem:
        logger.error("%s; publishing message %s without a safety copy", problem, message_id)
    job = Delivery(
        target,
        outbox,
        started=started,
        bound=target.publish_timeout,
        own=own,
        extra=None if own else envelope,
    )
    job.run()
    delivered = job.own_delivered or (own is not None and not own.exists())
    drained = job.delivered - (1 if job.own_delivered else 0)
    duration = time.monotonic() - started
    error = job.error or "time bound reached"
    if delivered:
        logger.info(
            "ISB message %s confirmed by %s (exchange %r, routing key %r) after %d attempt(s) "
            "in %.2f s%s",
            message_id,
            target.broker,
            target.exchange,
            target.routing_key,
            job.attempts,
            duration,
            f"; {drained} older outbox message(s) delivered first" if drained else "",
        )
    elif own is not None:
        logger.warning(
            "ISB message %s not confirmed by %s within %.1f s (%s); kept in the outbox at %s. "
            "It is sent by the next successful publish or by `dkist-processing-core isb flush`.",
            message_id,
            target.broker,
            target.publish_timeout,
            error,
            own,
        )
    else:  # Last resort: both the broker and the outbox failed. The log line carries the message.
        logger.critical(
            "ISB message %s LOST unless recovered from this line: not confirmed by %s (%s) and "
            "the outbox %s is not writable; body: %s",
            message_id,
            target.broker,
            error,
            target.outbox_dir,
            json.dumps(envelope["body"]),
        )
    return PublishResult(
        message_id=message_id,
        delivered=delivered,
        outbox_path=None if delivered else own,
        attempts=job.attempts,
        drained=drained,
        duration=duration,
        error=None if delivered else error,
    )


def keep(
    body: Mapping[str, Any], outbox_dir: Path, *, message_id: str | None = None
) -> PublishResult:
    """Store ``body`` in the outbox at ``outbox_dir`` without publishing it.

    For a report made while the configuration cannot be read (no broker, exchange or credentials
    to trust): ``flush_outbox`` sends it once the configuration works. Raises
    :class:`OutboxError` if the folder cannot be written, :class:`InvalidMessageError` for a
    message no broker accepts.
    """
    started = time.monotonic()
    message_id, envelope = _envelope(body, message_id, None, None)
    path = Outbox(outbox_dir).put(envelope)
    return PublishResult(
        message_id=message_id,
        delivered=False,
        outbox_path=path,
        attempts=0,
        drained=0,
        duration=time.monotonic() - started,
        error="kept in the outbox without publishing: the configuration cannot be used",
    )


def _envelope(
    body: Mapping[str, Any], message_id: str | None, exchange: str | None, routing_key: str | None
) -> tuple[str, dict[str, Any]]:
    """``(message_id, envelope)`` of a message, checked; raises before any work if it is bad."""
    body = dict(body)
    json.dumps(body)  # not JSON-serialisable: a programming error, raised before any work
    source = "message_id" if message_id else "message_id (from conversationId)"
    message_id = message_id or str(body.get("conversationId") or uuid.uuid4().hex)
    envelope = {
        "format": ENVELOPE_FORMAT,
        "message_id": message_id,
        "created_ns": time.time_ns(),
        "exchange": exchange,
        "routing_key": routing_key,
        "body": body,
    }
    try:
        check_envelope(envelope)
    except InvalidMessageError as error:
        text = str(error).replace("field 'message_id'", source)
        raise InvalidMessageError(f"ISB message not published: {text}") from None
    return message_id, envelope


def flush_outbox(target: IsbTarget | None = None, *, timeout: float | None = None) -> FlushResult:
    """Send every message of the outbox, oldest first; returns within ``timeout`` seconds.

    ``timeout`` defaults to the target's ``publish_timeout``; like it, seconds > 0 and <=
    ``MAX_SECONDS`` (else ValueError). Messages another drainer holds are waited for (until
    ``timeout``), since a drainer that fails releases them undelivered. Never raises for broker
    problems.
    """
    started = time.monotonic()
    if timeout is not None:
        timeout = check_seconds(
            timeout, "flush_outbox timeout (isb flush --timeout)", positive=True
        )
    target = target or IsbTarget.from_configuration()
    outbox = target.outbox
    outbox.recover_stale_temporaries()
    if not outbox.pending():
        logger.info("ISB outbox %s is empty; nothing to flush", outbox.directory)
        return FlushResult(
            delivered=0, remaining=0, attempts=0, duration=time.monotonic() - started
        )
    bound = target.publish_timeout if timeout is None else timeout
    job = Delivery(target, outbox, started=started, bound=bound, flush=True)
    job.run()
    remaining = len(outbox.pending())
    duration = time.monotonic() - started
    error = job.error
    skipped = sum(1 for path in outbox.skipped if os.path.lexists(path))
    if remaining and skipped and not error:
        error = f"{skipped} entry(ies) this user never sends, named in the ERROR lines above"
    log = logger.info if remaining == 0 else logger.warning
    log(
        "ISB outbox %s: %d message(s) delivered to %s in %.2f s, %d remaining%s",
        outbox.directory,
        job.delivered,
        target.broker,
        duration,
        remaining,
        f" ({error})" if error and remaining else "",
    )
    return FlushResult(
        delivered=job.delivered,
        remaining=remaining,
        attempts=job.attempts,
        duration=duration,
        error=error if remaining else None,
    )
