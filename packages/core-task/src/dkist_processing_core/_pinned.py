"""Distribution names and the pinned requirement ``dist[extras]==version``: the one definition.

The DAG file writes the pinned requirement, the worker reads it (:func:`parse_pinned`) and caches
only public releases; Node, the wheelhouse and the notebook Dockerfile check names here too. Versions
are read by ``packaging.version`` (PEP 440). Names follow the one-line rules of PEP 508 and PEP 503:
``packaging.utils`` would cost the worker 8 ms per task start (docs/decisions.md, issue 24).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from typing import NamedTuple

if TYPE_CHECKING:
    from packaging.version import Version

__all__ = [
    "Pinned",
    "canonical_name",
    "is_name",
    "is_public_release",
    "parse_pinned",
    "parse_version",
]

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_NAME_RE = re.compile(_NAME, re.ASCII)
# One word for pip and uv: no marker, URL, wildcard or space.
_PINNED_RE = re.compile(rf"({_NAME})(?:\[({_NAME}(?:,{_NAME})*)\])?==([A-Za-z0-9.!+_-]+)", re.ASCII)


class Pinned(NamedTuple):
    """A requirement ``name[extras]==version``, its parts as written."""

    name: str
    extras: tuple[str, ...]
    version: str


def canonical_name(name: str) -> str:
    """PEP 503's normal form of a distribution or extra name: ``Foo.Bar_baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_name(value: object) -> bool:
    """A PEP 508 name: ASCII letters, digits, ``.``, ``_``, ``-``, a letter or digit at each end."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def parse_version(text: str) -> Version | None:
    """``text`` as a PEP 440 version, or None."""
    from packaging.version import InvalidVersion
    from packaging.version import Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def parse_pinned(text: str) -> Pinned | None:
    """``text`` as ``name[extras]==version`` with a PEP 440 version, or None for anything else."""
    match = _PINNED_RE.fullmatch(text)
    if match is None or parse_version(match[3]) is None:
        return None
    return Pinned(match[1], tuple(match[2].split(",")) if match[2] else (), match[3])


def is_public_release(version: str) -> bool:
    """A PEP 440 version that is not a development release (``.devN``) and has no local part
    (``+x``): the only kind whose files cannot change under the same version."""
    parsed = parse_version(version)
    return parsed is not None and not parsed.is_devrelease and parsed.local is None
