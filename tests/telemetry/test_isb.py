"""The ISB producer against the real RabbitMQ: delivery, topology, refusals, configuration."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
import uuid

import pika
import pika.exceptions
import pytest
from dkist_processing_core._isb_delivery import retry_delay
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from dkist_processing_core.config import RetryConfig
from dkist_processing_core.isb import FAILURE_QUEUE
from dkist_processing_core.isb import FAILURE_ROUTING_KEY
from dkist_processing_core.isb import IsbTarget
from dkist_processing_core.isb import flush_outbox
from dkist_processing_core.isb import publish
from dkist_processing_core.isb_outbox import InvalidMessageError
from dkist_processing_core.isb_outbox import Outbox
from helpers.hostile_outbox import entry_name
from helpers.hostile_outbox import good_envelope
from helpers.hostile_outbox import write_envelope
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import isb_target
from helpers.tcp_proxy import TcpProxy

BOUND = 3.0
SLACK = 2.0  # the callback must return within its bound; this covers a loaded 2-core machine
MARGIN = 1.5  # how long a publishing thread may outlive the bound (it is aborted at the bound)


@pytest.fixture
def target(names, tmp_path):
    return isb_target(names, tmp_path / "outbox", publish_timeout=BOUND)


def body(n: int = 0) -> dict:
    return {"conversationId": uuid.uuid4().hex, "n": n, "text": "Grüße ☀"}


def test_message_arrives_with_exact_body_and_properties(target, names):
    sent = body()

    result = publish(sent, target)

    assert result.delivered and result.outbox_path is None and result.error is None
    assert result.message_id == sent["conversationId"]
    (delivery,) = consume_all(names.queue, expected=1)
    assert delivery.json() == sent
    assert list(delivery.json()) == list(sent)  # key order kept
    assert delivery.properties.delivery_mode == pika.DeliveryMode.Persistent.value
    assert delivery.properties.content_type == "application/json"
    assert delivery.properties.message_id == sent["conversationId"]
    assert delivery.routing_key == names.routing_key
    assert delivery.exchange == names.exchange
    assert Outbox(target.outbox_dir).pending() == []


def test_declares_a_durable_direct_exchange_and_a_durable_bound_queue(target, names):
    assert publish(body(), target).delivered

    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        channel = connection.channel()
        # Redeclaring with the same attributes succeeds, with others fails (406).
        channel.exchange_declare(names.exchange, exchange_type="direct", durable=True)
        channel.queue_declare(names.queue, durable=True, arguments={"x-queue-type": "classic"})
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as wrong_type:
            connection.channel().exchange_declare(
                names.exchange, exchange_type="fanout", durable=True
            )
        assert wrong_type.value.reply_code == 406
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as not_durable:
            connection.channel().queue_declare(names.queue, durable=False)
        assert not_durable.value.reply_code == 406
    finally:
        connection.close()
    assert len(consume_all(names.queue, expected=1)) == 1


def test_next_publish_first_drains_the_outbox_in_order(names, tmp_path):
    with TcpProxy() as proxy:
        target = isb_target(names, tmp_path / "outbox", port=proxy.port, publish_timeout=1.0)
        proxy.refuse()
        earlier = [body(n) for n in range(3)]
        results = [publish(message, target) for message in earlier]
        assert not any(result.delivered for result in results)
        assert len(Outbox(target.outbox_dir)) == 3

        proxy.heal()
        latest = body(3)
        result = publish(latest, target)

    assert result.delivered and result.drained == 3
    received = [delivery.json() for delivery in consume_all(names.queue, expected=4)]
    assert received == [*earlier, latest]
    assert Outbox(target.outbox_dir).pending() == []


def test_unroutable_message_is_retried_and_kept_not_dropped(names, tmp_path, caplog):
    # The producer does not declare the queue here, so nothing is bound to its routing key.
    target = isb_target(names, tmp_path / "outbox", declare_queue=False, publish_timeout=BOUND)
    sent = body()
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    result = publish(sent, target)

    assert not result.delivered
    assert result.attempts >= 2, "an unroutable return must be retried"
    assert result.duration <= BOUND + SLACK
    assert "unroutable" in (result.error or "")
    retries = [
        r for r in caplog.records if "unroutable" in r.getMessage() and "retrying" in r.getMessage()
    ]
    assert retries, caplog.text
    kept = Outbox(target.outbox_dir).pending()
    assert kept == [result.outbox_path]
    assert str(result.outbox_path) in caplog.text

    declare_queue(names)  # the consumer side appears
    flushed = flush_outbox(target)

    assert flushed.delivered == 1 and flushed.remaining == 0
    assert [d.json() for d in consume_all(names.queue, expected=1)] == [sent]


def test_nacked_message_is_retried_and_kept(names, tmp_path):
    # A queue that rejects every publish: the broker answers with a nack.
    declare_queue(names, {"x-max-length": 0, "x-overflow": "reject-publish"})
    target = isb_target(names, tmp_path / "outbox", declare_queue=False, publish_timeout=2.0)
    sent = body()

    result = publish(sent, target)

    assert not result.delivered and result.attempts >= 2
    assert "nack" in (result.error or "")
    assert len(Outbox(target.outbox_dir)) == 1

    delete_names(names)
    declare_queue(names)
    assert flush_outbox(target).delivered == 1
    assert [d.json() for d in consume_all(names.queue, expected=1)] == [sent]


def test_wrong_credentials_are_named_and_the_password_never_logged(names, tmp_path, caplog):
    password = f"pw-{uuid.uuid4().hex}"
    user = f"isb-user-{uuid.uuid4().hex[:8]}"
    target = isb_target(names, tmp_path / "outbox", username=user, password=password)
    caplog.set_level(logging.DEBUG)  # every logger, pika's included

    result = publish(body(), target)

    assert not result.delivered
    assert result.attempts == 1, "refused credentials fail fast instead of retrying"
    refusals = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and user in r.getMessage()
        and "127.0.0.1:5672" in r.getMessage()
    ]
    assert refusals, caplog.text
    assert "ISB_PASSWORD" in refusals[0].getMessage()
    assert password not in caplog.text
    assert all(password not in r.getMessage() for r in caplog.records)
    assert password not in repr(target)
    (kept,) = Outbox(target.outbox_dir).pending()
    assert password not in kept.read_text()
    # The right credentials deliver it later.
    assert flush_outbox(isb_target(names, tmp_path / "outbox")).delivered == 1


def test_quorum_queue_type_from_the_environment(names, tmp_path, monkeypatch):
    monkeypatch.setenv("ISB_QUEUE_TYPE", "quorum")
    target = IsbTarget.from_configuration(
        DKISTProcessingCoreConfiguration(),
        exchange=names.exchange,
        queue=names.queue,
        routing_key=names.routing_key,
        outbox_dir=tmp_path / "outbox",
        publish_timeout=10.0,
    )
    assert target.queue_type == "quorum"
    sent = body()

    assert publish(sent, target).delivered

    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        connection.channel().queue_declare(
            names.queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as classic:
            connection.channel().queue_declare(
                names.queue, durable=True, arguments={"x-queue-type": "classic"}
            )
        assert classic.value.reply_code == 406
    finally:
        connection.close()
    assert [d.json() for d in consume_all(names.queue, expected=1)] == [sent]


def test_queue_of_another_type_is_a_clear_error_and_the_message_is_kept(names, tmp_path, caplog):
    declare_queue(names, {"x-queue-type": "classic"})
    target = isb_target(names, tmp_path / "outbox", queue_type="quorum")
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    result = publish(body(), target)

    assert not result.delivered and result.attempts == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("ISB_QUEUE_TYPE" in m and names.queue in m for m in errors), caplog.text
    assert len(Outbox(target.outbox_dir)) == 1


def test_a_virtual_host_the_broker_refuses_fails_fast_and_keeps_the_message(
    names, tmp_path, caplog
):
    target = isb_target(names, tmp_path / "outbox", virtual_host=f"no-such-{uuid.uuid4().hex}")
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    result = publish(body(), target)

    assert not result.delivered and result.attempts == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(target.virtual_host in m and "'guest'" in m for m in errors), caplog.text
    assert Outbox(target.outbox_dir).pending() == [result.outbox_path]


def test_unwritable_outbox_still_publishes(names, tmp_path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    target = isb_target(names, not_a_folder / "outbox")
    sent = body()
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    result = publish(sent, target)

    assert result.delivered
    assert any(
        "ISB_OUTBOX_DIR" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    )
    assert [d.json() for d in consume_all(names.queue, expected=1)] == [sent]


def test_unwritable_outbox_and_no_broker_logs_the_whole_message(names, tmp_path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with TcpProxy() as proxy:
        proxy.refuse()
        target = isb_target(names, not_a_folder / "outbox", port=proxy.port, publish_timeout=1.0)
        sent = body()
        caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

        result = publish(sent, target)

    assert not result.delivered and result.outbox_path is None
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical and json.dumps(sent) in critical[0]


def test_flush_of_an_empty_outbox_does_not_connect(names, tmp_path):
    with TcpProxy() as proxy:
        target = isb_target(names, tmp_path / "outbox", port=proxy.port)
        result = flush_outbox(target)
        assert proxy.accepted == 0
    assert (result.delivered, result.remaining, result.attempts) == (0, 0, 0)
    assert int(result) == 0


def test_target_from_configuration(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "MESH_CONFIG",
        json.dumps({"interservice-bus": {"mesh_address": "isb.example", "mesh_port": 5673}}),
    )
    monkeypatch.setenv("ISB_USERNAME", "alice")
    monkeypatch.setenv("ISB_PASSWORD", "do-not-show")
    monkeypatch.setenv("ISB_EXCHANGE", "some.x")
    monkeypatch.setenv("ISB_QUEUE_TYPE", "quorum")
    monkeypatch.setenv("ISB_PUBLISH_TIMEOUT", "7.5")
    monkeypatch.setenv("ISB_OUTBOX_DIR", str(tmp_path / "box"))
    monkeypatch.setenv(
        "RETRY_CONFIG",
        json.dumps(
            {
                "retry_delay": 0.5,
                "retry_backoff": 3,
                "retry_jitter": [0.1, 0.2],
                "retry_max_delay": 4,
                "retry_tries": 5,
            }
        ),
    )

    target = IsbTarget.from_configuration(DKISTProcessingCoreConfiguration())

    assert (target.host, target.port, target.broker) == ("isb.example", 5673, "isb.example:5673")
    assert (target.username, target.password, target.exchange) == ("alice", "do-not-show", "some.x")
    assert (target.queue, target.routing_key, target.queue_type) == (
        FAILURE_QUEUE,
        FAILURE_ROUTING_KEY,
        "quorum",
    )
    assert (FAILURE_QUEUE, FAILURE_ROUTING_KEY) == ("recipe.run.failure.q", "recipe.run.failure.m")
    assert target.publish_timeout == 7.5 and target.outbox_dir == tmp_path / "box"
    retry = target.retry
    assert (retry.retry_delay, retry.retry_backoff, retry.retry_jitter) == (0.5, 3.0, (0.1, 0.2))
    assert (retry.retry_max_delay, retry.retry_tries) == (4.0, 5)
    assert "do-not-show" not in repr(target)


def test_default_broker_is_local(monkeypatch):
    for variable in (
        "MESH_CONFIG",
        "ISB_USERNAME",
        "ISB_PASSWORD",
        "ISB_EXCHANGE",
        "ISB_OUTBOX_DIR",
    ):
        monkeypatch.delenv(variable, raising=False)
    target = IsbTarget.from_configuration(DKISTProcessingCoreConfiguration())
    assert (
        target.outbox_dir
        == IsbTarget().outbox_dir
        == DKISTProcessingCoreConfiguration().isb_outbox_dir
    )
    assert (target.broker, target.username, target.exchange) == (
        "localhost:5672",
        "guest",
        "master.direct.x",
    )


@pytest.mark.parametrize("tries", [1, 2, 3])
def test_retry_tries_limits_attempts(names, tmp_path, tries):
    with TcpProxy() as proxy:
        proxy.refuse()
        target = isb_target(
            names,
            tmp_path / "outbox",
            port=proxy.port,
            retry=RetryConfig(retry_delay=0.01, retry_jitter=(0.0, 0.0), retry_tries=tries),
        )
        result = publish(body(), target)
    assert result.attempts == tries and not result.delivered


def test_retry_tries_minus_one_retries_until_the_time_bound(names, tmp_path):
    with TcpProxy() as proxy:
        proxy.refuse()
        target = isb_target(
            names,
            tmp_path / "outbox",
            port=proxy.port,
            publish_timeout=1.0,
            retry=RetryConfig(
                retry_delay=0.01, retry_backoff=1, retry_jitter=(0.0, 0.0), retry_tries=-1
            ),
        )
        result = publish(body(), target)
    assert not result.delivered and result.attempts >= 10
    assert 0.7 <= result.duration <= 1.0 + SLACK


def test_backoff_grows_and_is_capped():
    policy = RetryConfig(retry_delay=1, retry_backoff=2, retry_jitter=(0, 0), retry_max_delay=5)
    assert [retry_delay(policy, n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    # (RetryConfig refuses a reversed jitter range, which RetryPolicy used to sort)
    jittery = RetryConfig(
        retry_delay=1, retry_backoff=1, retry_jitter=(0.25, 0.5), retry_max_delay=10
    )
    assert all(1.25 <= retry_delay(jittery, 1) <= 1.5 for _ in range(50))


def test_isb_time_limit_is_retry_configs(tmp_path):
    from dkist_processing_core.isb import MAX_SECONDS

    at_the_limit = RetryConfig(retry_delay=MAX_SECONDS, retry_jitter=(0, MAX_SECONDS))
    IsbTarget(publish_timeout=MAX_SECONDS, retry=at_the_limit, outbox_dir=tmp_path)
    with pytest.raises(ValueError, match="retry_delay"):
        RetryConfig(retry_delay=MAX_SECONDS + 1)
    with pytest.raises(ValueError, match="publish_timeout"):
        IsbTarget(publish_timeout=MAX_SECONDS + 1, outbox_dir=tmp_path)


def test_backoff_survives_a_long_series_of_fast_failures():
    # A refused port fails in microseconds: with no delay and no jitter, a 30 s bound makes
    # thousands of attempts, and backoff ** attempts outgrows a float.
    assert (
        retry_delay(
            RetryConfig(retry_delay=0.5, retry_backoff=2, retry_jitter=(0, 0), retry_max_delay=5),
            5_000,
        )
        == 5
    )
    assert (
        retry_delay(
            RetryConfig(retry_delay=0, retry_backoff=2, retry_jitter=(0, 0), retry_max_delay=5),
            5_000,
        )
        == 0
    )


def test_importing_the_module_does_not_load_pika_or_the_configuration():
    code = (
        "import sys, dkist_processing_core.isb\n"
        "heavy = [m for m in ('pika', 'pydantic', 'pydantic_settings', 'opentelemetry') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ unsendable messages (issue 14)
def test_an_unsendable_entry_does_not_hold_back_later_reports(names, tmp_path, caplog):
    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir()
    target = isb_target(names, outbox_dir, publish_timeout=BOUND)
    first, last = body(1), body(3)
    write_envelope(outbox_dir / entry_name(1), good_envelope(first, first["conversationId"]))
    # The broker refuses a message id over 255 bytes (pika: ShortStringTooLong), forever.
    unsendable = outbox_dir / entry_name(2)
    write_envelope(unsendable, good_envelope(body(2), "m" * 300))
    write_envelope(outbox_dir / entry_name(3), good_envelope(last, last["conversationId"]))
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    flushed = flush_outbox(target)

    assert (flushed.delivered, flushed.remaining) == (2, 0)
    assert [d.json() for d in consume_all(names.queue, expected=2)] == [first, last]
    assert (outbox_dir / "rejected" / unsendable.name).exists()
    assert any("message_id" in r.getMessage() and "255" in r.getMessage() for r in caplog.records)


def test_an_entry_with_null_optional_fields_is_delivered(names, tmp_path):
    # check_envelope allows null for the optional fields; sending one failed every attempt with
    # a TypeError (None // 10**9), so the entry was retried until the bound on every drain.
    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir()
    sent = body(1)
    envelope = good_envelope(sent, sent["conversationId"])
    envelope.update(created_ns=None, message_id=None, exchange=None, routing_key=None)
    write_envelope(outbox_dir / entry_name(1), envelope)

    flushed = flush_outbox(isb_target(names, outbox_dir, publish_timeout=BOUND))

    assert (flushed.delivered, flushed.remaining, flushed.attempts) == (1, 0, 1)
    (delivery,) = consume_all(names.queue, expected=1)
    assert delivery.json() == sent and delivery.properties.timestamp > 1_700_000_000


@pytest.mark.parametrize(
    ("sent", "named"),
    [
        ({"conversationId": "c" * 256}, "conversationId"),
        ({"conversationId": "☀" * 100}, "conversationId"),
        ({"conversationId": "ok", "x": float("nan")}, "body"),
        ({"conversationId": "ok", "x": float("inf")}, "body"),
        ({"conversationId": "ok", "x": "\udc80"}, "body"),
        ({"conversationId": "ok", "x": "y" * (1 << 20)}, "body"),
    ],
)
def test_publish_refuses_a_message_no_broker_can_accept(names, tmp_path, sent, named):
    with TcpProxy() as proxy:
        target = isb_target(names, tmp_path / "outbox", port=proxy.port)
        with pytest.raises(InvalidMessageError, match=named):
            publish(sent, target)
        assert proxy.accepted == 0  # refused before any work
    assert Outbox(target.outbox_dir).pending() == []


def test_an_explicit_message_id_over_255_bytes_is_refused(names, tmp_path):
    target = isb_target(names, tmp_path / "outbox")
    with pytest.raises(InvalidMessageError, match="message_id.*255"):
        publish(body(), target, message_id="m" * 256)
    assert Outbox(target.outbox_dir).pending() == []


def test_an_unsendable_entry_that_cannot_be_moved_aside_is_skipped_not_waited_for(
    names, tmp_path, caplog
):
    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir()
    (outbox_dir / "rejected").write_text("a file where the rejected/ folder would go")
    target = isb_target(names, outbox_dir, publish_timeout=10.0)
    good = body(1)
    stuck = outbox_dir / entry_name(1)
    stuck.write_text("{not json")
    write_envelope(outbox_dir / entry_name(2), good_envelope(good, good["conversationId"]))
    caplog.set_level(logging.ERROR, logger="dkist_processing_core.isb")

    flushed = flush_outbox(target)

    assert (flushed.delivered, flushed.remaining) == (1, 1)
    assert flushed.duration < 5.0, "waited for an entry nobody can send"
    assert [d.json() for d in consume_all(names.queue, expected=1)] == [good]
    assert stuck.read_text() == "{not json"  # never deleted
    (line,) = [r.getMessage() for r in caplog.records if stuck.name in r.getMessage()]
    assert "cannot be moved aside" in line and "not JSON" in line


# ------------------------------------------------------------------ numbers with bounds (issue 14)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e10, 3600.5, 0, -1, True, "30"])
def test_publish_timeout_out_of_range_is_refused_naming_the_setting(tmp_path, value):
    with pytest.raises(ValueError, match=r"publish_timeout \(ISB_PUBLISH_TIMEOUT\).*3600"):
        IsbTarget(publish_timeout=value, outbox_dir=tmp_path)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"retry_jitter": (math.nan, 1.0)}, "retry_jitter"),
        ({"retry_jitter": (0.0, math.inf)}, "retry_jitter"),
        ({"retry_jitter": (-1.0, 1.0)}, "retry_jitter"),
        ({"retry_delay": math.inf}, "retry_delay"),
        ({"retry_delay": float("1e400")}, "retry_delay"),
        ({"retry_delay": math.nan}, "retry_delay"),
        ({"retry_delay": -0.5}, "retry_delay"),
        ({"retry_backoff": math.nan}, "retry_backoff"),
        ({"retry_backoff": 0.5}, "retry_backoff"),
        ({"retry_backoff": 1e300}, "retry_backoff"),
        ({"retry_max_delay": math.inf}, "retry_max_delay"),
        ({"retry_max_delay": math.nan}, "retry_max_delay"),
        ({"retry_tries": 0}, "retry_tries"),
        ({"retry_tries": -2}, "retry_tries"),
        ({"retry_tries": 10**30}, "retry_tries"),
        ({"retry_tries": True}, "retry_tries"),
        ({"retry_tries": 2.5}, "retry_tries"),
    ],
)
def test_retry_policy_out_of_range_is_refused_naming_the_setting(fields, named):
    with pytest.raises(ValueError, match=rf"{named}\n"):
        RetryConfig(**fields)


@pytest.mark.parametrize("port", [0, 65536, -1, True])
def test_broker_port_out_of_range_is_refused(tmp_path, port):
    with pytest.raises(ValueError, match="port"):
        IsbTarget(port=port, outbox_dir=tmp_path)


def test_publish_timeout_inf_from_the_environment_is_refused_naming_the_variable(
    names, tmp_path, monkeypatch
):
    monkeypatch.setenv("ISB_PUBLISH_TIMEOUT", "inf")
    monkeypatch.setenv("ISB_OUTBOX_DIR", str(tmp_path / "outbox"))
    # The configuration (or the target built from it) refuses it; never an OverflowError later.
    with pytest.raises(ValueError, match="ISB_PUBLISH_TIMEOUT"):
        IsbTarget.from_configuration(DKISTProcessingCoreConfiguration())


def test_nan_jitter_from_the_environment_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("RETRY_CONFIG", '{"retry_jitter": [NaN, 1]}')
    with pytest.raises(ValueError, match="RETRY_CONFIG"):
        IsbTarget.from_configuration(DKISTProcessingCoreConfiguration())


@pytest.mark.parametrize("timeout", [math.inf, math.nan, 1e10, 0.0, -5.0])
def test_flush_timeout_out_of_range_is_refused_not_an_overflow(names, tmp_path, timeout):
    target = isb_target(names, tmp_path / "outbox")
    Outbox(target.outbox_dir).put(good_envelope())
    with pytest.raises(ValueError, match=r"timeout.*3600"):
        flush_outbox(target, timeout=timeout)
    assert len(Outbox(target.outbox_dir)) == 1


def test_the_publishing_thread_does_not_outlive_its_bound(names, tmp_path):
    # The broker goes silent in the middle of the publish: pika would wait for heartbeats
    # (bound + 5 s and more); the thread must end with the bound instead.
    with TcpProxy(record=True) as proxy:
        target = isb_target(names, tmp_path / "outbox", port=proxy.port, publish_timeout=BOUND)
        assert publish(body(), target).delivered
        offset = bytes(proxy.recorded[-1]).find(b'{"conversationId"')
        proxy.stall(after_bytes=offset + 10, direction="upstream")
        before = set(threading.enumerate())
        seen: set[threading.Thread] = set()
        watching = threading.Event()

        def watch() -> None:  # every publishing thread this publish starts
            while not watching.wait(0.02):
                seen.update(t for t in threading.enumerate() if t.name == "dkist-isb-publish")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = publish(body(), target)
        returned = time.monotonic()
        for worker in seen - before:
            worker.join(timeout=max(0.0, returned + MARGIN - time.monotonic()))
        alive = [w for w in seen - before if w.is_alive()]  # before the proxy lets go of the socket
        watching.set()
        watcher.join()

    assert not result.delivered and len(seen - before) == 1
    assert not alive, f"the publishing thread was still alive {MARGIN} s after the bound"
    assert len(Outbox(target.outbox_dir)) == 1
