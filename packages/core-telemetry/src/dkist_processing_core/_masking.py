"""Masking of secrets in settings: which field names hold one, and masked dumps and reprs.

A field is secret when its name contains ``pass``, ``secret`` or ``token`` (the previous product's
rule), at any depth of a client's nested models. Masking never changes the settings themselves,
only what is printed or exported.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["SECRET_MASK", "MaskedRepr", "is_secret_field", "masked"]

SECRET_MASK = "**********"
_SECRET_MARKERS = ("pass", "secret", "token")


def is_secret_field(name: str) -> bool:
    """True for field names that hold a secret (contain pass, secret or token)."""
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
        return {key: masked(item, dumped[key]) for key, item in zip(dumped, value.values(), strict=True)}
    if isinstance(value, list | tuple) and isinstance(dumped, list) and len(value) == len(dumped):
        return [masked(item, dumped_item) for item, dumped_item in zip(value, dumped, strict=True)]
    return dumped


class MaskedRepr:
    """Repr of a value holding models (a client's nested settings) with their secret fields masked."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @classmethod
    def wrap(cls, value: Any) -> Any:
        """``value`` itself, or a MaskedRepr of it when it may hold models."""
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
            return "{" + ", ".join(f"{key!r}: {MaskedRepr.wrap(item)!r}" for key, item in value.items()) + "}"
        items = ", ".join(repr(MaskedRepr.wrap(item)) for item in value)
        return f"[{items}]" if isinstance(value, list) else f"({items}{',' if len(value) == 1 else ''})"

    __str__ = __repr__
