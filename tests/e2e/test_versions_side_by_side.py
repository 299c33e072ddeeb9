"""One workflow at two versions in one DAGs folder: each DAG run installs and runs its own release.

The test pipeline is built as 1.0.0 and 2.0.0 (both wheels in one wheelhouse) and its workflows
are exported with BUILD_VERSION=1.0.0 and =2.0.0 into the same folder. The task records the
release stamped into the code it ran and the version in the installed distribution's metadata.
"""

from __future__ import annotations

import json

import pytest
from e2e.support import FIXTURE_DISTRIBUTION
from e2e.support import FIXTURE_VERSIONS

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

WORKFLOW = "E2E_Versioned"


def test_both_versions_are_exported_into_one_folder(airflow_site):
    for version in FIXTURE_VERSIONS:
        source = (airflow_site.dags / f"{WORKFLOW}_{version}.py").read_text()
        assert f"'{FIXTURE_DISTRIBUTION}[frozen]=={version}'" in source


def test_each_dag_run_installs_and_runs_its_own_version(e2e):
    wheels = sorted(
        path.name for path in e2e.release.wheelhouse.glob("dkist_processing_e2e_fixture-*.whl")
    )
    assert wheels == [
        f"dkist_processing_e2e_fixture-{version}-py3-none-any.whl" for version in FIXTURE_VERSIONS
    ]
    recipe_run_ids = {version: 900 + index for index, version in enumerate(FIXTURE_VERSIONS)}

    runs = {
        version: e2e.run_dag(f"{WORKFLOW}_{version}", {"recipe_run_id": recipe_run_ids[version]})
        for version in reversed(FIXTURE_VERSIONS)  # newest first: nothing depends on the order
    }

    for version, run in runs.items():
        assert run.state == "success", run.tail()
        assert run.task_states == {"ReportVersion": "success"}, run.tail()
        assert (
            f"{FIXTURE_DISTRIBUTION}=={version}" in run.output
        )  # the packages event of the task venv
        others = [other for other in FIXTURE_VERSIONS if other != version]
        for other in others:
            assert f"{FIXTURE_DISTRIBUTION}=={other}" not in run.output, run.tail()
        record_file = (
            e2e.records
            / f"recipe-run-{recipe_run_ids[version]}"
            / f"{WORKFLOW}_{version}.ReportVersion.json"
        )
        record = json.loads(record_file.read_text())
        assert record["release"] == version  # the code that ran is that release's
        assert record["installed"] == version  # and so is the installed distribution
        assert (record["workflow_name"], record["workflow_version"]) == (WORKFLOW, version)
        assert record["recipe_run_id"] == recipe_run_ids[version]
        # it ran from the task's throw-away venv under the run's TMPDIR, not from this checkout
        assert record["module_file"].startswith(str(e2e.tmp)), record
        assert record["python"].startswith(str(e2e.tmp)), record
    assert e2e.venvs_left() == []

    roots = [span for span in e2e.receiver.spans() if span.name == f"{WORKFLOW}.ReportVersion"]
    assert sorted(
        (span.attributes["workflow.version"], span.attributes["recipe.run.id"]) for span in roots
    ) == sorted(recipe_run_ids.items())
