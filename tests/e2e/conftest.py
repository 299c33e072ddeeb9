"""Fixtures of the end-to-end tests (the parts they hand out are described in ``support.py``).

- ``e2e_release`` (session, built once for all xdist workers): the wheelhouse and versioned sources;
- ``airflow_site`` (session): a migrated AIRFLOW_HOME with every exported DAG;
- ``e2e`` (per test): an OTLP receiver, a RabbitMQ exchange and folders of the test's own, and
  ``e2e.run_dag(dag_id, conf)`` = ``dag.test()`` in a subprocess (:mod:`helpers.dag_runs`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.support import E2E
from e2e.support import FAILURE_ROUTING_KEY
from e2e.support import AirflowSite
from e2e.support import Release
from e2e.support import discard_own_copies
from e2e.support import make_airflow_site
from e2e.support import produce_release
from helpers.dag_runs import airflow_home
from helpers.otlp_receiver import OtlpReceiver
from helpers.rabbitmq import IsbNames
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import require_rabbitmq
from helpers.rabbitmq import unique_names
from helpers.release import build_once


@pytest.fixture(scope="session")
def e2e_release(shared_tmp: Path) -> Release:
    return Release(build_once(shared_tmp, "e2e-release", produce_release))


@pytest.fixture(scope="session")
def airflow_site(
    tmp_path_factory: pytest.TempPathFactory, e2e_release: Release, migrated_airflow_db: Path
) -> AirflowSite:
    """A migrated AIRFLOW_HOME whose DAGs folder holds every exported workflow of both pipelines."""
    return make_airflow_site(
        airflow_home(tmp_path_factory.mktemp("e2e-airflow") / "home", migrated_airflow_db),
        tmp_path_factory.mktemp("e2e-export"),
        e2e_release,
    )


@pytest.fixture
def isb_names() -> Iterator[IsbNames]:
    """An exchange of this test's own, and a queue of its own bound with the failure routing key."""
    require_rabbitmq()
    names = unique_names("e2e")
    names = IsbNames(exchange=names.exchange, queue=names.queue, routing_key=FAILURE_ROUTING_KEY)
    declare_queue(names)
    try:
        yield names
    finally:
        delete_names(names)
        discard_own_copies(names.exchange)


@pytest.fixture(params=["uv", "pip"])
def e2e(
    airflow_site: AirflowSite,
    e2e_release: Release,
    isb_names: IsbNames,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[E2E]:
    """Every e2e test runs twice: with uv on the workers' PATH, and without (pip)."""
    with OtlpReceiver() as receiver:
        context = E2E(
            site=airflow_site,
            release=e2e_release,
            receiver=receiver,
            isb=isb_names,
            root=tmp_path,
            installer=request.param,
        )
        context.tmp.mkdir()
        yield context
