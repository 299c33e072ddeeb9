"""The interservice bus on the wire: one confirming pika channel with the topology declared.

Everything that knows pika lives here: connection parameters bounded by the time left, the
declaration of exchange, queue and binding, publisher confirms, mapping the broker's refusals to
:class:`FatalBrokerError` (waiting will not fix them) or to retryable errors, and cutting the
connection at the deadline whatever pika is blocked on. pika is imported inside the methods.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._text_rules import host_for_connecting
from dkist_processing_core.errors import DKISTProcessingCoreError

if TYPE_CHECKING:
    from dkist_processing_core._isb_target import IsbTarget

__all__ = ["APP_ID", "CONTENT_TYPE", "BrokerChannel", "FatalBrokerError", "describe_error"]

logger = logging.getLogger("dkist_processing_core.isb")

CONTENT_TYPE = "application/json"
APP_ID = "dkist-processing-core"
# Longest wait for one connection (TCP connect + AMQP handshake) before the next attempt.
_CONNECT_TIMEOUT_MAX = 10.0


class FatalBrokerError(DKISTProcessingCoreError):
    """An error that waiting will not fix (credentials, permissions, contradicting topology)."""


class BrokerChannel:
    """A confirming channel on a fresh connection, with the topology declared."""

    def __init__(self, target: IsbTarget, remaining: float) -> None:
        self.target = target
        self.remaining = remaining
        self.deadline = time.monotonic() + remaining
        self.connection: Any = None
        self.channel: Any = None

    def __enter__(self) -> BrokerChannel:
        import pika
        import pika.exceptions as errors

        target = self.target
        # A broker that accepts and never answers gets a second chance within a long bound.
        seconds = max(0.05, min(self.remaining, _CONNECT_TIMEOUT_MAX))
        parameters = pika.ConnectionParameters(
            host=host_for_connecting(target.host),
            port=target.port,
            virtual_host=target.virtual_host,
            credentials=pika.PlainCredentials(target.username, target.password),
            connection_attempts=1,
            retry_delay=0,
            socket_timeout=seconds,
            stack_timeout=seconds,
            blocked_connection_timeout=max(0.05, self.remaining),
            heartbeat=max(1, min(60, math.ceil(target.publish_timeout))),
            client_properties={"connection_name": "dkist-processing-core isb producer"},
        )
        try:
            self.connection = pika.BlockingConnection(parameters)
        except errors.ProbableAuthenticationError as error:
            # pika also says "probable authentication error" for any connection lost during the
            # login stage (a restarting broker); only the broker's explicit 403 is final.
            if "ACCESS_REFUSED" not in str(error):
                raise
            raise FatalBrokerError(
                f"ISB broker {target.broker} refused the credentials of user {target.username!r} "
                f"({_reply_text(error)}); check ISB_USERNAME and ISB_PASSWORD"
            ) from None
        except errors.ProbableAccessDeniedError as error:
            if "NOT_ALLOWED" not in str(error) and "ACCESS_REFUSED" not in str(error):
                raise
            raise FatalBrokerError(
                f"ISB broker {target.broker} refused user {target.username!r} access to virtual "
                f"host {target.virtual_host!r} ({_reply_text(error)})"
            ) from None
        self._abort_at_deadline()
        try:
            channel = self.connection.channel()
            if target.exchange:
                channel.exchange_declare(target.exchange, exchange_type="direct", durable=True)
            if target.declare_queue:
                channel.queue_declare(
                    target.queue, durable=True, arguments={"x-queue-type": target.queue_type}
                )
                channel.queue_bind(target.queue, target.exchange, routing_key=target.routing_key)
            channel.confirm_delivery()
        except errors.ChannelClosedByBroker as error:
            self._close()
            if error.reply_code in (403, 406, 530):
                raise FatalBrokerError(
                    f"ISB broker {target.broker} rejected the topology for user "
                    f"{target.username!r} (exchange {target.exchange!r}, queue {target.queue!r}, "
                    f"x-queue-type {target.queue_type!r}): ({error.reply_code}) "
                    f"{error.reply_text}; check ISB_EXCHANGE, ISB_QUEUE_TYPE and the user's "
                    "permissions"
                ) from None
            raise
        except BaseException:
            self._close()
            raise
        self.channel = channel
        return self

    def _abort_at_deadline(self) -> None:
        """Cut the connection when the time is up, whatever pika is waiting for.

        A broker that goes silent after the handshake (mid-publish, mid-declare) would hold this
        thread until heartbeats notice: the bound plus 5 s and more, up to two minutes. The timer
        runs on pika's I/O loop, the hook pika's own heartbeat checker uses to end a dead
        connection; without that hook (another pika), the heartbeats still end it.
        """
        impl = getattr(self.connection, "_impl", None)
        call_later = getattr(impl, "_adapter_call_later", None)
        terminate = getattr(impl, "_terminate_stream", None)
        if call_later is None or terminate is None:  # pragma: no cover - pika 1.3/1.4 have both
            return
        import pika.exceptions

        def abort() -> None:
            if impl is None or impl.is_closed:
                return
            try:
                terminate(pika.exceptions.StreamLostError("ISB time bound reached"))
            except Exception:  # pragma: no cover - a connection already going down
                logger.debug("aborting the ISB connection failed", exc_info=True)

        call_later(max(0.0, self.deadline - time.monotonic()), abort)

    def publish(self, envelope: Mapping[str, Any]) -> None:
        """Publish and wait for the confirm; raises on nack, return or lost connection."""
        import pika

        created_ns = envelope.get("created_ns")  # optional, and may be null in an entry
        if created_ns is None:
            created_ns = time.time_ns()
        self.channel.basic_publish(
            exchange=self.target.exchange,
            routing_key=self.target.routing_key,
            body=json.dumps(envelope["body"]).encode("utf-8"),
            properties=pika.BasicProperties(
                content_type=CONTENT_TYPE,
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=str(envelope.get("message_id") or uuid.uuid4().hex),
                timestamp=created_ns // 1_000_000_000,
                app_id=APP_ID,
            ),
            mandatory=True,
        )

    def keep_alive(self) -> None:
        """Serve heartbeats and broker events while waiting between passes."""
        self.connection.process_data_events(time_limit=0)

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # closing a broken connection may fail
                logger.debug("closing the ISB connection failed", exc_info=True)


def describe_error(error: BaseException) -> str:
    import pika.exceptions as errors

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


def _reply_text(error: BaseException) -> str:
    text = str(error)
    marker = "ACCESS_REFUSED"
    if marker in text:
        return text[text.index(marker) :].split(".")[0]
    if "NOT_ALLOWED" in text:
        return text[text.index("NOT_ALLOWED") :].rstrip("'\",)")
    return text
