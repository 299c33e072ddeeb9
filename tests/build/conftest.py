"""Fixtures of the build tests: the CLI in a subprocess (``cli``), fixture pipelines in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.build_cli import FIXTURES
from helpers.build_cli import Cli
from helpers.task_modules import clean_environment


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """Where the example and fixture tasks of this test write (DKIST_EXAMPLE_SCRATCH, BUILD_FIXTURE_SCRATCH)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    return folder


@pytest.fixture
def cli(tmp_path: Path, scratch: Path) -> Cli:
    """``dkist-processing-core`` in a subprocess, working folder ``tmp_path/cwd``."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = clean_environment(FIXTURES)
    env = {key: value for key, value in env.items() if not key.startswith("AIRFLOW")}
    env.update(
        DKIST_EXAMPLE_SCRATCH=str(scratch),
        BUILD_FIXTURE_SCRATCH=str(scratch),
        ISB_OUTBOX_DIR=str(tmp_path / "isb-outbox"),
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
    )
    return Cli(env, workdir)


@pytest.fixture
def fixture_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The fixture pipelines importable in this process; Airflow (DagBag) kept out of ~/airflow."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    if not os.environ.get("AIRFLOW_HOME"):
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.delenv("BUILD_VERSION", raising=False)
    yield
