"""Helpers for tests against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

Every test uses names of its own (:func:`unique_names`) so tests never collide under
``pytest -n auto``, and removes them afterwards (:func:`delete_names`).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "BROKER",
    "names",
    "NOT_LISTENING",
    "Delivery",
    "IsbNames",
    "connect",
    "consume_all",
    "declare_queue",
    "delete_names",
    "isb_target",
    "queue_exists",
    "require_rabbitmq",
    "unique_names",
]

BROKER = ("127.0.0.1", 5672)
NOT_LISTENING = (
    "RabbitMQ is not listening on 127.0.0.1:5672; start it with `rabbitmq-server -detached`"
)


def require_rabbitmq() -> None:
    """Fail the test (not skip) when the broker is not reachable."""
    try:
        with socket.create_connection(BROKER, timeout=3):
            pass
    except OSError:
        pytest.fail(NOT_LISTENING, pytrace=False)


@dataclass(frozen=True)
class IsbNames:
    exchange: str
    queue: str
    routing_key: str


def unique_names(prefix: str = "test") -> IsbNames:
    token = uuid.uuid4().hex
    return IsbNames(
        exchange=f"{prefix}.{token}.x",
        queue=f"{prefix}.{token}.q",
        routing_key=f"{prefix}.{token}.m",
    )


def isb_target(names: IsbNames, outbox_dir: Path, **overrides: Any) -> Any:
    """An ISB producer target on the test broker with the test's names, a short time bound
    (3 s) and fast retries; ``overrides`` replace any field (e.g. ``port`` of a proxy)."""
    from dkist_processing_core.config import RetryConfig
    from dkist_processing_core.isb import IsbTarget

    values: dict[str, Any] = {
        "host": BROKER[0],
        "port": BROKER[1],
        "exchange": names.exchange,
        "queue": names.queue,
        "routing_key": names.routing_key,
        "outbox_dir": outbox_dir,
        "publish_timeout": 3.0,
        "retry": RetryConfig(
            retry_delay=0.05, retry_backoff=2.0, retry_jitter=(0.0, 0.05), retry_max_delay=0.5
        ),
    }
    values.update(overrides)
    return IsbTarget(**values)


def connect() -> Any:
    """A pika BlockingConnection to the test broker."""
    import pika

    require_rabbitmq()
    return pika.BlockingConnection(
        pika.ConnectionParameters(*BROKER, connection_attempts=3, retry_delay=1, stack_timeout=10)
    )


def declare_queue(
    names: IsbNames, arguments: dict[str, Any] | None = None, *, bind: bool = True
) -> None:
    """Declare the exchange (direct, durable) and the queue, bound with the routing key."""
    connection = connect()
    try:
        channel = connection.channel()
        channel.exchange_declare(names.exchange, exchange_type="direct", durable=True)
        channel.queue_declare(names.queue, durable=True, arguments=arguments)
        if bind:
            channel.queue_bind(names.queue, names.exchange, routing_key=names.routing_key)
    finally:
        connection.close()


def queue_exists(queue: str) -> bool:
    import pika.exceptions

    connection = connect()
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


@dataclass(frozen=True)
class Delivery:
    body: bytes
    properties: Any
    routing_key: str
    exchange: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


def consume_all(queue: str, *, expected: int = 0, timeout: float = 15.0) -> list[Delivery]:
    """Take every message from ``queue``; wait up to ``timeout`` until at least ``expected`` came."""
    connection = connect()
    deliveries: list[Delivery] = []
    try:
        channel = connection.channel()
        give_up = time.monotonic() + timeout
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                deliveries.append(Delivery(body, properties, method.routing_key, method.exchange))
                continue
            if len(deliveries) >= expected or time.monotonic() > give_up:
                return deliveries
            time.sleep(0.05)
    finally:
        if connection.is_open:
            connection.close()


def delete_names(names: IsbNames) -> None:
    """Remove the test's queue and exchange (missing ones are fine)."""
    import pika.exceptions

    connection = connect()
    try:
        for delete in (
            lambda channel: channel.queue_delete(names.queue),
            lambda channel: channel.exchange_delete(names.exchange),
        ):
            try:
                delete(connection.channel())
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def names() -> Iterator[IsbNames]:
    """Exchange, queue and routing key of this test's own on the real broker, deleted afterwards."""
    require_rabbitmq()
    created = unique_names()
    yield created
    delete_names(created)
