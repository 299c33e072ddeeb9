"""The envelope of an outbox entry: what it holds and the checks every entry passes.

An entry is checked when it is written and again when it is read (a file on disk may have been
changed, damaged or planted): ``format`` 1, a ``body`` no broker refuses, AMQP short strings of at
most 255 bytes. :func:`check_envelope` and :func:`parse_entry` raise :class:`InvalidMessageError`
naming the field and the limit; :mod:`dkist_processing_core.isb_outbox` re-exports them.
"""

from __future__ import annotations

import json
from typing import Any

from dkist_processing_core._text_rules import MAX_SHORT_STRING_BYTES
from dkist_processing_core._text_rules import check_short_string
from dkist_processing_core.errors import DKISTProcessingCoreError

__all__ = [
    "ENVELOPE_FORMAT",
    "MAX_BODY_BYTES",
    "MAX_FILE_BYTES",
    "MAX_SHORT_STRING_BYTES",
    "InvalidMessageError",
    "check_envelope",
    "parse_entry",
]

ENVELOPE_FORMAT = 1
#: Largest JSON body sent; a failure report is well under 1 KiB.
MAX_BODY_BYTES = 1 << 20
#: Largest entry file read: the body (no longer in the file than on the wire) plus the envelope.
MAX_FILE_BYTES = MAX_BODY_BYTES + 16384
# created_ns: nanoseconds since 1970 in a signed 64-bit integer (until the year 2262).
_MAX_CREATED_NS = 2**63 - 1


class InvalidMessageError(DKISTProcessingCoreError, ValueError):
    """A message that no broker can ever accept; the text names the field and the limit."""


# Its public home, as before the checks moved here (documentation, pickling, tracebacks).
InvalidMessageError.__module__ = "dkist_processing_core.isb_outbox"


def check_envelope(envelope: object) -> dict[str, Any]:
    """Return ``envelope`` if it can be stored and sent, else raise :class:`InvalidMessageError`.

    ``format`` must be 1 and ``body`` a JSON object in strict JSON (no NaN or infinity, valid
    Unicode) of at most :data:`MAX_BODY_BYTES` bytes as sent. Optional fields: ``message_id``
    (1 to 255 bytes of UTF-8), ``created_ns`` (an integer from 0 to 2**63 - 1), ``exchange`` and
    ``routing_key`` (at most 255 bytes of UTF-8; kept for inspection). Other fields are ignored.
    """
    if not isinstance(envelope, dict):
        raise InvalidMessageError(f"the envelope is a JSON {_json_type(envelope)}, not an object")
    version = envelope.get("format")
    if type(version) is not int or version != ENVELOPE_FORMAT:
        raise InvalidMessageError(
            f"field 'format' is {version!r:.40}; this version reads format {ENVELOPE_FORMAT}"
        )
    _check_body(envelope.get("body"))
    if envelope.get("message_id") is not None:
        _check_short_string("message_id", envelope["message_id"], allow_empty=False)
    for name in ("exchange", "routing_key"):
        if envelope.get(name) is not None:
            _check_short_string(name, envelope[name], allow_empty=True)
    created_ns = envelope.get("created_ns")
    if created_ns is not None and not (
        type(created_ns) is int and 0 <= created_ns <= _MAX_CREATED_NS
    ):
        raise InvalidMessageError(
            "field 'created_ns' must be an integer from 0 to 2**63 - 1 (nanoseconds since 1970), "
            f"got {created_ns!r:.40}"
        )
    return envelope


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "number" if isinstance(value, int | float) else type(value).__name__


def _check_short_string(name: str, value: object, *, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise InvalidMessageError(f"field {name!r} must be a string, got a {_json_type(value)}")
    try:
        check_short_string(value, f"field {name!r}", allow_empty=allow_empty)
    except ValueError as error:
        raise InvalidMessageError(str(error)) from None


def _check_body(body: object) -> None:
    if not isinstance(body, dict):
        raise InvalidMessageError(f"field 'body' must be a JSON object, got a {_json_type(body)}")
    try:
        sent = json.dumps(body, allow_nan=False)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # as stored: a lone surrogate fails
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidMessageError(f"field 'body' is not strict JSON: {error}") from None
    if len(sent) > MAX_BODY_BYTES:
        raise InvalidMessageError(
            f"field 'body' is {len(sent)} bytes of JSON; at most {MAX_BODY_BYTES} are sent"
        )


def parse_entry(data: bytes) -> object:
    """The JSON value of an entry file's bytes; InvalidMessageError if it is not one."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidMessageError("the file is not UTF-8 text") from None
    except RecursionError:
        raise InvalidMessageError("the file's JSON is nested too deeply") from None
    except ValueError as error:
        raise InvalidMessageError(f"the file is not JSON ({error})") from None
