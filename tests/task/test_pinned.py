"""Names and the pinned requirement ``dist[extras]==version`` (``_pinned``): one definition for all."""

from __future__ import annotations

import pytest
from dkist_processing_core._pinned import Pinned
from dkist_processing_core._pinned import canonical_name
from dkist_processing_core._pinned import is_name
from dkist_processing_core._pinned import is_public_release
from dkist_processing_core._pinned import parse_pinned
from dkist_processing_core._pinned import parse_version


@pytest.mark.parametrize(
    ("text", "pinned"),
    [
        ("dkist-processing-x[frozen]==1.0.0", Pinned("dkist-processing-x", ("frozen",), "1.0.0")),
        ("x[frozen,GPU]==2.1rc1", Pinned("x", ("frozen", "GPU"), "2.1rc1")),
        ("x==1!2.0+local", Pinned("x", (), "1!2.0+local")),
        ("x==1.0", Pinned("x", (), "1.0")),
    ],
)
def test_a_pinned_requirement_is_read_into_its_parts_as_written(text, pinned):
    assert parse_pinned(text) == pinned


@pytest.mark.parametrize(
    "text",
    [
        "x==dev",  # not PEP 440: pip and uv refuse it too
        "x==latest",
        "x>=1.0",
        "x==1.0.*",
        "x == 1.0",
        "x==1.0; python_version > '3'",
        "x @ file:///tmp/x",
        "-rfile",
        "x[frozen]==1.0\n",
        "x[]==1.0",
        "x[frozen]]==1.0",
        "\u212ax==1.0",  # the Kelvin sign, which case-insensitive matching takes for a k
        "",
    ],
)
def test_anything_else_is_not_a_pinned_requirement(text):
    assert parse_pinned(text) is None


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("gpu", True),
        ("a.b_c-d", True),
        ("9", True),
        ("-gpu", False),
        ("gpu.", False),
        ("gpu\n", False),
        ("g pu", False),
        ("\u212aelvin", False),
        ("", False),
        (None, False),
        (["gpu"], False),
    ],
)
def test_names_are_pep_508_names_in_ascii(value, valid):
    assert is_name(value) is valid


def test_names_compare_in_their_pep_503_form():
    assert canonical_name("Dkist_Processing.Core--Task") == "dkist-processing-core-task"


@pytest.mark.parametrize(
    ("version", "public"),
    [
        ("1.0.0", True),
        ("2.1rc1", True),
        ("1.0.post2", True),
        ("1!2.0", True),
        ("1.0.0.dev3", False),
        ("1.0.0-dev", False),
        ("1.0.0+local", False),
        ("dev", False),
    ],
)
def test_only_public_releases_are_public(version, public):
    assert is_public_release(version) is public


def test_versions_compare_as_pip_compares_them():
    assert parse_version("1.0") == parse_version("1.0.0")
    assert parse_version("not a version") is None
