"""Workflow: constructor forms, names, versions, tags, add_node errors, ordering and checks."""

from __future__ import annotations

import re

import pytest
from dkist_processing_core import ResourceQueue
from dkist_processing_core import TaskBase
from dkist_processing_core import Workflow
from dkist_processing_core.config import reset_core_configuration
from dkist_processing_core.export.dag import render_dag
from dkist_processing_core.export.dag import requirement
from dkist_processing_core.export.notebook import notebook_cell_source
from dkist_processing_core.naming import NamingError
from dkist_processing_core.node import Node
from dkist_processing_core.worker import DEFAULT_PIP_RETRIES
from dkist_processing_core.worker import DEFAULT_PIP_TIMEOUT
from dkist_processing_core.workflow import DEFAULT_MAX_ACTIVE_RUNS
from dkist_processing_core.workflow import MAX_ACTIVE_RUNS_LIMIT
from dkist_processing_core.workflow import WorkflowCycleError
from dkist_processing_core.workflow import WorkflowError


def test_seed_form_from_the_readme_runs_verbatim(pipeline):
    module = pipeline.write_module(
        "readme",
        """\
        from dkist_processing_core import TaskBase
        from dkist_processing_core import Workflow

        # Task definitions
        class MyTask1(TaskBase):
            def run(self):
                print("Running MyTask1")


        class MyTask2(TaskBase):
            def run(self):
                print("Running MyTask2")

        # Workflow definition
        # MyTask1 -> MyTask2
        w = Workflow(process_category="My", process_name="Workflow", workflow_package=__package__, workflow_version="dev")
        w.add_node(MyTask1, upstreams=None)
        w.add_node(MyTask2, upstreams=MyTask1)
        """,
    )
    readme = pipeline.import_module("readme")
    workflow = readme.w
    assert workflow.workflow_name == "My_Workflow"
    assert workflow.workflow_version == "dev"
    assert workflow.dag_name == "My_Workflow_dev"
    assert workflow.workflow_package == pipeline.package
    assert [node.task for node in workflow.nodes] == [readme.MyTask1, readme.MyTask2]
    assert workflow.nodes[1].upstreams == [readme.MyTask1]
    assert workflow.nodes[0].module_path == module
    assert workflow.tags == ["dev", "My", "Workflow"]


def test_data_form_names_and_tags(pipeline):
    workflow = Workflow(
        input_data="l0",
        output_data="l1",
        category="visp",
        detail="full-trial",
        workflow_package=pipeline.package,
        tags=["VISP", "trial run", "l1"],
        workflow_version="2.4.0",
    )
    assert workflow.workflow_name == "l0_to_l1_visp_full-trial"
    assert workflow.dag_name == "l0_to_l1_visp_full-trial_2.4.0"
    # user tags in their order, then version, input, output, category; duplicates dropped
    assert workflow.tags == ["VISP", "trial run", "l1", "2.4.0", "l0", "visp"]


def test_data_form_positionally_and_a_single_tag_string(pipeline):
    workflow = Workflow("l0", "l1", "cryonirsp", pipeline.package, None, "CRYO", "1.0.0")
    assert workflow.workflow_name == "l0_to_l1_cryonirsp"
    assert workflow.tags == ["CRYO", "1.0.0", "l0", "l1", "cryonirsp"]


def test_seed_form_accepts_tags(pipeline):
    workflow = Workflow(
        process_category="ops",
        process_name="smoke",
        workflow_package=pipeline.package,
        tags=["x"],
        workflow_version="3",
    )
    assert workflow.tags == ["x", "3", "ops", "smoke"]


def test_version_defaults_to_build_version_of_the_configuration(pipeline, monkeypatch):
    assert (
        Workflow(
            process_category="a", process_name="b", workflow_package=pipeline.package
        ).workflow_version
        == "dev"
    )
    # The configuration is read once per process (core_configuration()); tests reset it.
    monkeypatch.setenv("BUILD_VERSION", "7.1.2")
    reset_core_configuration()
    first = Workflow(process_category="a", process_name="b", workflow_package=pipeline.package)
    monkeypatch.setenv("BUILD_VERSION", "7.1.3")
    reset_core_configuration()
    second = Workflow(process_category="a", process_name="b", workflow_package=pipeline.package)
    assert (first.workflow_version, second.workflow_version) == ("7.1.2", "7.1.3")
    assert second.dag_name == "a_b_7.1.3"
    first.add_node(pipeline.tasks.Fetch)
    assert first.workflow_version == "7.1.2"


@pytest.mark.parametrize("package", [None, ""])
def test_missing_workflow_package_says_why(package):
    with pytest.raises(
        WorkflowError, match=r"run as a script.*__package__|__package__.*run as a script"
    ):
        Workflow(process_category="a", process_name="b", workflow_package=package)


@pytest.mark.parametrize("package", ["my pipeline", "pipe;rm -rf /", "1abc", "a..b", "pkg.", 3])
def test_malformed_workflow_package_is_rejected(package):
    with pytest.raises(WorkflowError, match="workflow_package"):
        Workflow(process_category="a", process_name="b", workflow_package=package)


def test_workflow_package_must_be_importable():
    with pytest.raises(WorkflowError, match="'no_such_pipeline_pkg_x' cannot be imported"):
        Workflow(process_category="a", process_name="b", workflow_package="no_such_pipeline_pkg_x")


@pytest.mark.parametrize(
    ("arguments", "what"),
    [
        ({"process_category": "My Cat", "process_name": "b"}, "process_category"),
        ({"process_category": "a", "process_name": "b$(x)"}, "process_name"),
        ({"input_data": "l0", "output_data": "l1;", "category": "c"}, "output_data"),
        (
            {"input_data": "l0", "output_data": "l1", "category": "c", "workflow_version": "1 0"},
            "workflow version",
        ),
        (
            {
                "input_data": "l0",
                "output_data": "l1",
                "category": "c",
                "workflow_version": "v" * 65,
            },
            "workflow version",
        ),
    ],
)
def test_hostile_names_and_versions_are_rejected(pipeline, arguments, what):
    with pytest.raises(NamingError, match=what):
        Workflow(workflow_package=pipeline.package, **arguments)


@pytest.mark.parametrize("tag", ["", " lead", "a\nb", "x" * 101, "{{ dag }}", "a'b", "é", 5])
def test_hostile_tags_are_rejected(pipeline, tag):
    with pytest.raises(WorkflowError, match="tag"):
        Workflow(
            process_category="a", process_name="b", workflow_package=pipeline.package, tags=[tag]
        )


def test_max_active_runs(pipeline):
    default = Workflow(process_category="a", process_name="b", workflow_package=pipeline.package)
    assert default.max_active_runs == DEFAULT_MAX_ACTIVE_RUNS
    custom = Workflow(
        process_category="a", process_name="b", workflow_package=pipeline.package, max_active_runs=3
    )
    assert custom.max_active_runs == 3
    for bad in (0, -1, True, "2"):
        with pytest.raises(WorkflowError, match="max_active_runs"):
            Workflow(
                process_category="a",
                process_name="b",
                workflow_package=pipeline.package,
                max_active_runs=bad,
            )


def _workflow(pipeline, **kwargs) -> Workflow:
    return Workflow(
        process_category="My",
        process_name="Workflow",
        workflow_package=pipeline.package,
        workflow_version="1.0.0",
        **kwargs,
    )


def test_add_node_with_keywords_in_any_order(pipeline):
    tasks = pipeline.tasks
    workflow = _workflow(pipeline)
    workflow.add_node(task=tasks.Fetch)
    node = workflow.add_node(
        pip_extras=["gpu", "inventory"],
        resource_queue=ResourceQueue.HIGH_MEMORY,
        upstreams=[tasks.Fetch],
        task=tasks.Calibrate,
    )
    workflow.add_node(tasks.Quality, tasks.Calibrate, "multi_core", "gpu")
    assert isinstance(node, Node)
    assert [n.task_id for n in workflow.nodes] == ["Fetch", "Calibrate", "Quality"]
    assert workflow.nodes[0].resource_queue is ResourceQueue.DEFAULT
    assert workflow.nodes[1].resource_queue is ResourceQueue.HIGH_MEMORY
    assert workflow.nodes[2].resource_queue is ResourceQueue.MULTI_CORE
    assert workflow.nodes[1].pip_extras == ["gpu", "inventory"]
    assert workflow.nodes[2].pip_extras == ["gpu"]
    assert workflow.nodes[2].upstreams == [tasks.Calibrate]


def test_node_attributes(pipeline):
    tasks = pipeline.tasks
    workflow = _workflow(pipeline)
    workflow.add_node(tasks.Fetch)
    node = workflow.add_node(
        tasks.Calibrate, upstreams=tasks.Fetch, pip_extras=["frozen", "gpu", "gpu"]
    )
    assert node.task is tasks.Calibrate
    assert node.task_id == "Calibrate"
    assert node.module_path == f"{pipeline.package}.tasks"
    assert (node.retries, node.retry_delay_seconds) == (2, 5)
    assert (workflow.workflow_name, workflow.workflow_version) == ("My_Workflow", "1.0.0")
    assert node.upstreams == [tasks.Fetch]
    assert node.upstream_task_ids == ["Fetch"]
    assert node.pip_extras == ["frozen", "gpu"]
    # the tmp package is not installed: the documented fallback is the package name with _ -> -
    assert workflow.distribution == pipeline.distribution
    assert requirement(workflow, node) == f"{pipeline.distribution}[frozen,gpu]==1.0.0"
    # pip's timeout and retries of the build machine are the worker's defaults (15 s, 5): the
    # file leaves them to the worker
    assert (DEFAULT_PIP_TIMEOUT, DEFAULT_PIP_RETRIES) == (15, 5)
    assert "DKIST_PIP_TIMEOUT" not in render_dag(workflow)
    assert "DKIST_PIP_RETRIES" not in render_dag(workflow)
    assert "_task(task_id='Calibrate'" in render_dag(workflow)
    assert "with Calibrate(recipe_run_id=recipe_run_id" in notebook_cell_source(workflow, node)


def test_pip_settings_come_from_the_environment(pipeline, monkeypatch):
    monkeypatch.setenv("PIP_TIMEOUT", "42")
    monkeypatch.setenv("PIP_RETRIES", "0")
    reset_core_configuration()  # the configuration is read once per process
    workflow = _workflow(pipeline)
    workflow.add_node(pipeline.tasks.Fetch)
    env = workflow.load().get_task("Fetch").env
    assert (env["DKIST_PIP_TIMEOUT"], env["DKIST_PIP_RETRIES"]) == ("42", "0")


def test_non_task_is_rejected(pipeline):
    workflow = _workflow(pipeline)
    for bad in (object, int, "Fetch", 3, None, TaskBase):
        with pytest.raises(WorkflowError, match="TaskBase"):
            workflow.add_node(bad)
    assert workflow.nodes == []


def test_task_defined_in_main_is_rejected(pipeline):
    main_task = type("MainTask", (pipeline.tasks.RecordingTask,), {"__module__": "__main__"})
    with pytest.raises(
        WorkflowError, match=r"MainTask is defined in __main__.*module of the pipeline package"
    ):
        _workflow(pipeline).add_node(main_task)


def test_task_defined_in_a_function_is_rejected(pipeline):
    class Local(pipeline.tasks.RecordingTask):
        pass

    with pytest.raises(WorkflowError, match=r"Local is defined inside a function or class"):
        _workflow(pipeline).add_node(Local)


def test_task_not_importable_by_module_path_is_rejected(pipeline):
    ghost = type("Ghost", (pipeline.tasks.RecordingTask,), {"__module__": pipeline.tasks.__name__})
    with pytest.raises(WorkflowError, match=r"Ghost cannot be imported as .*\.tasks\.Ghost"):
        _workflow(pipeline).add_node(ghost)
    missing = type(
        "Gone", (pipeline.tasks.RecordingTask,), {"__module__": f"{pipeline.package}.nowhere"}
    )
    with pytest.raises(WorkflowError, match=r"Gone: its module .*nowhere' cannot be imported"):
        _workflow(pipeline).add_node(missing)


def test_duplicate_task_is_rejected(pipeline):
    workflow = _workflow(pipeline)
    workflow.add_node(pipeline.tasks.Fetch)
    with pytest.raises(WorkflowError, match="Fetch is already in workflow 'My_Workflow'"):
        workflow.add_node(pipeline.tasks.Fetch)
    assert len(workflow.nodes) == 1


def test_same_class_name_from_another_module_is_rejected(pipeline):
    pipeline.write_module(
        "other", "from .tasks import RecordingTask\n\nclass Fetch(RecordingTask):\n    pass\n"
    )
    workflow = _workflow(pipeline)
    workflow.add_node(pipeline.tasks.Fetch)
    with pytest.raises(WorkflowError, match=r"other\.Fetch has the same task id as .*tasks\.Fetch"):
        workflow.add_node(pipeline.import_module("other").Fetch)


def test_unknown_upstream_names_both_tasks_and_the_workflow(pipeline):
    tasks = pipeline.tasks
    workflow = _workflow(pipeline)
    workflow.add_node(tasks.Fetch)
    with pytest.raises(
        WorkflowError,
        match=re.escape("Calibrate lists upstream Quality, which is not in workflow 'My_Workflow'"),
    ):
        workflow.add_node(tasks.Calibrate, upstreams=[tasks.Fetch, tasks.Quality])
    assert [node.task_id for node in workflow.nodes] == ["Fetch"]


def test_self_upstream_is_a_cycle(pipeline):
    with pytest.raises(
        WorkflowError, match="Fetch lists itself as an upstream, which would make a cycle"
    ):
        _workflow(pipeline).add_node(pipeline.tasks.Fetch, upstreams=pipeline.tasks.Fetch)


@pytest.mark.parametrize("upstreams", ["Fetch", 3, {"a": 1}])
def test_malformed_upstreams_are_rejected(pipeline, upstreams):
    workflow = _workflow(pipeline)
    workflow.add_node(pipeline.tasks.Fetch)
    with pytest.raises(WorkflowError, match="upstream"):
        workflow.add_node(pipeline.tasks.Calibrate, upstreams=upstreams)


@pytest.mark.parametrize("queue", ["huge", 3, "DEFAULT "])
def test_unknown_resource_queue_is_rejected(pipeline, queue):
    with pytest.raises(
        WorkflowError, match="resource_queue .* is not one of default, high_memory, multi_core, gpu"
    ):
        _workflow(pipeline).add_node(pipeline.tasks.Fetch, resource_queue=queue)


@pytest.mark.parametrize(
    "extras", [["gpu;rm"], ["a b"], [""], ["-x"], [3], ["x" * 65], 5, ["gpu]==0 ; os_name"]]
)
def test_hostile_pip_extras_are_rejected(pipeline, extras):
    with pytest.raises(WorkflowError, match="pip"):
        _workflow(pipeline).add_node(pipeline.tasks.Fetch, pip_extras=extras)


@pytest.mark.parametrize(
    ("attributes", "what"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": True}, "retries"),
        ({"retries": "2"}, "retries"),
        ({"retry_delay_seconds": float("nan")}, "retry_delay_seconds"),
        ({"retry_delay_seconds": -5}, "retry_delay_seconds"),
    ],
)
def test_bad_retry_settings_are_rejected(pipeline, attributes, what):
    source = "from .tasks import RecordingTask\n\nclass Odd(RecordingTask):\n" + "".join(
        f"    {name} = {value!r}\n" for name, value in attributes.items()
    ).replace("nan", "float('nan')")
    pipeline.write_module("odd", source)
    with pytest.raises(WorkflowError, match=what):
        _workflow(pipeline).add_node(pipeline.import_module("odd").Odd)


def test_topological_sort_breaks_ties_by_insertion_order(pipeline):
    tasks = pipeline.tasks
    workflow = _workflow(pipeline)
    # Step3 -> Step1 ; Step3 -> Step0 ; Step2 independent ; Step4 after Step0 and Step1
    workflow.add_node(tasks.Step3)
    workflow.add_node(tasks.Step2)
    workflow.add_node(tasks.Step1, upstreams=tasks.Step3)
    workflow.add_node(tasks.Step0, upstreams=[tasks.Step3])
    workflow.add_node(tasks.Step4, upstreams=[tasks.Step0, tasks.Step1])
    order = [node.task_id for node in workflow.topological_sort()]
    assert order == ["Step3", "Step2", "Step1", "Step0", "Step4"]
    assert [node.task_id for node in workflow.topological_sort()] == order


def test_topological_sort_respects_every_edge_of_a_wide_graph(pipeline):
    tasks = pipeline.tasks
    workflow = _workflow(pipeline)
    for number in range(30):
        upstreams = [getattr(tasks, f"Step{u}") for u in range(number) if (number * 7 + u) % 5 == 0]
        workflow.add_node(getattr(tasks, f"Step{number}"), upstreams=upstreams)
    position = {node.task_id: index for index, node in enumerate(workflow.topological_sort())}
    for node in workflow.nodes:
        for upstream in node.upstream_task_ids:
            assert position[upstream] < position[node.task_id]


def test_check_dag_empty_workflow(pipeline):
    with pytest.raises(WorkflowError, match="'My_Workflow' has no tasks"):
        _workflow(pipeline).check_dag()


def test_check_dag_finds_a_cycle_made_by_editing_nodes(pipeline):
    tasks = pipeline.tasks
    workflow = _workflow(pipeline)
    workflow.add_node(tasks.Fetch)
    workflow.add_node(tasks.Calibrate, upstreams=tasks.Fetch)
    workflow.add_node(tasks.Quality)
    # the nodes are read-only: only code that reaches into the internals can make a cycle
    workflow._nodes[0]._upstreams += (tasks.Calibrate,)
    with pytest.raises(WorkflowCycleError, match="has a cycle among the tasks Fetch, Calibrate"):
        workflow.check_dag()
    with pytest.raises(WorkflowError, match="cycle"):
        workflow.topological_sort()
    with pytest.raises(WorkflowError, match="cycle"):
        render_dag(workflow)


def test_check_dag_finds_unknown_upstreams_made_by_editing_nodes(pipeline):
    workflow = _workflow(pipeline)
    workflow.add_node(pipeline.tasks.Fetch)
    workflow._nodes[0]._upstreams += (pipeline.tasks.Publish,)
    with pytest.raises(
        WorkflowError, match="Fetch lists upstream Publish, which is not in workflow 'My_Workflow'"
    ):
        workflow.check_dag()


def test_dag_name_is_importable_from_workflow_module():
    from dkist_processing_core.naming import dag_name as naming_dag_name
    from dkist_processing_core.workflow import dag_name

    assert dag_name is naming_dag_name
    assert (
        dag_name(workflow_name="l0_to_l1_visp", workflow_version="1.2.3") == "l0_to_l1_visp_1.2.3"
    )


def test_public_api_exports_workflow_and_node():
    import dkist_processing_core

    assert dkist_processing_core.Workflow is Workflow
    assert dkist_processing_core.Node is Node


def test_max_active_runs_has_an_upper_bound_the_scheduler_can_store(pipeline, tmp_path):
    # 10**30 used to validate and then break `airflow dags reserialize` for the whole folder.
    for bad in (10**30, 2**31, MAX_ACTIVE_RUNS_LIMIT + 1):
        with pytest.raises(WorkflowError, match=rf"max_active_runs.*{MAX_ACTIVE_RUNS_LIMIT}"):
            Workflow(
                process_category="a",
                process_name="b",
                workflow_package=pipeline.package,
                max_active_runs=bad,
            )
    from airflow.dag_processing.dagbag import DagBag

    workflow = Workflow(
        process_category="a",
        process_name="b",
        workflow_package=pipeline.package,
        max_active_runs=MAX_ACTIVE_RUNS_LIMIT,
    )
    workflow.add_node(pipeline.tasks.Fetch)
    bag = DagBag(dag_folder=str(workflow.export_dag(tmp_path / "dags").parent))
    assert bag.import_errors == {}
    assert bag.dags[workflow.dag_name].max_active_runs == MAX_ACTIVE_RUNS_LIMIT
