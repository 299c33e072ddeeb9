"""Values ending in .sh or .bash in the DAG file are data, not template file names (issue 14).

BashOperator's ``template_ext`` is ``(".sh", ".bash")``: a templated value (``env`` values, and
``bash_command``) ending in one of those is taken as the name of a template file and replaced by
that file from the DAG folder, or fails the task with TemplateNotFound when there is none. Names
and versions may end in ``.sh`` (``[A-Za-z0-9._-]``); the version ends every task's
``DKIST_REQUIREMENT`` (``dist[frozen]==version``). Fix: set ``template_ext = ()`` on the
operators of the generated DAG file (checked here: the literal value survives rendering and the
``RECIPE_RUN_ID`` template still renders), or refuse such values in validation with a clear error.
"""

from __future__ import annotations

from types import SimpleNamespace

from dkist_processing_core import Workflow


def test_a_value_ending_in_sh_is_not_read_as_a_template_file_from_the_dag_folder(
    pipeline, tmp_path
):
    from airflow.dag_processing.dagbag import DagBag

    workflow = Workflow(
        process_category="Calib",
        process_name="stage",
        workflow_package=pipeline.package,
        workflow_version="1.0.sh",
    )
    workflow.add_node(pipeline.tasks.Fetch)
    dags = tmp_path / "dags"
    workflow.export_dag(dags)
    requirement = f"{workflow.distribution}[frozen]==1.0.sh"
    (dags / requirement).write_text("echo INJECTED FROM A FILE IN THE DAG FOLDER\n")

    bag = DagBag(dag_folder=str(dags))
    assert bag.import_errors == {}
    dag = bag.dags[workflow.dag_name]
    task = dag.get_task("Fetch")
    context = {"dag_run": SimpleNamespace(conf={"recipe_run_id": 7}), "params": {}}
    task.render_template_fields(context, jinja_env=dag.get_template_env())

    assert task.env["DKIST_REQUIREMENT"] == requirement
    assert task.env["RECIPE_RUN_ID"] == "7"
