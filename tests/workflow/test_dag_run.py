"""An exported DAG run end to end by Airflow's ``dag.test()``: venv install, tasks, failure report."""

from __future__ import annotations

import json
import shutil

from dkist_processing_core import ResourceQueue
from dkist_processing_core import Workflow
from dkist_processing_core.worker import read_events
from dkist_processing_core.worker._cache import key_folders
from helpers.release import build_wheel


def test_dag_runs_each_task_in_a_fresh_venv_and_reports_the_failure(
    make_pipeline, example_wheelhouse, run_dag, tmp_path
):
    pipeline = make_pipeline(version="1.2.3")
    tasks = pipeline.tasks
    workflow = Workflow(
        input_data="l0",
        output_data="l1",
        category="e2e",
        workflow_package=pipeline.package,
        workflow_version="1.2.3",
    )
    workflow.add_node(tasks.Fetch)
    # "gpu" is not an extra of the pipeline, nor is "frozen": pip warns and installs anyway
    workflow.add_node(
        tasks.Calibrate,
        upstreams=tasks.Fetch,
        resource_queue=ResourceQueue.HIGH_MEMORY,
        pip_extras=["gpu"],
    )
    workflow.add_node(tasks.Explode, upstreams=tasks.Fetch)
    dag_file = workflow.export_dag(tmp_path / "dags")

    pipeline_wheels = tmp_path / "pipeline-wheels"
    pipeline_wheels.mkdir()
    build_wheel(pipeline.project_dir, pipeline_wheels)
    # The test process has the pipeline on sys.path; the worker venvs must get it from the wheel.
    shutil.rmtree(pipeline.source_dir)
    record = tmp_path / "record.txt"
    outbox = tmp_path / "outbox"

    result = run_dag(
        dag_file,
        {"recipe_run_id": 42},
        env={
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": f"{pipeline_wheels} {example_wheelhouse}",
            "WORKFLOW_TEST_RECORD": str(record),
            "NOMAD_ALLOC_ID": "alloc-7f3e",
            # the failure report goes to a closed port and ends up in the outbox within the bound
            "MESH_CONFIG": json.dumps(
                {"interservice-bus": {"mesh_address": "127.0.0.1", "mesh_port": 1}}
            ),
            "ISB_PUBLISH_TIMEOUT": "2",
            "ISB_OUTBOX_DIR": str(outbox),
        },
    )

    assert result.state == "failed", result.output[-5000:]
    assert result.task_states == {"Fetch": "success", "Calibrate": "success", "Explode": "failed"}
    lines = record.read_text().splitlines()
    assert lines[0] == "run Fetch 42 l0_to_l1_e2e 1.2.3"  # the upstream ran first
    # no rollback: a manual operation, as in the previous product
    assert sorted(lines[1:]) == [
        "run Calibrate 42 l0_to_l1_e2e 1.2.3",
        "run Explode 42 l0_to_l1_e2e 1.2.3",
    ]
    # what the worker logs (events in Airflow's task log): the task and its recipe run id, Nomad
    # variables, the installed distributions, the limits, the task's exit status
    output = result.output
    events = list(read_events(output))
    starts = sorted(
        (fields["task"], fields["recipe_run_id"]) for e, fields in events if e == "start"
    )
    assert starts == [(f"{pipeline.package}.tasks.{name}", 42) for name in sorted(result.tasks)]
    nomads = [fields for event, fields in events if event == "nomad"]
    assert [fields["NOMAD_ALLOC_ID"] for fields in nomads] == ["alloc-7f3e"] * 3
    assert "does not provide the extra 'frozen'" in output
    listings = [fields["distributions"] for event, fields in events if event == "packages"]
    assert len(listings) == 3
    assert all(f"{pipeline.distribution}==1.2.3" in listing for listing in listings)
    assert "Max open files" in output
    exits = sorted(
        (fields["task"], fields["status"]) for event, fields in events if event == "exit"
    )
    assert exits == [("Calibrate", 0), ("Explode", 1), ("Fetch", 0)]
    # every throw-away venv is gone
    assert list((tmp_path / "tmp").rglob("pyvenv.cfg")) == []
    # the failure callback reported Explode, and only Explode
    reports = [json.loads(path.read_text()) for path in outbox.rglob("*.json")]
    bodies = [report.get("body", report) for report in reports]
    assert [
        (body["taskName"], body["workflowName"], body["workflowVersion"]) for body in bodies
    ] == [("Explode", "l0_to_l1_e2e", "1.2.3")]
    assert bodies[0]["dagRunId"] == result.run_id


def test_tasks_of_one_version_share_one_cached_venv_and_versions_do_not(
    example_wheelhouse, run_dag, tmp_path
):
    """Through Airflow: with DKIST_VENV_CACHE_DIR, a version's first task builds, later ones reuse."""
    from dkist_processing_example.tasks import MyTask1
    from dkist_processing_example.tasks import MyTask2
    from helpers.worker_script import cache_outcomes
    from helpers.worker_script import installers_used
    from helpers.worker_script import worker_path

    dags = tmp_path / "dags"
    for version in ("1.0.0", "2.0.0"):
        workflow = Workflow(
            process_category="cache",
            process_name="share",
            workflow_package="dkist_processing_example.workflows",
            workflow_version=version,
        )
        workflow.add_node(MyTask1)
        workflow.add_node(MyTask2, upstreams=MyTask1)
        workflow.export_dag(dags)
    cache = tmp_path / "venv-cache"
    env = {
        "PATH": worker_path(tmp_path / "worker-bin", "uv"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(example_wheelhouse),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "DKIST_VENV_CACHE_DIR": str(cache),
    }
    outcomes = {}
    for version in ("1.0.0", "2.0.0", "1.0.0"):
        result = run_dag(dags / f"cache_share_{version}.py", {"recipe_run_id": 3}, env=env)
        assert result.state == "success", result.output[-5000:]
        assert result.task_states == {"MyTask1": "success", "MyTask2": "success"}
        outcomes.setdefault(version, []).extend(cache_outcomes(result.output))
        assert set(installers_used(result.output)) <= {"uv", "none"}
    # one install per version: the first task of each built, every other task reused the entry
    assert outcomes == {"1.0.0": ["built", "hit", "hit", "hit"], "2.0.0": ["built", "hit"]}
    keys = [path.name for path in key_folders(cache / "venvs-v1")]
    assert [name.split("-py")[0] for name in keys] == [
        "dkist-processing-example-1.0.0",
        "dkist-processing-example-2.0.0",
    ]
    for key in keys:
        assert len(list((cache / "venvs-v1" / key).glob("env-*"))) == 1
    assert list((tmp_path / "tmp").rglob("pyvenv.cfg")) == []  # no throw-away venvs
