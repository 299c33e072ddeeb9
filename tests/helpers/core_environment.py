"""Fixtures that give a test a clean dkist-processing-core environment in this process.

``core_env``: none of the product's variables set, the cached configuration forgotten before and
after the test, telemetry providers and logging set up by the test undone afterwards. Set
variables with ``core_env.setenv(...)`` (it is pytest's ``monkeypatch``).

``task_env``: ``core_env`` plus ``MAX_FILE_DESCRIPTORS`` equal to the current soft limit, so that
constructing a task in-process does not change the limit of the pytest worker.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

import pytest
from dkist_processing_core import config
from dkist_processing_core import telemetry
from dkist_processing_core.logging import reset_logging

from helpers.task_modules import clean_environment

__all__ = ["core_env", "task_env"]


@pytest.fixture
def core_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    kept = clean_environment()
    for key in list(os.environ):
        if key not in kept:
            monkeypatch.delenv(key)
    monkeypatch.setattr(config, "_core_configuration", None)
    telemetry.reset_telemetry()
    try:
        yield monkeypatch
    finally:
        telemetry.reset_telemetry()
        reset_logging()


@pytest.fixture
def task_env(core_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    core_env.setenv("MAX_FILE_DESCRIPTORS", str(soft if soft != resource.RLIM_INFINITY else 1024))
    return core_env
