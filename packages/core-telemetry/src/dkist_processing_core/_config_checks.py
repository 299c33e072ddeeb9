"""Checks of the configuration that need more than a field constraint, and its error messages.

Every check raises ``ValueError`` with a message that never contains the value (pydantic then
names the variable), so nothing a user mistyped into a variable (a password in the wrong place)
reaches a log. Reading a variable can fail in ways pydantic does not turn into a validation error
(``RecursionError`` on deeply nested JSON, ``OSError`` or ``RuntimeError`` on a path the system
cannot look at): those are caught here and made ``ValueError`` as well, so that every bad
configuration fails the same way (docs/decisions.md, "Configuration").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dkist_processing_core.isb_outbox import default_isb_outbox_dir
from pydantic import ValidationError
from pydantic_settings import NoDecode
from pydantic_settings import SettingsError

__all__ = [
    "MAX_JSON_DEPTH",
    "bounded_decoder",
    "check_endpoint",
    "check_outbox_dir",
    "check_unicode",
    "check_url_patterns",
    "describe_settings_error",
    "describe_validation_error",
    "instrumentation_names",
    "isb_outbox_dir_from_environment",
    "json_depth",
]

#: Deepest nesting of arrays and objects in a JSON variable. The settings need 3 levels; Python's
#: parser fails with RecursionError near 1,000.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ENDPOINT = re.compile(
    r"(?:https?://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?/?"
)
# A part of an error's location (a field name, a dict key, an index) shown as it is.
_PLAIN_LOCATION = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")


_TOO_DEEP = f"JSON nested more than {MAX_JSON_DEPTH} levels deep"


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in ``text`` outside JSON strings (without parsing it)."""
    depth = deepest = 0
    for bracket in _BRACKETS.finditer(_JSON_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _check_depth(text: str) -> None:
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(_TOO_DEEP)


def bounded_decoder(decode: Callable[[str, Any, Any], Any]) -> Callable[[str, Any, Any], Any]:
    """A settings source's ``decode_complex_value`` that refuses JSON nested too deeply first."""

    def decode_bounded(field_name: str, field: Any, value: Any) -> Any:
        raw = any(item is NoDecode for item in getattr(field, "metadata", ()))
        if isinstance(value, str) and not raw:
            _check_depth(value)
        return decode(field_name, field, value)

    return decode_bounded


def check_unicode(value: object) -> object:
    """``value`` if every text in it (at any depth, keys too) is valid Unicode, else ValueError.

    The environment decodes bytes that are not UTF-8 to lone surrogates, which nothing can print
    or send later (``dkist-processing-core config`` failed on them).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("not valid UTF-8 text (undecodable bytes)") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return value


def instrumentation_names(value: object) -> object:
    """A JSON list (``["pika", "requests"]``) or OpenTelemetry's comma separated form (``pika,requests``)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        _check_depth(text)
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError("value is not a valid JSON list of names") from None
    return [name.strip() for name in text.split(",") if name.strip()]


def check_endpoint(value: object) -> object:
    """An OTLP gRPC endpoint ``host:port`` or ``http(s)://host:port``; empty means not configured."""
    if not isinstance(value, str):
        return value
    endpoint = value.strip()
    if not endpoint:
        return None
    match = _ENDPOINT.fullmatch(endpoint)
    if match is None:
        hint = "; credentials do not belong in it" if "@" in endpoint else ""
        raise ValueError(
            "not an OTLP gRPC endpoint; use host:port or http(s)://host:port, e.g. "
            f"localhost:4317{hint}"
        )
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is not in 1..65535")
    return endpoint


def check_url_patterns(value: str) -> str:
    for pattern in value.split(","):
        try:
            re.compile(pattern.strip())
        except re.error as error:
            raise ValueError(f"an entry is not a regular expression: {error}") from None
    return value


def check_outbox_dir(value: object) -> object:
    """An absolute folder (``~`` expanded) that is not a file; paths the system refuses to look
    at (too long, ``~user`` of no one) are refused here rather than failing later."""
    if not isinstance(value, str | Path):
        return value
    text = str(value)
    if not text.strip():
        raise ValueError("the outbox folder must not be empty")
    if _CONTROL.search(text):
        raise ValueError("the outbox folder must not hold control characters")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~user" of no one, or "~" of a user without a home folder
        raise ValueError("'~' cannot be expanded here; give an absolute path") from None
    if not path.is_absolute():
        raise ValueError(
            "the outbox folder must be an absolute path (tasks run in changing working directories)"
        )
    try:
        not_a_folder = path.exists() and not path.is_dir()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"the path cannot be looked at ({reason})") from None
    if not_a_folder:
        raise ValueError("the path exists and is not a folder")
    return path


def describe_validation_error(error: ValidationError) -> str:
    """One readable message per bad variable, naming it in upper case, never echoing values."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        location = [_shown(part) for part in problem["loc"]]
        variable = location[0].upper() if location else "?"
        detail = ".".join(location[1:])
        where = f"{variable} ({detail})" if detail else variable
        message = " ".join(problem["msg"].split())  # one line, whatever a key held
        lines.append(f"environment variable {where}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def _shown(part: object) -> str:
    # A dict key comes from the variable's value: show it only if it is a plain name.
    text = str(part)
    return text if isinstance(part, int) or _PLAIN_LOCATION.fullmatch(text) else "(a key)"


def describe_settings_error(error: SettingsError) -> str:
    match = re.search(r'field "([^"]+)"', str(error))
    variable = match.group(1).upper() if match else "?"
    cause = error.__cause__
    problem = _TOO_DEEP if str(cause) == _TOO_DEEP else "value is not valid JSON"
    return f"invalid configuration: environment variable {variable}: {problem}"


def isb_outbox_dir_from_environment() -> Path:
    """``ISB_OUTBOX_DIR`` if that variable alone is usable, else the default folder.

    For failure reports while the rest of the configuration cannot be read: they are kept there
    until ``dkist-processing-core isb flush`` runs with a configuration that works.
    """
    value = os.environ.get("ISB_OUTBOX_DIR")
    if value is None:  # pydantic-settings reads the name in any case
        value = next((v for k, v in os.environ.items() if k.upper() == "ISB_OUTBOX_DIR"), None)
    if value is not None:
        try:
            return Path(str(check_outbox_dir(value)))
        except ValueError:
            pass
    return default_isb_outbox_dir()
