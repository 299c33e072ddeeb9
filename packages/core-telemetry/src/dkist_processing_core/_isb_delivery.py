"""Bounded delivery: drain the outbox over one confirming pika channel, retrying until the bound.

pika carries the transport (connect/handshake/blocked timeouts, publisher confirms, ``mandatory``
publishes raising ``NackError`` / ``UnroutableError``). What it does not do is here, once: a retry
loop over any failed attempt (pika's retries only the connect, with no deadline) with the backoff
of ``RETRY_CONFIG`` capped by the time left; the bound (a daemon thread the caller waits for at
most until the deadline, and :func:`_cut_at`); and :class:`FatalBrokerError` for the refusals
waiting will not fix (docs/decisions.md, "Interservice bus").
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import KW_ONLY
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._text_rules import host_for_connecting
from dkist_processing_core.errors import DKISTProcessingCoreError

if TYPE_CHECKING:
    from dkist_processing_core._isb_target import IsbTarget
    from dkist_processing_core._settings_models import RetryConfig
    from dkist_processing_core.isb_outbox import Outbox

__all__ = ["Delivery", "FatalBrokerError", "retry_delay"]

logger = logging.getLogger("dkist_processing_core.isb")

# Part of the bound kept back from the network so the caller returns before the bound.
_RESERVE_FRACTION = 0.05
_RESERVE_MAX = 0.5
# Shortest time worth starting another connection attempt with.
_MIN_ATTEMPT_SECONDS = 0.2
# Longest wait for one connection (TCP connect + AMQP handshake) before the next attempt.
_CONNECT_TIMEOUT_MAX = 10.0
# How often a drainer looks again at messages other drainers hold.
_CLAIM_POLL_SECONDS = 0.1


class FatalBrokerError(DKISTProcessingCoreError):
    """An error that waiting will not fix (credentials, permissions, contradicting topology)."""


def retry_delay(retry: RetryConfig, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    try:
        growth = float(retry.retry_backoff) ** (attempt - 1)
    except OverflowError:  # a long series of fast failures; retry_max_delay caps it anyway
        growth = math.inf
    base = retry.retry_delay * growth if retry.retry_delay else 0.0
    low, high = retry.retry_jitter
    return max(0.0, min(base + random.uniform(low, high), retry.retry_max_delay))


@dataclass
class Delivery:
    """One bounded job: send the caller's message (``own``, or ``extra`` if the outbox could not
    keep it) or, with ``flush``, everything this run may send; the outbox oldest first."""

    target: IsbTarget
    outbox: Outbox
    _: KW_ONLY
    started: float
    bound: float
    own: Path | None = None
    extra: dict[str, Any] | None = None
    flush: bool = False
    # What the job did, read by the caller even after it gave up waiting for the thread.
    attempts: int = field(default=0, init=False)
    delivered: int = field(default=0, init=False)
    own_delivered: bool = field(default=False, init=False)
    error: str | None = field(default=None, init=False)
    stop: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self.deadline = self.started + self.bound
        self.network_deadline = self.deadline - min(_RESERVE_MAX, self.bound * _RESERVE_FRACTION)

    def run(self) -> None:
        """Run the job in a worker thread; return by the deadline whatever it is blocked on."""
        worker = threading.Thread(target=self._retrying, name="dkist-isb-publish", daemon=True)
        worker.start()
        worker.join(max(0.0, self.deadline - time.monotonic()))
        if worker.is_alive():  # what it holds stays in the outbox (its claims vanish with it)
            self.stop.set()
            self.error = self.error or "time bound reached while the broker was not answering"

    def _retrying(self) -> None:
        retry, broker = self.target.retry, self.target.broker
        while not self.stop.is_set():
            left = self.network_deadline - time.monotonic()
            if left <= 0:
                return
            self.attempts += 1
            try:
                with _confirming_channel(self.target, left) as channel:
                    self._drain(channel)
                self.error = None
                return
            except FatalBrokerError as error:
                self.error = str(error)
                logger.error("%s", error)
                return
            except Exception as error:  # every other failure is worth a retry
                self.error = _describe(error)
            failed = f"ISB attempt {self.attempts} to {broker} failed ({self.error})"
            if 0 < retry.retry_tries <= self.attempts:
                logger.warning(
                    "%s; no retries left (RETRY_CONFIG retry_tries=%d)", failed, retry.retry_tries
                )
                return
            room = self.network_deadline - time.monotonic() - _MIN_ATTEMPT_SECONDS
            if room <= 0:
                logger.warning("%s; no time left for another attempt", failed)
                return
            delay = min(retry_delay(retry, self.attempts), room)
            logger.warning("%s; retrying in %.2f s", failed, delay)
            if self.stop.wait(delay):
                return

    def _in_time(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.network_deadline

    def _done(self) -> bool:
        if self.flush:  # nothing left that this run may send
            return all(path in self.outbox.skipped for path in self.outbox.pending())
        return self.own is None or not self.own.exists()

    def _drain(self, channel: Any) -> None:
        """Passes over the outbox until the job is done. Messages another drainer holds are
        waited for: a drainer that fails releases its claims undelivered."""
        while self._in_time():
            sent = self._drain_once(channel)
            if self._done():
                break
            if not sent:
                if self.stop.wait(_CLAIM_POLL_SECONDS):
                    return
                channel.connection.process_data_events(time_limit=0)  # heartbeats meanwhile
        if self.extra is not None and self._in_time():
            _publish(channel, self.target, self.extra)
            self.own_delivered = True
            self.delivered += 1

    def _drain_once(self, channel: Any) -> int:
        """One pass over the outbox, oldest first; returns the messages it delivered."""
        try:
            pending = self.outbox.pending()
        except OSError as error:
            logger.error("cannot read the ISB outbox %s: %s", self.outbox.directory, error)
            return 0
        sent = 0
        try:
            for path in pending:
                if not self._in_time():
                    break
                if path in self.outbox.skipped:
                    continue
                with self.outbox.claim(path) as claimed:
                    if claimed is None:
                        continue
                    _publish(channel, self.target, claimed.envelope)
                    claimed.done()
                sent += 1
                self.delivered += 1
                self.own_delivered = self.own_delivered or path == self.own
        finally:
            self.outbox.sync()
        return sent


# ------------------------------------------------------------------------------- pika
@contextlib.contextmanager
def _confirming_channel(target: IsbTarget, seconds_left: float) -> Iterator[Any]:
    """A channel with publisher confirms on a fresh connection, the topology declared."""
    import pika
    from pika import exceptions as errors

    deadline = time.monotonic() + seconds_left
    # A broker that accepts and never answers gets a second chance within a long bound.
    step = max(0.05, min(seconds_left, _CONNECT_TIMEOUT_MAX))
    parameters = pika.ConnectionParameters(
        host=host_for_connecting(target.host),
        port=target.port,
        virtual_host=target.virtual_host,
        credentials=pika.PlainCredentials(target.username, target.password),
        connection_attempts=1,  # the loop of Delivery retries, with backoff and a deadline
        retry_delay=0,
        socket_timeout=step,
        stack_timeout=step,
        blocked_connection_timeout=max(0.05, seconds_left),
        heartbeat=max(1, min(60, math.ceil(target.publish_timeout))),
        client_properties={"connection_name": "dkist-processing-core isb producer"},
    )
    try:
        connection = pika.BlockingConnection(parameters)
    except (errors.ProbableAuthenticationError, errors.ProbableAccessDeniedError) as error:
        # pika also says "probable authentication error" for any connection lost during the
        # login stage (a restarting broker); only the broker's explicit refusal is final.
        if "ACCESS_REFUSED" not in str(error) and "NOT_ALLOWED" not in str(error):
            raise
        if isinstance(error, errors.ProbableAuthenticationError):
            what = f"the credentials of user {target.username!r}"
            fix = "check ISB_USERNAME and ISB_PASSWORD"
        else:
            what = f"user {target.username!r} access to virtual host {target.virtual_host!r}"
            fix = "check the user's permissions"
        raise FatalBrokerError(
            f"ISB broker {target.broker} refused {what} ({error}); {fix}"
        ) from None
    try:
        _cut_at(connection, deadline)
        channel = connection.channel()
        try:
            if target.exchange:
                channel.exchange_declare(target.exchange, exchange_type="direct", durable=True)
            if target.declare_queue:
                arguments = {"x-queue-type": target.queue_type}
                channel.queue_declare(target.queue, durable=True, arguments=arguments)
                channel.queue_bind(target.queue, target.exchange, routing_key=target.routing_key)
            channel.confirm_delivery()
        except errors.ChannelClosedByBroker as error:
            if error.reply_code not in (403, 406, 530):
                raise
            raise FatalBrokerError(
                f"ISB broker {target.broker} rejected the topology for user {target.username!r} "
                f"(exchange {target.exchange!r}, queue {target.queue!r}, x-queue-type "
                f"{target.queue_type!r}): ({error.reply_code}) {error.reply_text}; check "
                "ISB_EXCHANGE, ISB_QUEUE_TYPE and the user's permissions"
            ) from None
        yield channel
    finally:
        if connection.is_open:
            with contextlib.suppress(Exception):  # closing a broken connection may fail
                connection.close()


def _cut_at(connection: Any, deadline: float) -> None:
    """End the connection at ``deadline``, whatever pika is waiting for.

    A broker that goes silent after the handshake (mid-declare, mid-publish) would hold the
    thread until heartbeats notice (the bound plus 5 s and more). pika's public ``call_later``
    and ``add_callback_threadsafe`` run their callbacks only inside ``process_data_events``, never
    while ``basic_publish`` waits for its confirm, so the timer goes on the I/O loop underneath,
    the hook pika's own heartbeat checker uses to end a dead connection. Without that hook
    (another pika), the heartbeats still end it, later.
    """
    impl = getattr(connection, "_impl", None)
    call_later = getattr(impl, "_adapter_call_later", None)
    terminate = getattr(impl, "_terminate_stream", None)
    if impl is None or call_later is None or terminate is None:  # pragma: no cover
        return
    from pika.exceptions import StreamLostError

    def cut() -> None:
        if not impl.is_closed:
            with contextlib.suppress(Exception):  # a connection already going down
                terminate(StreamLostError("ISB time bound reached"))

    call_later(max(0.0, deadline - time.monotonic()), cut)


def _publish(channel: Any, target: IsbTarget, envelope: dict[str, Any]) -> None:
    """Publish one envelope's body and wait for the confirm; raises on nack, return or loss."""
    import pika

    created_ns = envelope.get("created_ns")  # optional, and may be null in an entry
    channel.basic_publish(
        exchange=target.exchange,
        routing_key=target.routing_key,
        body=json.dumps(envelope["body"]).encode("utf-8"),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=envelope.get("message_id") or uuid.uuid4().hex,
            timestamp=(time.time_ns() if created_ns is None else created_ns) // 1_000_000_000,
            app_id="dkist-processing-core",
        ),
        mandatory=True,
    )


def _describe(error: BaseException) -> str:
    from pika import exceptions as errors

    if isinstance(error, errors.UnroutableError):
        return (
            "message returned as unroutable: no queue is bound to the exchange with this routing "
            "key"
        )
    if isinstance(error, errors.NackError):
        return "message nacked by the broker"
    text = str(error) or repr(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"
