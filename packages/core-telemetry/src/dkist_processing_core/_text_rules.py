"""Rules for text the product sends elsewhere: host names, AMQP short strings, user-info in URLs.

One rule each, used by the settings (in pydantic validators) and by ``IsbTarget`` (which must not
import pydantic), so both refuse the same values with the same words. Standard library only.
No message ever contains the value it refuses: a refused value may hold a password.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

__all__ = [
    "CREDENTIALS_HINT",
    "MAX_SHORT_STRING_BYTES",
    "SECRET_MASK",
    "check_credential",
    "check_host",
    "check_name",
    "check_service_name",
    "check_short_string",
    "has_user_info",
    "host_for_connecting",
    "host_in_url",
    "mask_url_user_info",
]

SECRET_MASK = "**********"
#: AMQP 0-9-1 short strings (exchange, queue, routing key, virtual host, message id) hold at most
#: 255 bytes, counted in UTF-8.
MAX_SHORT_STRING_BYTES = 255
#: Where the interservice bus's credentials belong instead of an address.
CREDENTIALS_HINT = (
    "user names and passwords do not belong in an address: the interservice bus takes them "
    "from ISB_USERNAME and ISB_PASSWORD"
)
_MAX_HOST_NAME = 253
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_URL_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]+@")


def has_user_info(text: str) -> bool:
    """True if ``text`` holds an ``@``, literally or percent-encoded (``user:password@host``)."""
    return "@" in text or "@" in unquote(text)


def check_host(value: object, what: str) -> str:
    """``value`` if it is a host name or an IP address (IPv6 also in brackets), else ValueError.

    A host name is ASCII labels of letters, digits, ``-`` and ``_`` joined by dots (a final dot
    allowed), at most 253 characters. Nothing else: no scheme, user-info, port, path or spaces.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, a host name or an IP address")
    if has_user_info(value):
        raise ValueError(f"{what} must be a host name or an IP address; {CREDENTIALS_HINT}")
    if _is_ip_address(value) or _is_host_name(value):
        return value
    raise ValueError(
        f"{what} must be a host name or an IP address (such as rabbitmq.internal, 10.0.0.5 or "
        "::1), without scheme, port, path or spaces"
    )


def _is_ip_address(text: str) -> bool:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if "." in text and ":" not in text:
            return False  # brackets are for IPv6 only
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_host_name(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= _MAX_HOST_NAME and all(
        _HOST_LABEL.fullmatch(label) for label in name.split(".")
    )


def host_for_connecting(host: str) -> str:
    """The host as sockets take it: an IPv6 address without its brackets."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_in_url(host: str) -> str:
    """The host as a URL or ``host:port`` writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_service_name(value: object, what: str) -> str:
    """A ``MESH_CONFIG`` key: letters, digits, ``.``, ``_`` and ``-``, 1-253 characters."""
    if isinstance(value, str) and _SERVICE_NAME.fullmatch(value):
        return value
    raise ValueError(
        f"{what} keys are service names (letters, digits, '.', '_' and '-', such as "
        "interservice-bus); one is not"
    )


def check_short_string(value: object, what: str, *, allow_empty: bool = True) -> str:
    """``value`` if it fits an AMQP short string (at most 255 bytes of UTF-8), else ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    size = _utf8_size(value, what)
    if size > MAX_SHORT_STRING_BYTES or (size == 0 and not allow_empty):
        low = 0 if allow_empty else 1
        raise ValueError(
            f"{what} is {size} bytes of UTF-8; AMQP carries {low} to {MAX_SHORT_STRING_BYTES} "
            "bytes (an AMQP short string)"
        )
    return value


def check_name(value: object, what: str) -> str:
    """A name that log lines print (exchange, user): valid text without control characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    _utf8_size(value, what)
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not hold control characters (newlines, NUL, escapes)")
    return value


def check_credential(value: object, what: str) -> str:
    """A password: any text but NUL, which SASL PLAIN uses to separate user and password."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    _utf8_size(value, what)
    if "\x00" in value:
        raise ValueError(f"{what} must not hold a NUL character (SASL PLAIN separates with it)")
    return value


def _utf8_size(value: str, what: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (undecodable bytes?)") from None


def mask_url_user_info(text: str) -> str:
    """``text`` with the user-info of every URL in it masked: ``https://**********@host/...``."""
    return _URL_USER_INFO.sub(lambda match: f"{match.group('scheme')}{SECRET_MASK}@", text)
