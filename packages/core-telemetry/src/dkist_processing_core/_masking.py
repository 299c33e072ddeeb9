"""Masking of secrets in settings: which field names hold one, and masked dumps and reprs.

A field is secret when its name contains ``pass``, ``secret`` or ``token`` (the previous product's
rule) or ``key``, ``credential`` or ``private``, at any depth of a client's nested models; and the
user-info part of any URL-like text (``scheme://user:password@host``) is masked wherever it appears.
Masking never changes the settings themselves, only what is printed or exported.
"""

from __future__ import annotations

from typing import Any

from dkist_processing_core._text_rules import SECRET_MASK
from dkist_processing_core._text_rules import mask_url_user_info
from pydantic import BaseModel

__all__ = ["SECRET_MASK", "MaskedRepr", "is_secret_field", "mask_url_user_info", "masked"]

_SECRET_MARKERS = ("pass", "secret", "token", "key", "credential", "private")


def is_secret_field(name: str) -> bool:
    """True for field names that hold a secret (contain pass, secret, token, key, credential or private)."""
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def masked(value: Any, dumped: Any) -> Any:
    """``dumped`` (the dump of ``value``) with the secret fields of every model in it masked."""
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        return {
            name: SECRET_MASK if is_secret_field(name) else masked(getattr(value, name, None), item)
            for name, item in dumped.items()
        }
    if isinstance(value, dict) and isinstance(dumped, dict) and len(value) == len(dumped):
        return {
            _masked_key(key): masked(item, dumped[key])
            for key, item in zip(dumped, value.values(), strict=True)
        }
    if isinstance(value, list | tuple) and isinstance(dumped, list) and len(value) == len(dumped):
        return [masked(item, dumped_item) for item, dumped_item in zip(value, dumped, strict=True)]
    if isinstance(dumped, str):
        return mask_url_user_info(dumped)
    if isinstance(dumped, dict):
        return {_masked_key(key): masked(None, item) for key, item in dumped.items()}
    if isinstance(dumped, list):
        return [masked(None, item) for item in dumped]
    return dumped


def _masked_key(key: Any) -> Any:
    return mask_url_user_info(key) if isinstance(key, str) else key


class MaskedRepr:
    """Repr of a value holding models (a client's nested settings) with their secret fields masked."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @classmethod
    def wrap(cls, value: Any) -> Any:
        """``value`` itself, or a MaskedRepr of it when it may hold models or URLs with user-info."""
        if isinstance(value, str):
            return mask_url_user_info(value)
        return cls(value) if isinstance(value, BaseModel | dict | list | tuple) else value

    def __repr__(self) -> str:
        value = self.value
        if isinstance(value, BaseModel):
            fields = ", ".join(
                f"{name}={SECRET_MASK if is_secret_field(name) else MaskedRepr.wrap(getattr(value, name))!r}"
                for name, info in type(value).model_fields.items()
                if info.repr
            )
            return f"{type(value).__name__}({fields})"
        if isinstance(value, dict):
            return (
                "{"
                + ", ".join(
                    f"{_masked_key(key)!r}: {MaskedRepr.wrap(item)!r}"
                    for key, item in value.items()
                )
                + "}"
            )
        items = ", ".join(repr(MaskedRepr.wrap(item)) for item in value)
        return (
            f"[{items}]"
            if isinstance(value, list)
            else f"({items}{',' if len(value) == 1 else ''})"
        )

    __str__ = __repr__
