"""The checks of the settings beyond a field constraint, as annotated types, and their messages.

Every check raises ``ValueError`` with a message that never contains the value (pydantic then
names the variable), so nothing mistyped into a variable (a password in the wrong place) reaches a
log. Reading a variable can also fail where pydantic does not validate (JSON nested too deeply for
Python's parser, a path the system will not look at): those become ``ValueError`` as well, so
every bad configuration fails the same way (docs/decisions.md, "Configuration").
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from typing import Any
from urllib.parse import urlsplit

from dkist_processing_core import _text_rules as rules
from dkist_processing_core.isb_outbox import default_isb_outbox_dir
from pydantic import AfterValidator
from pydantic import BeforeValidator
from pydantic import Field
from pydantic import StringConstraints
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from pydantic_core import from_json
from pydantic_core import to_json
from pydantic_settings import NoDecode

__all__ = [
    "Endpoint",
    "ExchangeName",
    "InstrumentationNames",
    "LogLevel",
    "OutboxDir",
    "Password",
    "QueueType",
    "ServiceNames",
    "UrlPatterns",
    "UserName",
    "describe_validation_error",
    "isb_outbox_dir_from_environment",
    "json_decoder",
    "printable",
]

_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# A part of an error's location (a field name, a dict key, an index) shown as it is.
_PLAIN_LOCATION = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")


def printable(value: object) -> object:
    """``value`` if all its text, at any depth (keys too), is valid Unicode, else ValueError.

    The environment decodes bytes that are not UTF-8 to lone surrogates, which nothing can print
    or send later; pydantic's JSON serializer refuses them (and values nested too deeply).
    """
    try:
        to_json(value, fallback=lambda _: None)
    except PydanticSerializationError:
        raise ValueError("not valid UTF-8 text (undecodable bytes), or nested too deeply") from None
    return value


def json_decoder(decode: Callable[[str, Any, Any], Any]) -> Callable[[str, Any, Any], Any]:
    """A settings source's ``decode_complex_value`` with pydantic's JSON parser for ``json.loads``.

    ``json.loads`` fails with ``RecursionError`` (not a bad value) on JSON nested ~1,000 deep;
    pydantic's parser refuses more than 200 levels with a ``ValueError``, which pydantic-settings
    reports naming the variable. Fields it does not decode (``NoDecode``) stay as they are.
    """

    def decode_json(field_name: str, field: Any, value: Any) -> Any:
        if decode(field_name, field, "null") is not None:  # pydantic-settings leaves it as text
            return value
        try:
            return from_json(value)
        except (ValueError, TypeError):  # TypeError: text that is not UTF-8
            raise ValueError(
                f"environment variable {field_name.upper()}: value is not valid JSON (or is "
                "nested more than 200 levels deep)"
            ) from None

    return decode_json


def _log_level(value: str) -> str:
    # loguru reads LOGURU_LEVEL itself when it is imported and knows only these names, as
    # written: "debug", "10" or " INFO" make `import loguru` fail in every process.
    if value in _LOG_LEVELS:
        return value
    known = value.strip().upper()
    hint = f" (write {known})" if known in _LOG_LEVELS else ""
    raise ValueError(
        f"unknown log level; use one of {', '.join(_LOG_LEVELS)}, in capitals as loguru "
        f"reads this variable itself{hint}"
    )


def _endpoint(value: str | None) -> str | None:
    """An OTLP gRPC endpoint ``host:port`` or ``http(s)://host:port``; empty means not configured."""
    endpoint = (value or "").strip()
    if not endpoint:
        return None
    try:  # urlsplit drops control characters and more: the endpoint must be what it parsed
        url = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        rules.check_host(url.hostname, "the host")
        usable = (
            url.scheme in ("", "http", "https")
            and endpoint.removesuffix("/")
            == (f"{url.scheme}://" if url.scheme else "") + url.netloc
            and "@" not in url.netloc
            and not url.netloc.endswith(":")
            and url.port != 0
        )
    except ValueError:  # a port that is not a number in 0..65535, a host that is none
        usable = False
    if not usable:
        hint = "; credentials do not belong in it" if "@" in endpoint else ""
        raise ValueError(
            "not an OTLP gRPC endpoint; use host:port or http(s)://host:port with a port in "
            f"1..65535, e.g. localhost:4317{hint}"
        )
    return endpoint


def _instrumentation_names(value: object) -> object:
    """A JSON list (``["pika", "requests"]``) or OpenTelemetry's comma separated form."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return from_json(text)
        except (ValueError, TypeError):
            raise ValueError("value is not a valid JSON list of names") from None
    return [name.strip() for name in text.split(",") if name.strip()]


def _url_patterns(value: str) -> str:
    for pattern in value.split(","):
        try:
            re.compile(pattern.strip())
        except re.error as error:
            raise ValueError(f"an entry is not a regular expression: {error}") from None
    return value


def _outbox_dir(value: object) -> object:
    """An absolute folder (``~`` expanded) that is not a file; paths the system refuses to look
    at (too long, ``~user`` of no one) are refused here rather than failing later."""
    if not isinstance(value, str | Path):
        return value
    text = str(value)
    if not text.strip() or rules.CONTROL.search(text):
        raise ValueError("the outbox folder must be a path without control characters")
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


def _service_names(value: dict[str, Any]) -> dict[str, Any]:
    if not all(_SERVICE_NAME.fullmatch(key) for key in value):
        raise ValueError(
            "MESH_CONFIG keys are service names (letters, digits, '.', '_' and '-', such as "
            "interservice-bus); one is not"
        )
    return value


def _exchange(value: str) -> str:
    rules.check_short_string(value, "the exchange name", allow_empty=False)
    return rules.check_name(value, "the exchange name")


LogLevel = Annotated[str, AfterValidator(_log_level)]
# RabbitMQ's queue types, in any case (stored in lower case).
QueueType = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"(?i)^(classic|quorum|stream)$"
    ),
]
Endpoint = Annotated[str | None, AfterValidator(_endpoint)]
InstrumentationNames = Annotated[list[str], NoDecode, BeforeValidator(_instrumentation_names)]
UrlPatterns = Annotated[str, AfterValidator(_url_patterns)]
OutboxDir = Annotated[Path, BeforeValidator(_outbox_dir)]
ServiceNames = AfterValidator(_service_names)
# What goes on the wire to the broker (docs/decisions.md, "Interservice bus").
ExchangeName = Annotated[str, AfterValidator(_exchange)]
UserName = Annotated[
    str, Field(min_length=1), AfterValidator(lambda value: rules.check_name(value, "the user name"))
]
Password = Annotated[
    str,
    Field(min_length=1),
    AfterValidator(lambda value: rules.check_credential(value, "the password")),
]


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


def isb_outbox_dir_from_environment() -> Path:
    """``ISB_OUTBOX_DIR`` if that variable alone is usable, else the default folder.

    For failure reports while the rest of the configuration cannot be read: they are kept there
    until ``dkist-processing-core isb flush`` runs with a configuration that works.
    """
    value = os.environ.get("ISB_OUTBOX_DIR")
    if value is None:  # pydantic-settings reads the name in any case
        value = next((v for k, v in os.environ.items() if k.upper() == "ISB_OUTBOX_DIR"), None)
    try:
        return Path(str(_outbox_dir(value))) if value is not None else default_isb_outbox_dir()
    except ValueError:
        return default_isb_outbox_dir()
