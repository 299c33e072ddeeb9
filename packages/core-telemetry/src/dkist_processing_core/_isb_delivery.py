"""Bounded delivery: retries in a worker thread, while the caller waits at most until the bound.

:class:`BoundedDelivery` runs one job (deliver the caller's message, or drain the outbox) in a
daemon thread that connects, works and retries with the backoff of ``RETRY_CONFIG``; the caller's
thread waits until the deadline and then leaves it behind. The loop is hand-written rather than a
``tenacity.Retrying``: each delay is capped by the time left, an abort event from the caller ends
the wait, and the log says why it stops (docs/decisions.md).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._isb_transport import BrokerChannel
from dkist_processing_core._isb_transport import FatalBrokerError
from dkist_processing_core._isb_transport import describe_error

if TYPE_CHECKING:
    from dkist_processing_core._isb_target import IsbTarget
    from dkist_processing_core._settings_models import RetryConfig
    from dkist_processing_core.isb_outbox import Outbox

__all__ = ["BoundedDelivery", "retry_allows", "retry_delay"]

logger = logging.getLogger("dkist_processing_core.isb")

# Part of the bound kept back from the network so the caller returns before the bound.
_RESERVE_FRACTION = 0.05
_RESERVE_MAX = 0.5
# Shortest time worth starting another connection attempt with.
_MIN_ATTEMPT_SECONDS = 0.2
# How often a flush looks again at messages other drainers hold.
_CLAIM_POLL_SECONDS = 0.1


def retry_delay(retry: RetryConfig, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    try:
        growth = float(retry.retry_backoff) ** (attempt - 1)
    except OverflowError:  # a long series of fast failures; retry_max_delay caps it anyway
        growth = math.inf
    base = retry.retry_delay * growth if retry.retry_delay else 0.0
    low, high = retry.retry_jitter
    return max(0.0, min(base + random.uniform(low, high), retry.retry_max_delay))


def retry_allows(retry: RetryConfig, attempt: int) -> bool:
    """True if another attempt may follow attempt number ``attempt``."""
    return retry.retry_tries < 0 or attempt < retry.retry_tries


class BoundedDelivery:
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
                with BrokerChannel(self.target, remaining) as channel:
                    work(channel)
                self.error = None
                return
            except FatalBrokerError as error:
                self.error = str(error)
                logger.error("%s", error)
                return
            except Exception as error:  # every other failure is worth a retry
                self.error = describe_error(error)
            if not retry_allows(self.target.retry, attempt):
                logger.warning(
                    "ISB attempt %d to %s failed (%s); no retries left (RETRY_CONFIG retry_tries=%d)",
                    attempt,
                    self.target.broker,
                    self.error,
                    self.target.retry.retry_tries,
                )
                return
            delay = retry_delay(self.target.retry, attempt)
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

    def _deliver(self, channel: BrokerChannel, path: Path) -> bool:
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

    def _drain_once(self, channel: BrokerChannel) -> int:
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
                if path not in self.outbox.skipped:
                    sent += self._deliver(channel, path)
        finally:
            self.outbox.sync()
        return sent

    def deliver_outbox(self, channel: BrokerChannel) -> None:
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

    def drain_until_empty(self, channel: BrokerChannel) -> None:
        """Drain until the outbox is empty; files claimed by other drainers are waited for, since
        a claim is released without delivery when its holder fails."""
        while self._in_time():
            if self._drain_once(channel):
                continue
            waiting = [p for p in self.outbox.pending() if p not in self.outbox.skipped]
            if not waiting or self.stop.wait(_CLAIM_POLL_SECONDS):
                return
            channel.keep_alive()
