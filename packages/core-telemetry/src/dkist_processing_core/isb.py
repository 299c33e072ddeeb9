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
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core.isb_outbox import ENVELOPE_FORMAT
from dkist_processing_core.isb_outbox import InvalidMessageError
from dkist_processing_core.isb_outbox import Outbox
from dkist_processing_core.isb_outbox import OutboxError
from dkist_processing_core.isb_outbox import check_envelope
from dkist_processing_core.isb_outbox import default_isb_outbox_dir

if TYPE_CHECKING:
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration
    from dkist_processing_core.config import RetryConfig

__all__ = [
    "FAILURE_QUEUE",
    "FAILURE_ROUTING_KEY",
    "FlushResult",
    "InvalidMessageError",
    "IsbTarget",
    "PublishResult",
    "RetryPolicy",
    "flush_outbox",
    "publish",
]

logger = logging.getLogger("dkist_processing_core.isb")

FAILURE_QUEUE = "recipe.run.failure.q"
FAILURE_ROUTING_KEY = "recipe.run.failure.m"
CONTENT_TYPE = "application/json"
APP_ID = "dkist-processing-core"
# Part of the bound kept back from the network so the caller returns before the bound.
_RESERVE_FRACTION = 0.05
_RESERVE_MAX = 0.5
# Shortest time worth starting another connection attempt with.
_MIN_ATTEMPT_SECONDS = 0.2
# Longest wait for one connection (TCP connect + AMQP handshake) before the next attempt.
_CONNECT_TIMEOUT_MAX = 10.0
# How often a flush looks again at messages other drainers hold.
_CLAIM_POLL_SECONDS = 0.1
#: Ranges of the numbers that steer publishing (docs/decisions.md; the configuration checks the
#: same): time bounds in (0, MAX_SECONDS]; retry delays, jitter and max delay in [0, MAX_SECONDS];
#: backoff in [1, MAX_BACKOFF]; tries -1 (until the time bound) or 1 to MAX_TRIES.
MAX_SECONDS = 3600.0
MAX_BACKOFF = 100.0
MAX_TRIES = 10_000


def _seconds(value: object, what: str, *, positive: bool = False) -> float:
    """``value`` as seconds if it is a finite number in range, else ValueError naming ``what``."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    low_ok = number > 0 if positive else number >= 0
    if not (math.isfinite(number) and low_ok and number <= MAX_SECONDS):
        low = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{what} must be a number of seconds {low} and <= {MAX_SECONDS:g}, got {value!r}"
        )
    return float(number)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts (the fields of ``RETRY_CONFIG``)."""

    delay: float = 1.0
    backoff: float = 2.0
    jitter: tuple[float, float] = (0.0, 1.0)
    max_delay: float = 30.0
    tries: int = -1  # attempts in all; -1: until the time bound

    def __post_init__(self) -> None:
        _seconds(self.delay, "RetryPolicy delay (retry_delay of RETRY_CONFIG)")
        _seconds(self.max_delay, "RetryPolicy max_delay (retry_max_delay of RETRY_CONFIG)")
        jitter = "RetryPolicy jitter (retry_jitter of RETRY_CONFIG)"
        if not (isinstance(self.jitter, tuple | list) and len(self.jitter) == 2):
            raise ValueError(f"{jitter} must be two numbers of seconds, got {self.jitter!r}")
        for bound in self.jitter:
            _seconds(bound, jitter)
        backoff = self.backoff
        if isinstance(backoff, bool) or not (
            isinstance(backoff, int | float) and 1 <= backoff <= MAX_BACKOFF
        ):
            raise ValueError(
                "RetryPolicy backoff (retry_backoff of RETRY_CONFIG) must be a number >= 1 and "
                f"<= {MAX_BACKOFF:g}, got {backoff!r}"
            )
        tries = self.tries
        if type(tries) is not int or not (tries == -1 or 1 <= tries <= MAX_TRIES):
            raise ValueError(
                "RetryPolicy tries (retry_tries of RETRY_CONFIG) must be -1 (until the time "
                f"bound) or an integer from 1 to {MAX_TRIES}, got {tries!r}"
            )

    @classmethod
    def from_config(cls, retry: RetryConfig) -> RetryPolicy:
        return cls(
            delay=retry.retry_delay,
            backoff=retry.retry_backoff,
            jitter=tuple(retry.retry_jitter),  # type: ignore[arg-type]
            max_delay=retry.retry_max_delay,
            tries=retry.retry_tries,
        )

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            growth = float(self.backoff) ** (attempt - 1)
        except OverflowError:  # a long series of fast failures; max_delay caps it anyway
            growth = math.inf
        base = self.delay * growth if self.delay else 0.0
        low, high = sorted(self.jitter)
        return max(0.0, min(base + random.uniform(low, high), self.max_delay))

    def allows(self, attempt: int) -> bool:
        """True if another attempt may follow attempt number ``attempt``."""
        return self.tries < 0 or attempt < self.tries


@dataclass(frozen=True)
class IsbTarget:
    """Where and how to publish; :meth:`from_configuration` fills it from the environment."""

    host: str = "127.0.0.1"
    port: int = 5672
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    virtual_host: str = "/"
    exchange: str = "master.direct.x"
    queue: str = FAILURE_QUEUE
    routing_key: str = FAILURE_ROUTING_KEY
    queue_type: str = "classic"
    # False when the queue is owned by someone else (the producer then only declares the exchange).
    declare_queue: bool = True
    publish_timeout: float = 30.0
    outbox_dir: Path = field(default_factory=default_isb_outbox_dir)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        _seconds(
            self.publish_timeout, "IsbTarget publish_timeout (ISB_PUBLISH_TIMEOUT)", positive=True
        )
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError(
                f"IsbTarget port must be an integer from 1 to 65535, got {self.port!r}"
            )
        if not isinstance(self.retry, RetryPolicy):
            raise ValueError(f"IsbTarget retry must be a RetryPolicy, got {self.retry!r}")

    @classmethod
    def from_configuration(
        cls, configuration: DKISTProcessingCoreConfiguration | None = None, **overrides: Any
    ) -> IsbTarget:
        """The production target from ``configuration`` (default: this process's), with overrides."""
        if configuration is None:
            from dkist_processing_core.config import core_configuration

            configuration = core_configuration()
        service = configuration.isb_mesh_service
        target = cls(
            host=service.host,
            port=service.port,
            username=configuration.isb_username,
            password=configuration.isb_password,
            exchange=configuration.isb_exchange,
            queue_type=configuration.isb_queue_type,
            publish_timeout=configuration.isb_publish_timeout,
            outbox_dir=Path(configuration.isb_outbox_dir),
            retry=RetryPolicy.from_config(configuration.retry_config),
        )
        return replace(target, **overrides) if overrides else target

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.outbox_dir)


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


# ------------------------------------------------------------------------------- public API
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
    body = dict(body)
    json.dumps(body)  # not JSON-serialisable: a programming error, raised before any work
    source = "message_id" if message_id else "message_id (from conversationId)"
    message_id = message_id or str(body.get("conversationId") or uuid.uuid4().hex)
    envelope = {
        "format": ENVELOPE_FORMAT,
        "message_id": message_id,
        "created_ns": time.time_ns(),
        "exchange": target.exchange,
        "routing_key": target.routing_key,
        "body": body,
    }
    try:
        check_envelope(envelope)
    except InvalidMessageError as error:
        text = str(error).replace("field 'message_id'", source)
        raise InvalidMessageError(f"ISB message not published: {text}") from None
    outbox = target.outbox
    own_path: Path | None
    try:
        own_path = outbox.put(envelope)
    except OutboxError as error:
        own_path = None
        logger.error("%s; publishing message %s without a safety copy", error, message_id)

    run = _Run(target, outbox, started=started, bound=target.publish_timeout)
    run.own_path = own_path
    if own_path is None:
        run.extra = envelope
    run.execute(work=run.deliver_outbox)

    delivered = run.own_delivered or (own_path is not None and not own_path.exists())
    drained = run.delivered - (1 if run.own_delivered else 0)
    duration = time.monotonic() - started
    if delivered:
        logger.info(
            "ISB message %s confirmed by %s (exchange %r, routing key %r) after %d attempt(s) "
            "in %.2f s%s",
            message_id,
            target.broker,
            target.exchange,
            target.routing_key,
            run.attempts,
            duration,
            f"; {drained} older outbox message(s) delivered first" if drained else "",
        )
    elif own_path is not None:
        logger.warning(
            "ISB message %s not confirmed by %s within %.1f s (%s); kept in the outbox at %s. "
            "It is sent by the next successful publish or by `dkist-processing-core isb flush`.",
            message_id,
            target.broker,
            target.publish_timeout,
            run.error or "no confirm before the time bound",
            own_path,
        )
    else:
        # Last resort: both the broker and the outbox failed. The log line carries the message.
        logger.critical(
            "ISB message %s LOST unless recovered from this line: not confirmed by %s (%s) and "
            "the outbox %s is not writable; body: %s",
            message_id,
            target.broker,
            run.error or "no confirm before the time bound",
            target.outbox_dir,
            json.dumps(body),
        )
    return PublishResult(
        message_id=message_id,
        delivered=delivered,
        outbox_path=None if delivered else own_path,
        attempts=run.attempts,
        drained=drained,
        duration=duration,
        error=None if delivered else (run.error or "time bound reached"),
    )


def flush_outbox(target: IsbTarget | None = None, *, timeout: float | None = None) -> FlushResult:
    """Send every message of the outbox, oldest first; returns within ``timeout`` seconds.

    ``timeout`` defaults to the target's ``publish_timeout``; like it, a number of seconds > 0 and
    <= 3600 (else ValueError). Messages another drainer holds are waited for (until ``timeout``),
    since a drainer that fails releases them undelivered. Never raises for broker problems.
    """
    started = time.monotonic()
    if timeout is not None:
        timeout = _seconds(timeout, "flush_outbox timeout (isb flush --timeout)", positive=True)
    target = target or IsbTarget.from_configuration()
    bound = target.publish_timeout if timeout is None else timeout
    outbox = target.outbox
    outbox.recover_stale_temporaries()
    if not outbox.pending():
        logger.info("ISB outbox %s is empty; nothing to flush", outbox.directory)
        return FlushResult(
            delivered=0, remaining=0, attempts=0, duration=time.monotonic() - started
        )
    run = _Run(target, outbox, started=started, bound=bound)
    run.execute(work=run.drain_until_empty)
    remaining = len(outbox.pending())
    duration = time.monotonic() - started
    log = logger.info if remaining == 0 else logger.warning
    log(
        "ISB outbox %s: %d message(s) delivered to %s in %.2f s, %d remaining%s",
        outbox.directory,
        run.delivered,
        target.broker,
        duration,
        remaining,
        f" ({run.error})" if run.error and remaining else "",
    )
    return FlushResult(
        delivered=run.delivered,
        remaining=remaining,
        attempts=run.attempts,
        duration=duration,
        error=run.error if remaining else None,
    )


# ------------------------------------------------------------------------------- internals
class _Fatal(Exception):
    """An error that waiting will not fix (credentials, permissions, contradicting topology)."""


class _Run:
    """One bounded delivery job: retries in a worker thread, the caller waits until the bound."""

    def __init__(self, target: IsbTarget, outbox: Outbox, started: float, bound: float) -> None:
        self.target = target
        self.outbox = outbox
        self.deadline = started + bound
        self.network_deadline = self.deadline - min(_RESERVE_MAX, bound * _RESERVE_FRACTION)
        self.stop = threading.Event()
        self.attempts = 0
        self.delivered = 0
        self.error: str | None = None
        self.own_path: Path | None = None  # the caller's message in the outbox
        self.own_delivered = False
        self.extra: dict[str, Any] | None = None  # the caller's message if the outbox failed

    def execute(self, work: Callable[[Any], None]) -> None:
        worker = threading.Thread(
            target=self._attempts, args=(work,), name="dkist-isb-publish", daemon=True
        )
        worker.start()
        worker.join(max(0.0, self.deadline - time.monotonic()))
        if worker.is_alive():
            # pika is blocked somewhere its own timeouts do not reach; leave it behind. Whatever
            # it holds stays in the outbox (its claims vanish with it).
            self.stop.set()
            self.error = self.error or "time bound reached while the broker was not answering"

    # -- runs in the worker thread
    def _attempts(self, work: Callable[[Any], None]) -> None:
        try:
            import pika  # noqa: F401  (imported here: keeps the module light)
        except ImportError as error:  # pragma: no cover - pika is a dependency
            self.error = f"pika is not installed: {error}"
            return
        attempt = 0
        while not self.stop.is_set():
            remaining = self.network_deadline - time.monotonic()
            if remaining <= 0:
                return
            attempt += 1
            self.attempts = attempt
            try:
                with _Channel(self.target, remaining) as channel:
                    work(channel)
                self.error = None
                return
            except _Fatal as error:
                self.error = str(error)
                logger.error("%s", error)
                return
            except Exception as error:  # every other failure is worth a retry
                self.error = _describe(error)
            if not self.target.retry.allows(attempt):
                logger.warning(
                    "ISB attempt %d to %s failed (%s); no retries left (RETRY_CONFIG retry_tries=%d)",
                    attempt,
                    self.target.broker,
                    self.error,
                    self.target.retry.tries,
                )
                return
            delay = self.target.retry.delay_after(attempt)
            room = self.network_deadline - time.monotonic() - _MIN_ATTEMPT_SECONDS
            if room <= 0:
                logger.warning(
                    "ISB attempt %d to %s failed (%s); no time left for another attempt",
                    attempt,
                    self.target.broker,
                    self.error,
                )
                return
            delay = min(delay, room)
            logger.warning(
                "ISB attempt %d to %s failed (%s); retrying in %.2f s",
                attempt,
                self.target.broker,
                self.error,
                delay,
            )
            if self.stop.wait(delay):
                return

    def _in_time(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.network_deadline

    def _deliver(self, channel: _Channel, path: Path) -> bool:
        """Send one outbox file if this run can claim it; False if it is gone or held elsewhere."""
        with self.outbox.claim(path) as claimed:
            if claimed is None:
                return False
            channel.publish(claimed.envelope)
            claimed.done()
        self.delivered += 1
        if path == self.own_path:
            self.own_delivered = True
        return True

    def _drain_once(self, channel: _Channel) -> int:
        """One pass over the outbox, oldest first; returns the messages this pass delivered."""
        sent = 0
        try:
            pending = self.outbox.pending()
        except OSError as error:
            logger.error("cannot read the ISB outbox %s: %s", self.outbox.directory, error)
            return 0
        try:
            for path in pending:
                if not self._in_time():
                    break
                if path not in self.outbox.unmovable:
                    sent += self._deliver(channel, path)
        finally:
            self.outbox.sync()
        return sent

    def deliver_outbox(self, channel: _Channel) -> None:
        """Drain the outbox in order, then make sure the caller's own message went out: another
        drainer holding it may still fail, so wait for it to be gone or claim it ourselves."""
        self._drain_once(channel)
        own = self.own_path
        while own is not None and own.exists() and self._in_time():
            if self.stop.wait(_CLAIM_POLL_SECONDS):
                return
            channel.keep_alive()
            if self._deliver(channel, own):
                self.outbox.sync()
        if self.extra is not None and self._in_time():
            channel.publish(self.extra)
            self.own_delivered = True
            self.delivered += 1

    def drain_until_empty(self, channel: _Channel) -> None:
        """Drain until the outbox is empty; files claimed by other drainers are waited for, since
        a claim is released without delivery when its holder fails."""
        while self._in_time():
            if self._drain_once(channel):
                continue
            waiting = [p for p in self.outbox.pending() if p not in self.outbox.unmovable]
            if not waiting or self.stop.wait(_CLAIM_POLL_SECONDS):
                return
            channel.keep_alive()


class _Channel:
    """A confirming channel on a fresh connection, with the topology declared."""

    def __init__(self, target: IsbTarget, remaining: float) -> None:
        self.target = target
        self.remaining = remaining
        self.deadline = time.monotonic() + remaining
        self.connection: Any = None
        self.channel: Any = None

    def __enter__(self) -> _Channel:
        import pika
        import pika.exceptions as errors

        target = self.target
        # A broker that accepts and never answers gets a second chance within a long bound.
        seconds = max(0.05, min(self.remaining, _CONNECT_TIMEOUT_MAX))
        parameters = pika.ConnectionParameters(
            host=target.host,
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
            raise _Fatal(
                f"ISB broker {target.broker} refused the credentials of user {target.username!r} "
                f"({_reply_text(error)}); check ISB_USERNAME and ISB_PASSWORD"
            ) from None
        except errors.ProbableAccessDeniedError as error:
            if "NOT_ALLOWED" not in str(error) and "ACCESS_REFUSED" not in str(error):
                raise
            raise _Fatal(
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
                raise _Fatal(
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
            if impl.is_closed:
                return
            try:
                terminate(pika.exceptions.StreamLostError("ISB time bound reached"))
            except Exception:  # pragma: no cover - a connection already going down
                logger.debug("aborting the ISB connection failed", exc_info=True)

        call_later(max(0.0, self.deadline - time.monotonic()), abort)

    def publish(self, envelope: Mapping[str, Any]) -> None:
        """Publish and wait for the confirm; raises on nack, return or lost connection."""
        import pika

        self.channel.basic_publish(
            exchange=self.target.exchange,
            routing_key=self.target.routing_key,
            body=json.dumps(envelope["body"]).encode("utf-8"),
            properties=pika.BasicProperties(
                content_type=CONTENT_TYPE,
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=str(envelope.get("message_id") or uuid.uuid4().hex),
                timestamp=int(envelope.get("created_ns", time.time_ns()) // 1_000_000_000),
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


def _describe(error: BaseException) -> str:
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
