"""Fixtures every test folder shares.

The product reads its configuration once per process (``core_configuration()``); a test that
changes the environment must not leave a configuration read under its variables to the next test
of the same xdist worker, so the cache is forgotten around every test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dkist_processing_core.config import reset_core_configuration


@pytest.fixture(autouse=True)
def _fresh_core_configuration() -> Iterator[None]:
    reset_core_configuration()
    yield
    reset_core_configuration()
