"""Property: random and malformed outbox entries next to good ones, drained by a real flush.

Against the real RabbitMQ: every good entry is delivered exactly once per flush run, every entry
that can never be sent is moved to ``rejected/``, and an entry with random field values is one or
the other (delivered with its body intact, or moved aside), never left behind.
"""

from __future__ import annotations

import collections
import json
import os
import uuid
from pathlib import Path

import pytest
from dkist_processing_core.isb import flush_outbox
from dkist_processing_core.isb_outbox import Outbox
from helpers.hostile_outbox import HOSTILE_KINDS
from helpers.hostile_outbox import entry_name
from helpers.hostile_outbox import good_envelope
from helpers.hostile_outbox import write_envelope
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import isb_target
from helpers.rabbitmq import require_rabbitmq
from helpers.rabbitmq import unique_names
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ANY_FIELD = st.one_of(
    JSON_VALUES,
    st.integers(min_value=-(2**80), max_value=2**80),
    st.text(min_size=200, max_size=400),
)

good_entry = st.builds(
    lambda body, via_put: ("good", body, via_put),
    st.dictionaries(st.text(max_size=15), JSON_VALUES, max_size=5),
    st.booleans(),
)
hostile_entry = st.builds(
    lambda kind: ("hostile", kind, False), st.sampled_from(sorted(HOSTILE_KINDS))
)
random_bytes_entry = st.builds(lambda data: ("bytes", data, False), st.binary(max_size=200))
random_fields_entry = st.builds(
    lambda fields: ("fields", fields, False),
    # Each field mostly near its valid range (so that some of these are sendable), sometimes anything.
    st.fixed_dictionaries(
        {"format": st.one_of(st.just(1), st.just(1), ANY_FIELD)},
        optional={
            "message_id": st.one_of(st.text(min_size=0, max_size=300), ANY_FIELD),
            "created_ns": st.one_of(st.integers(min_value=-(2**66), max_value=2**66), ANY_FIELD),
            "exchange": st.one_of(st.text(max_size=260), ANY_FIELD),
            "routing_key": st.one_of(st.text(max_size=260), ANY_FIELD),
        },
    ),
)
ENTRIES = st.lists(
    st.one_of(good_entry, hostile_entry, random_bytes_entry, random_fields_entry),
    min_size=1,
    max_size=12,
)

TOTALS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module")
def names():
    require_rabbitmq()
    names = unique_names("outbox-property")
    yield names
    delete_names(names)
    print(f"\noutbox property totals: {dict(sorted(TOTALS.items()))}")


def _plant(folder: Path, order: int, entry: tuple) -> tuple[str, str, Path | None]:
    """Write one entry; return (its class, its marker, its path or None if put() named it)."""
    kind, value, via_put = entry
    marker = uuid.uuid4().hex
    if kind == "good":
        envelope = good_envelope({**value, "entry": marker})
        if via_put:
            return "good", marker, Outbox(folder).put(envelope)
        path = folder / entry_name(order)
        write_envelope(path, envelope)
        return "good", marker, path
    path = folder / entry_name(order)
    if kind == "hostile":
        HOSTILE_KINDS[value](path)
        return "bad", marker, path
    if kind == "bytes":
        path.write_bytes(value)
        return "bad", marker, path
    # Random field values around a body that carries the marker: sendable or not, never stuck.
    write_envelope(path, {"body": {"entry": marker}, **value})
    return "either", marker, path


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(entries=ENTRIES)
def test_every_good_entry_is_delivered_once_and_every_bad_one_moved_aside(
    names, tmp_path_factory, entries
):
    for kind, value, _ in entries:
        if kind == "bytes":  # random bytes that happen to be a valid envelope are not "bad"
            try:
                parsed = json.loads(value.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                continue
            assume(not (isinstance(parsed, dict) and parsed.get("format") == 1))
    folder = tmp_path_factory.mktemp("outbox")
    planted = [_plant(folder, order, entry) for order, entry in enumerate(entries, start=1)]
    target = isb_target(names, folder, publish_timeout=30.0)

    flushed = flush_outbox(target)

    good = [marker for cls, marker, _ in planted if cls == "good"]
    received = [d.json() for d in consume_all(names.queue, expected=len(good))]
    by_marker = collections.Counter(body.get("entry") for body in received)
    rejected_dir = folder / "rejected"
    rejected = set(os.listdir(rejected_dir)) if rejected_dir.is_dir() else set()
    assert flushed.remaining == 0 and Outbox(folder).pending() == []
    for cls, marker, path in planted:
        moved = path.name in rejected
        if cls == "good":
            assert by_marker[marker] == 1 and not moved, f"good entry {path.name}"
        elif cls == "bad":
            assert by_marker[marker] == 0 and moved, f"bad entry {path.name}"
        else:
            assert by_marker[marker] + moved == 1, f"entry {path.name}: {path}"
    assert sum(by_marker.values()) == len(received)  # nothing else arrived
    TOTALS.update(
        examples=1,
        entries=len(planted),
        good_sent=len(good),
        bad_planted=sum(cls == "bad" for cls, _, _ in planted),
        random_fields=sum(cls == "either" for cls, _, _ in planted),
        received=len(received),
        duplicated=sum(count - 1 for count in by_marker.values() if count > 1),
        moved_aside=len(rejected),
    )
