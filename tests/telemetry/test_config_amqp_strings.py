"""AMQP short strings and credentials (issue 22, item 6): refused when read, not by the broker.

An exchange name is an AMQP short string: at most 255 bytes of UTF-8 (bytes, not characters).
A longer ``ISB_EXCHANGE`` was accepted, and then every failure report was refused by the broker
and piled up in the outbox. The same bound holds for everything an ``IsbTarget`` puts on the wire
as a short string (exchange, queue, routing key, virtual host). ``ISB_USERNAME`` and
``ISB_PASSWORD`` travel in SASL PLAIN, which separates them with NUL bytes, so a NUL in either
is refused too; control characters in a name (exchange, user) are refused, since every log
line prints them.
"""

from __future__ import annotations

import logging

import pytest
from dkist_processing_core.config import ConfigurationError
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from dkist_processing_core.failure_callback import chat_ops_notification
from dkist_processing_core.isb import IsbTarget
from dkist_processing_core.isb import publish
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import isb_target
from helpers.rabbitmq import unique_names


def exchange_of(size: int, filler: str) -> str:
    """An exchange name of exactly ``size`` bytes of UTF-8 (``filler`` is 1 or 2 bytes)."""
    width = len(filler.encode())
    assert size % width == 0
    return filler * (size // width)


@pytest.mark.parametrize(
    "exchange",
    [exchange_of(256, "x"), exchange_of(256, "é"), exchange_of(1000, "x"), "é" * 200 + "x" * 56],
    ids=["256-ascii", "128-characters-256-bytes", "1000-ascii", "256-characters-456-bytes"],
)
def test_an_exchange_over_255_bytes_is_refused_naming_the_variable(monkeypatch, exchange):
    monkeypatch.setenv("ISB_EXCHANGE", exchange)

    with pytest.raises(ConfigurationError, match="ISB_EXCHANGE.*255 bytes"):
        DKISTProcessingCoreConfiguration()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ISB_EXCHANGE", "master\ndirect.x"),
        ("ISB_EXCHANGE", "master\x1b[31m.x"),
        ("ISB_EXCHANGE", "master\x7f.x"),
        ("ISB_USERNAME", "user\nname"),
        ("ISB_USERNAME", "user\rname"),
    ],
    ids=["exchange-newline", "exchange-escape", "exchange-delete", "user-newline", "user-return"],
)
def test_control_characters_in_names_are_refused_without_echoing_the_value(
    monkeypatch, variable, value
):
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError, match=variable) as refused:
        DKISTProcessingCoreConfiguration()

    assert value not in str(refused.value)


# The environment cannot carry a NUL byte; values given by code (a client's settings, a test) can.
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("isb_exchange", "master\x00x"),
        ("isb_username", "user\x00admin"),
        ("isb_password", "pass\x00S3cret"),
    ],
)
def test_a_nul_byte_is_refused_without_echoing_the_value(field, value):
    with pytest.raises(ConfigurationError, match=field.upper()) as refused:
        DKISTProcessingCoreConfiguration(**{field: value})

    assert "S3cret" not in str(refused.value) and "admin" not in str(refused.value)


def test_a_password_may_hold_any_other_character():
    password = "p\u00e4ss w\u00f6rd \t!@#$%^&*()\u2603"
    assert DKISTProcessingCoreConfiguration(isb_password=password).isb_password == password


@pytest.mark.parametrize("field", ["exchange", "queue", "routing_key", "virtual_host"])
def test_an_isb_target_refuses_short_strings_over_255_bytes(tmp_path, field):
    with pytest.raises(ValueError, match=f"IsbTarget {field}.*255 bytes"):
        IsbTarget(outbox_dir=tmp_path, **{field: exchange_of(256, "é")})


def test_a_255_byte_exchange_from_the_environment_is_accepted_by_the_real_broker(
    monkeypatch, tmp_path
):
    base = unique_names("b255")
    exchange = (base.exchange + "x" * 255)[:255]
    assert len(exchange.encode()) == 255
    names = type(base)(exchange=exchange, queue=base.queue, routing_key=base.routing_key)
    declare_queue(names)
    monkeypatch.setenv("ISB_EXCHANGE", exchange)
    try:
        configured = DKISTProcessingCoreConfiguration()
        target = isb_target(names, tmp_path / "outbox", exchange=configured.isb_exchange)

        result = publish({"conversationId": "c-255"}, target)

        assert result.delivered, result.error
        assert [d.json() for d in consume_all(names.queue, expected=1)] == [
            {"conversationId": "c-255"}
        ]
    finally:
        delete_names(names)


def test_with_a_256_byte_exchange_the_failure_callback_keeps_the_report_and_names_it(
    monkeypatch, tmp_path, caplog
):
    # Before: the configuration took it and every report was refused as it was sent (the
    # outbox's own check, or the broker), and the callback logged it as lost.
    outbox = tmp_path / "outbox"
    monkeypatch.setenv("ISB_EXCHANGE", exchange_of(256, "x"))
    monkeypatch.setenv("ISB_OUTBOX_DIR", str(outbox))
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    result = chat_ops_notification({}, workflow_name="W", workflow_version="1", task_name="T")

    assert result is not None and result.outbox_path is not None
    assert [path.name for path in outbox.glob("*.json")] == [result.outbox_path.name]
    assert "ISB_EXCHANGE" in caplog.text and "255 bytes" in caplog.text
    assert "lost" not in caplog.text.lower()
