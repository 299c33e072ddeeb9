"""The exported notebook: valid nbformat v4, reproducible, and it runs the tasks on a real kernel."""

from __future__ import annotations

import ast
import json
import os
import sys

import nbformat
import pytest
from dkist_processing_core import Workflow
from dkist_processing_core.export.notebook import PARAMETERS_SOURCE
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def _workflow(pipeline, failing: bool = False) -> Workflow:
    tasks = pipeline.tasks
    workflow = Workflow(
        input_data="l0",
        output_data="l1",
        category="visp",
        workflow_package=pipeline.package,
        workflow_version="2.0.1",
    )
    workflow.add_node(tasks.Quality)
    workflow.add_node(tasks.Fetch)
    workflow.add_node(tasks.Calibrate, upstreams=[tasks.Fetch, tasks.Quality], pip_extras=["gpu"])
    if failing:
        workflow.add_node(tasks.Explode, upstreams=tasks.Calibrate)
    workflow.add_node(tasks.Publish, upstreams=tasks.Calibrate)
    return workflow


def test_notebook_is_valid_v4_with_a_parameters_cell_then_one_cell_per_node(pipeline, tmp_path):
    workflow = _workflow(pipeline)
    path = workflow.export_notebook(tmp_path)
    assert path == tmp_path / "l0_to_l1_visp_2.0.1.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    first, *task_cells = notebook.cells
    assert first.cell_type == "code"
    assert first.source == PARAMETERS_SOURCE == "recipe_run_id: int = "
    assert first.metadata["tags"] == ["parameters"]
    order = [node.task_id for node in workflow.topological_sort()]
    assert order == ["Quality", "Fetch", "Calibrate", "Publish"]
    assert len(task_cells) == len(order)
    for cell, task_id in zip(task_cells, order, strict=True):
        # the previous product's cell: import, then `with Task(...) as t: t()`, rollback commented
        assert cell.cell_type == "code"
        importing, running = ast.parse(cell.source).body
        assert (importing.module, [alias.name for alias in importing.names]) == (
            f"{pipeline.package}.tasks",
            [task_id],
        )
        call = running.items[0].context_expr
        assert call.func.id == task_id and running.items[0].optional_vars.id == "t"
        arguments = {keyword.arg: keyword.value for keyword in call.keywords}
        assert ast.literal_eval(arguments["workflow_name"]) == "l0_to_l1_visp"
        assert ast.literal_eval(arguments["workflow_version"]) == "2.0.1"
        assert (
            isinstance(arguments["recipe_run_id"], ast.Name)
            and arguments["recipe_run_id"].id == "recipe_run_id"
        )
        assert [ast.unparse(statement) for statement in running.body] == ["t()"]
        assert cell.source.endswith("    # t.is_task_manual = True\n    t()\n    # t.rollback()")
    assert notebook.metadata["dkist_processing_core"]["tasks"] == order


def test_notebook_is_byte_identical(pipeline, tmp_path):
    first = _workflow(pipeline).export_notebook(tmp_path / "a").read_bytes()
    second = _workflow(pipeline).export_notebook(tmp_path / "b").read_bytes()
    assert first == second
    assert json.loads(first)["nbformat_minor"] >= 5  # cell ids are part of the format, and fixed


def _execute(notebook_path, recipe_run_id, pipeline, tmp_path, monkeypatch):
    record = tmp_path / f"record-{recipe_run_id}.txt"
    monkeypatch.setenv("WORKFLOW_TEST_RECORD", str(record))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(pipeline.project_dir / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    notebook = nbformat.read(notebook_path, as_version=4)
    notebook.cells[0].source += str(recipe_run_id)  # what the user (or papermill) fills in
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    finally:
        lines = record.read_text().splitlines() if record.exists() else []
    return notebook, lines


def test_notebook_runs_the_tasks_in_order_on_a_real_kernel(pipeline, tmp_path, monkeypatch):
    path = _workflow(pipeline).export_notebook(tmp_path)
    _, lines = _execute(path, 314, pipeline, tmp_path, monkeypatch)
    assert lines == [
        f"run {task} 314 l0_to_l1_visp 2.0.1"
        for task in ("Quality", "Fetch", "Calibrate", "Publish")
    ]


def test_a_failing_task_stops_the_notebook_without_a_rollback(pipeline, tmp_path, monkeypatch):
    path = _workflow(pipeline, failing=True).export_notebook(tmp_path)
    with pytest.raises(CellExecutionError, match="Explode fails on purpose"):
        _execute(path, 9, pipeline, tmp_path, monkeypatch)
    lines = (tmp_path / "record-9.txt").read_text().splitlines()
    assert lines == [
        "run Quality 9 l0_to_l1_visp 2.0.1",
        "run Fetch 9 l0_to_l1_visp 2.0.1",
        "run Calibrate 9 l0_to_l1_visp 2.0.1",
        "run Explode 9 l0_to_l1_visp 2.0.1",
    ]  # rollback is manual: the cell has it commented out


def test_notebook_export_without_nbformat_names_the_extra(pipeline, tmp_path, monkeypatch):
    workflow = _workflow(pipeline)
    monkeypatch.setitem(sys.modules, "nbformat", None)
    with pytest.raises(
        ImportError, match=r"pip install 'dkist-processing-core-workflow\[notebook\]'"
    ):
        workflow.export_notebook(tmp_path)
    assert list(tmp_path.iterdir()) == [pipeline.project_dir]
