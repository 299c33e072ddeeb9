"""Rules and limits for values the product hands to other systems: hosts, AMQP strings, seconds.

One rule each, used by the settings (as pydantic validators) and by ``IsbTarget`` (which must not
import pydantic), so both refuse the same values with the same words. Standard library only.
No message ever contains the value it refuses: a refused value may hold a password.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

__all__ = [
    "CONTROL",
    "MAX_SECONDS",
    "MAX_SHORT_STRING_BYTES",
    "check_credential",
    "check_host",
    "check_name",
    "check_short_string",
    "host_for_connecting",
    "host_in_url",
]

#: Upper bound of every time bound and delay the configuration holds (``ISB_PUBLISH_TIMEOUT``,
#: ``RETRY_CONFIG``'s delays, ``PIP_TIMEOUT``, ``isb flush --timeout``): larger values are a typo.
MAX_SECONDS = 3600
#: AMQP 0-9-1 short strings (exchange, queue, routing key, virtual host, message id) hold at most
#: 255 bytes, counted in UTF-8.
MAX_SHORT_STRING_BYTES = 255
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
#: C0 and C1 control characters and DEL: no name or path that log lines print may hold one.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_host(value: object, what: str) -> str:
    """``value`` if it is a host name or an IP address (IPv6 also in brackets), else ValueError.

    A host name is ASCII labels of letters, digits, ``-`` and ``_`` joined by dots (a final dot
    allowed), at most 253 characters. Nothing else: no scheme, user-info, port, path or spaces.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, a host name or an IP address")
    if "@" in unquote(value):
        raise ValueError(
            f"{what} must be a host name or an IP address; user names and passwords do not "
            "belong in an address: the interservice bus takes them from ISB_USERNAME and "
            "ISB_PASSWORD"
        )
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    name = value.removesuffix(".")
    try:  # brackets are for IPv6 only
        if ipaddress.ip_address(bare).version == 6 or bare == value:
            return value
    except ValueError:
        if 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(part) for part in name.split(".")):
            return value
    raise ValueError(
        f"{what} must be a host name or an IP address (such as rabbitmq.internal, 10.0.0.5 or "
        "::1), without scheme, port, path or spaces"
    )


def host_for_connecting(host: str) -> str:
    """The host as sockets take it: an IPv6 address without its brackets."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_in_url(host: str) -> str:
    """The host as a URL or ``host:port`` writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_short_string(value: object, what: str, *, allow_empty: bool = True) -> str:
    """``value`` if it fits an AMQP short string (at most 255 bytes of UTF-8), else ValueError."""
    text = _text(value, what)
    size = len(text.encode("utf-8"))
    low = 0 if allow_empty else 1
    if not low <= size <= MAX_SHORT_STRING_BYTES:
        raise ValueError(
            f"{what} is {size} bytes of UTF-8; AMQP carries {low} to {MAX_SHORT_STRING_BYTES} "
            "bytes (an AMQP short string)"
        )
    return text


def check_name(value: object, what: str) -> str:
    """A name that log lines print (exchange, user): valid text without control characters."""
    text = _text(value, what)
    if CONTROL.search(text):
        raise ValueError(f"{what} must not hold control characters (newlines, NUL, escapes)")
    return text


def check_credential(value: object, what: str) -> str:
    """A password: any text but NUL, which SASL PLAIN uses to separate user and password."""
    text = _text(value, what)
    if "\x00" in text:
        raise ValueError(f"{what} must not hold a NUL character (SASL PLAIN separates with it)")
    return text


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (undecodable bytes?)") from None
    return value
