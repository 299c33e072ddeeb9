"""Fixtures every test folder shares: one harness per resource, registered here once.

- ``helpers.core_environment``: ``core_env``, ``task_env`` (a clean product environment);
- ``helpers.dag_runs``: ``migrated_airflow_db`` (DAG runs with ``dag.test()``: ``run_dag``);
- ``helpers.in_memory_telemetry``: ``in_memory_telemetry`` (SDK providers with in-memory exporters);
- ``helpers.otlp_receiver``: ``otlp_receiver`` (a real OTLP gRPC receiver on a port of its own);
- ``helpers.rabbitmq``: ``names`` (an exchange and queue of the test's own on the real broker);
- ``helpers.temp_dirs``: ``shared_tmp`` (a folder common to all xdist workers);
- ``helpers.wheelhouse``: ``example_wheelhouse`` (core-task and the example pipeline, offline).

The product reads its configuration once per process (``core_configuration()``); a test that
changes the environment must not leave a configuration read under its variables to the next test
of the same xdist worker, so the cache is forgotten around every test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dkist_processing_core.config import reset_core_configuration

pytest_plugins = [
    "helpers.core_environment",
    "helpers.dag_runs",
    "helpers.in_memory_telemetry",
    "helpers.otlp_receiver",
    "helpers.rabbitmq",
    "helpers.temp_dirs",
    "helpers.wheelhouse",
]


@pytest.fixture(autouse=True)
def _fresh_core_configuration() -> Iterator[None]:
    reset_core_configuration()
    yield
    reset_core_configuration()
