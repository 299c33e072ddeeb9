"""Outbox entries that must never hold back the others: each kind plants one under a final name.

An outbox entry is a file named ``<20 digits>-<pid>-<32 hex>.json`` holding a JSON envelope (see
``dkist_processing_core.isb_outbox``). Every kind here is something a drainer can meet on disk
(a crash, a hand edit, another program, an older or newer writer) and that no broker can ever
accept; :data:`HOSTILE_KINDS` maps a name to a function that writes it at a given path.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HOSTILE_KINDS", "entry_name", "good_envelope", "write_envelope"]


def entry_name(order: int) -> str:
    """A final outbox name that sorts by ``order``."""
    return f"{order:020d}-1-{uuid.uuid4().hex}.json"


def good_envelope(
    body: dict[str, Any] | None = None, message_id: str | None = None
) -> dict[str, Any]:
    message_id = message_id or uuid.uuid4().hex
    return {
        "format": 1,
        "message_id": message_id,
        "created_ns": 1_700_000_000_000_000_000,
        "exchange": "x",
        "routing_key": "k",
        "body": {"conversationId": message_id, **(body or {})},
    }


def write_envelope(path: Path, envelope: Any) -> None:
    path.write_text(json.dumps(envelope, ensure_ascii=False), encoding="utf-8")


def _with(**fields: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        envelope = good_envelope()
        envelope.update(fields)
        write_envelope(path, envelope)

    return write


def _raw(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _directory(path: Path) -> None:
    path.mkdir()
    write_envelope(path / "inside.json", good_envelope())


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink(path: Path) -> None:
    # Points at a perfectly good envelope outside the outbox: still not an entry of this outbox.
    outside = path.parent.parent / f"outside-{uuid.uuid4().hex}.json"
    write_envelope(outside, good_envelope())
    path.symlink_to(outside)


def _dangling_symlink(path: Path) -> None:
    path.symlink_to(path.parent / "does-not-exist")


def _oversized(path: Path) -> None:
    write_envelope(path, good_envelope({"padding": "x" * (1 << 20)}))


def _without_field(name: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        envelope = good_envelope()
        del envelope[name]
        write_envelope(path, envelope)

    return write


HOSTILE_KINDS: dict[str, Callable[[Path], None]] = {
    "empty-file": _raw(b""),
    "not-json": _raw(b"{not json"),
    "truncated-json": _raw(b'{"format": 1, "body": {"conversationId": "ab'),
    "invalid-utf8": _raw(b'{"format": 1, "body": {"x": "\xff\xfe"}}'),
    "json-array": _raw(b"[1, 2, 3]"),
    "json-null": _raw(b"null"),
    "deeply-nested": _raw(
        b'{"format": 1, "body": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    ),
    "huge-integer": _raw(b'{"format": 1, "body": {"x": ' + b"9" * 5000 + b"}}"),
    "nan-in-body": _raw(b'{"format": 1, "message_id": "m", "body": {"x": NaN}}'),
    "format-2": _with(format=2),
    "format-true": _with(format=True),
    "format-missing": _without_field("format"),
    "body-missing": _without_field("body"),
    "body-a-list": _with(body=[1, 2]),
    "body-a-string": _with(body="text"),
    "created_ns-string": _with(created_ns="yesterday"),
    "created_ns-negative": _with(created_ns=-1),
    "created_ns-huge": _with(created_ns=10**30),
    "created_ns-float": _with(created_ns=1.5e18),
    "created_ns-bool": _with(created_ns=True),
    "message_id-256-bytes": _with(message_id="m" * 256),
    "message_id-multibyte-over-255": _with(message_id="☀" * 86),  # 258 bytes in UTF-8
    "message_id-int": _with(message_id=12345),
    "message_id-empty": _with(message_id=""),
    "message_id-lone-surrogate": _raw(b'{"format": 1, "message_id": "\\ud800", "body": {}}'),
    "exchange-a-list": _with(exchange=["x"]),
    "routing_key-too-long": _with(routing_key="k" * 300),
    "body-over-1-MiB": _oversized,
    "directory": _directory,
    "fifo": _fifo,
    "symlink-to-outside": _symlink,
    "dangling-symlink": _dangling_symlink,
}
