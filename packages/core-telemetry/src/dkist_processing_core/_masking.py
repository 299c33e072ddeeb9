"""The one masking rule of the settings: what a repr, a log line or a dump may not show.

An entry whose name contains ``pass``, ``secret`` or ``token`` (the previous product's rule) or
``key``, ``credential`` or ``private`` is a secret, whether it is a field of a model (a client's
nested settings included) or a key of a mapping; so is the user-info part of every URL in any
text (``scheme://user:password@host``). :func:`masked` applies the rule at any depth and returns a
copy; the settings themselves never change.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

__all__ = ["SECRET_MASK", "is_secret_field", "masked"]

SECRET_MASK = "**********"
_SECRET_MARKERS = ("pass", "secret", "token", "key", "credential", "private")
_URL_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]+@")


def is_secret_field(name: str) -> bool:
    """True for names that hold a secret (contain pass, secret, token, key, credential or private)."""
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def masked(value: Any) -> Any:
    """``value`` with every secret in it masked; models stay models (of their own class)."""
    if isinstance(value, BaseModel):
        fields = masked({name: getattr(value, name) for name in type(value).model_fields})
        return value.model_construct(value.model_fields_set, **fields)
    if isinstance(value, dict):
        return {
            masked(key): SECRET_MASK
            if isinstance(key, str) and is_secret_field(key)
            else masked(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [masked(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, str):
        return _URL_USER_INFO.sub(lambda match: f"{match.group('scheme')}{SECRET_MASK}@", value)
    return value
