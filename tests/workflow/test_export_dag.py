"""The exported Airflow DAG file: what the scheduler loads, byte for byte."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from functools import partial

import pytest
from dkist_processing_core import ResourceQueue
from dkist_processing_core import Workflow
from dkist_processing_core.export import GENERATOR
from dkist_processing_core.export.dag import RECIPE_RUN_ID_TEMPLATE
from dkist_processing_core.export.dag import render_dag
from dkist_processing_core.export.dag import requirement
from dkist_processing_core.failure_callback import chat_ops_notification
from dkist_processing_core.worker import WORKER_COMMAND
from dkist_processing_core.workflow import WorkflowError


def _workflow(pipeline, **kwargs) -> Workflow:
    tasks = pipeline.tasks
    workflow = Workflow(
        input_data="l0",
        output_data="l1",
        category="visp",
        workflow_package=pipeline.package,
        tags=["VISP", "trial run"],
        workflow_version=pipeline.version,
        **kwargs,
    )
    workflow.add_node(tasks.Fetch)
    workflow.add_node(
        tasks.Calibrate,
        upstreams=tasks.Fetch,
        resource_queue=ResourceQueue.HIGH_MEMORY,
        pip_extras=["gpu"],
    )
    workflow.add_node(tasks.Quality, upstreams=tasks.Fetch, resource_queue=ResourceQueue.MULTI_CORE)
    workflow.add_node(
        tasks.Publish, upstreams=[tasks.Calibrate, tasks.Quality], resource_queue="gpu"
    )
    return workflow


def _load_with_dagbag(folder):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag


def test_dagbag_loads_the_file_and_reads_back_the_workflow(pipeline, tmp_path):
    workflow = _workflow(pipeline, max_active_runs=3)
    path = workflow.export_dag(tmp_path / "dags")
    assert path == tmp_path / "dags" / "l0_to_l1_visp_1.0.0.py"
    bag = _load_with_dagbag(path.parent)
    assert list(bag.dags) == [workflow.dag_name]
    dag = bag.dags[workflow.dag_name]
    assert set(dag.tags) == set(workflow.tags) == {"VISP", "trial run", "1.0.0", "l0", "l1", "visp"}
    assert dag.max_active_runs == 3
    assert dag.catchup is False
    assert dag.default_args == {"owner": "DKIST Data Center"}
    assert sorted(dag.task_ids) == sorted(node.task_id for node in workflow.nodes)
    for node in workflow.nodes:
        task = dag.get_task(node.task_id)
        assert task.upstream_task_ids == set(node.upstream_task_ids)
        assert task.queue == node.resource_queue.value
        assert task.pool == node.resource_queue.pool
        assert task.retries == node.retries
        assert task.retry_delay == timedelta(seconds=node.retry_delay_seconds)
        assert task.owner == "DKIST Data Center"
        assert task.append_env is True
        assert task.bash_command == WORKER_COMMAND
        # pip's timeout and retries are the worker's defaults here: the file leaves them out
        assert task.env == {
            "RECIPE_RUN_ID": RECIPE_RUN_ID_TEMPLATE,
            "DKIST_TASK": f"{node.module_path}.{node.task_id}",
            "DKIST_REQUIREMENT": requirement(workflow, node),
            "DKIST_WORKER_PYTHON": sys.executable,
        }
        (callback,) = task.on_failure_callback
        assert isinstance(callback, partial)
        assert callback.func is chat_ops_notification
        assert callback.keywords == {
            "workflow_name": "l0_to_l1_visp",
            "workflow_version": "1.0.0",
            "task_name": node.task_id,
        }
    assert (
        dag.get_task("Calibrate").env["DKIST_REQUIREMENT"]
        == f"{pipeline.distribution}[frozen,gpu]==1.0.0"
    )
    assert dag.get_task("Calibrate").retries == 2
    assert dag.get_task("Publish").pool == "gpu_pool"
    assert {task.task_id for task in dag.get_task("Fetch").get_flat_relatives(upstream=False)} == {
        "Calibrate",
        "Quality",
        "Publish",
    }


def test_load_returns_the_airflow_dag(pipeline):
    from airflow.sdk import DAG

    workflow = _workflow(pipeline)
    dag = workflow.load()
    assert isinstance(dag, DAG)
    assert dag.dag_id == workflow.dag_name
    assert dag.get_task("Publish").upstream_task_ids == {"Calibrate", "Quality"}
    assert [task.task_id for task in dag.get_task("Publish").get_flat_relatives(upstream=True)]


def test_load_without_airflow_names_the_extra(pipeline, monkeypatch):
    workflow = _workflow(pipeline)
    monkeypatch.setitem(sys.modules, "airflow.sdk", None)
    with pytest.raises(
        ImportError, match=r"pip install 'dkist-processing-core-workflow\[airflow\]'"
    ):
        workflow.load()


def test_file_imports_only_airflow_the_stdlib_and_the_failure_callback(pipeline):
    tree = ast.parse(render_dag(_workflow(pipeline)))
    imported = set()
    for statement in ast.walk(tree):
        if isinstance(statement, ast.Import):
            imported.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            imported.add(statement.module)
    assert imported == {
        "sys",
        "datetime",
        "functools",
        "airflow.sdk",
        "airflow.providers.standard.operators.bash",
        "dkist_processing_core.failure_callback",
    }
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert calls == {"BashOperator", "timedelta", "partial", "DAG", "_task"}
    assert not any(isinstance(node, ast.JoinedStr) for node in ast.walk(tree)), (
        "no f-strings in generated code"
    )


def test_header_names_the_generator_and_the_file_has_no_timestamps(pipeline):
    source = render_dag(_workflow(pipeline))
    first_line = source.splitlines()[0]
    assert first_line == f"# Generated by {GENERATOR}. Do not edit: export the workflow again."
    assert GENERATOR.startswith("dkist-processing-core-workflow ")
    assert "start_date" not in source
    assert "schedule=None" in source
    assert "catchup=False" in source


def test_command_is_one_shared_constant_without_jinja_markers(pipeline):
    tree = ast.parse(render_dag(_workflow(pipeline)))
    (command,) = [
        statement.value.value
        for statement in tree.body
        if isinstance(statement, ast.Assign)
        and isinstance(statement.targets[0], ast.Name)
        and statement.targets[0].id == "_COMMAND"
    ]
    assert command == WORKER_COMMAND
    # every operator gets that one constant: the only bash_command in the file is the name _COMMAND
    commands = [
        keyword.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BashOperator"
        for keyword in node.keywords
        if keyword.arg == "bash_command"
    ]
    assert [getattr(value, "id", ast.dump(value)) for value in commands] == ["_COMMAND"]
    for marker in ("{{", "{%", "{#", "}}", "%}", "#}"):
        assert marker not in WORKER_COMMAND
    assert not WORKER_COMMAND.rstrip().endswith((".sh", ".bash"))
    # values never reach the command: the only expansion is the quoted interpreter variable
    assert "eval" not in WORKER_COMMAND.split()
    assert WORKER_COMMAND.count("$") == 1
    assert '"${DKIST_WORKER_PYTHON' in WORKER_COMMAND
    for variable in ("RECIPE_RUN_ID", "DKIST_TASK", "DKIST_REQUIREMENT", "DKIST_WORKFLOW_NAME"):
        assert "$" + variable not in WORKER_COMMAND and "${" + variable not in WORKER_COMMAND


def test_command_syntax_is_valid():
    result = subprocess.run(
        ["bash", "-n", "-c", WORKER_COMMAND], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_export_is_byte_identical_and_atomic(pipeline, tmp_path):
    first = _workflow(pipeline).export_dag(tmp_path / "a")
    second = _workflow(pipeline).export_dag(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    again = _workflow(pipeline).export_dag(tmp_path / "a")
    assert again == first
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == [
        first.name
    ]  # no temporary files left


def test_default_folders_are_dags_and_notebooks(pipeline, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    workflow = _workflow(pipeline)
    dag_path = workflow.export_dag()
    notebook_path = workflow.export_notebook()
    assert dag_path.resolve() == work / "dags" / f"{workflow.dag_name}.py"
    assert notebook_path.resolve() == work / "notebooks" / f"{workflow.dag_name}.ipynb"
    assert sorted(path.name for path in work.iterdir()) == ["dags", "notebooks"]


def test_invalid_workflow_writes_nothing(pipeline, tmp_path):
    workflow = Workflow(process_category="a", process_name="b", workflow_package=pipeline.package)
    with pytest.raises(WorkflowError, match="has no tasks"):
        workflow.export_dag(tmp_path / "out" / "dags")
    with pytest.raises(WorkflowError, match="has no tasks"):
        workflow.export_notebook(tmp_path / "out" / "notebooks")
    assert not (tmp_path / "out").exists()


def test_reproducible_across_processes_with_different_hash_seeds(pipeline, tmp_path):
    pipeline.write_module(
        "workflows",
        """\
        from dkist_processing_core import Workflow
        from . import tasks

        workflow = Workflow(
            input_data="l0", output_data="l1", category="visp", workflow_package=__package__,
            tags=["b", "a", "c", "VISP"], workflow_version="1.0.0",
        )
        for number in range(12):
            upstreams = [getattr(tasks, f"Step{u}") for u in range(number) if (number + u) % 3 == 0]
            workflow.add_node(getattr(tasks, f"Step{number}"), upstreams=upstreams, pip_extras=["z", "a", "m"])
        """,
    )
    script = textwrap.dedent(
        f"""\
        import sys
        from {pipeline.package}.workflows import workflow
        workflow.export_dag(sys.argv[1])
        workflow.export_notebook(sys.argv[1])
        """
    )
    digests = []
    for seed in ("1", "12345"):
        out = tmp_path / f"seed-{seed}"
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": os.pathsep.join(
                [str(pipeline.project_dir / "src"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        env.pop("BUILD_VERSION", None)
        result = subprocess.run(
            [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        files = sorted(out.iterdir())
        assert [path.suffix for path in files] == [".ipynb", ".py"]
        digests.append({path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files})
    assert digests[0] == digests[1]


def test_twenty_nodes_stay_under_one_kilobyte_per_node(pipeline):
    tasks = pipeline.tasks
    workflow = Workflow(
        input_data="l0",
        output_data="l1",
        category="visp",
        workflow_package=pipeline.package,
        workflow_version="1.0.0",
    )
    for number in range(20):
        upstreams = [getattr(tasks, f"Step{number - 1}")] if number else None
        workflow.add_node(getattr(tasks, f"Step{number}"), upstreams=upstreams)
    size = len(render_dag(workflow).encode())
    # The fixed part is the header and the helper _task (the worker program ships in core-task,
    # issue 21; it held the worker script and its Python helper, ~25 KB, before); each node adds
    # one line of literals.
    single = Workflow(
        input_data="l0",
        output_data="l1",
        category="visp",
        workflow_package=pipeline.package,
        workflow_version="1.0.0",
    )
    single.add_node(tasks.Step0)
    fixed = len(render_dag(single).encode())
    assert (size - fixed) / 19 <= 1024, f"{size} bytes for 20 nodes, {fixed} for one"
    assert fixed <= 4 * 1024, f"{fixed} bytes for one node"
