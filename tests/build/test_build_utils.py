"""build_utils in-process: discovery, validation (real Airflow DagBag), exports and their targets."""

from __future__ import annotations

import importlib
from pathlib import Path

import nbformat
import pytest
from dkist_processing_core import build_utils
from dkist_processing_core.build_utils import ExportTargetError
from dkist_processing_core.build_utils import UnknownPackageError
from dkist_processing_core.build_utils import WorkflowNotFoundError
from dkist_processing_core.build_utils import WorkflowValidationError
from helpers.build_cli import BROKEN_PACKAGE
from helpers.build_cli import EXAMPLE_PACKAGE
from helpers.build_cli import tree

pytestmark = pytest.mark.usefixtures("fixture_packages")

EXAMPLE_DAG_IDS = ["l0_to_l1_example_dev", "My_Workflow_dev"]


def test_discover_finds_every_workflow_of_the_public_modules_once():
    workflows = build_utils.discover_workflows(EXAMPLE_PACKAGE)
    assert [workflow.dag_name for workflow in workflows] == EXAMPLE_DAG_IDS
    module = importlib.import_module(EXAMPLE_PACKAGE)
    assert build_utils.discover_workflows(module) == workflows  # module object or dotted name


def test_discover_reports_every_module_that_fails_to_import_and_skips_private_ones():
    with pytest.raises(WorkflowValidationError) as caught:
        build_utils.discover_workflows(BROKEN_PACKAGE)
    subjects = sorted(problem.subject for problem in caught.value.problems)
    assert subjects == [f"{BROKEN_PACKAGE}.bad_import", f"{BROKEN_PACKAGE}.bad_upstream"]
    assert all(problem.kind == "import error" for problem in caught.value.problems)


def test_validate_returns_the_workflows_of_a_valid_package_and_writes_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(EXAMPLE_PACKAGE)
    workflows = build_utils.validate_workflows(module)
    assert [workflow.dag_name for workflow in workflows] == EXAMPLE_DAG_IDS
    assert tree(tmp_path) == []  # no ./export, ./dags or anything else


def test_validate_reports_all_problems_of_a_broken_package_in_one_error():
    module = importlib.import_module(BROKEN_PACKAGE)
    with pytest.raises(WorkflowValidationError) as caught:
        build_utils.validate_workflows(module)
    problems = {(problem.kind, problem.subject.split(" ")[0]) for problem in caught.value.problems}
    assert problems == {
        ("import error", f"{BROKEN_PACKAGE}.bad_import"),
        ("import error", f"{BROKEN_PACKAGE}.bad_upstream"),
        ("empty workflow", "Empty_Workflow_dev"),
        ("cycle", "Cyclic_Workflow_dev"),
        ("duplicate dag_id", "Same_Name_dev"),
        ("DAG file rejected by Airflow", "Rejected_Dag_dev"),
    }
    message = str(caught.value)
    assert message.startswith(f"6 problem(s) with the workflows of {BROKEN_PACKAGE}:")
    assert "No module named 'build_fixture_module_that_does_not_exist'" in message
    assert "B lists upstream A, which is not in workflow 'Bad_Upstream'" in message
    assert "this DAG file is broken on purpose" in message
    assert "duplicate_a:same" in message and "duplicate_b:same" in message
    assert "Good_Workflow" not in message and "_private" not in message
    rejected = next(p for p in caught.value.problems if p.kind == "DAG file rejected by Airflow")
    assert "Traceback" in rejected.detail  # the full traceback is kept for --debug


def test_validate_keeps_the_files_in_export_path_like_the_previous_product(tmp_path):
    build_utils.validate_workflows(EXAMPLE_PACKAGE, export_path=tmp_path / "export")
    assert tree(tmp_path / "export") == [f"{dag_id}.py" for dag_id in sorted(EXAMPLE_DAG_IDS)]


def test_unknown_package_is_its_own_error():
    with pytest.raises(UnknownPackageError, match="not importable"):
        build_utils.discover_workflows("no_such_pipeline.workflows")
    with pytest.raises(UnknownPackageError, match="not a dotted Python package name"):
        build_utils.discover_workflows("bad name; rm -rf /")


def test_find_workflow_by_dag_id_or_name():
    assert build_utils.find_workflow(EXAMPLE_PACKAGE, "My_Workflow").dag_name == "My_Workflow_dev"
    assert (
        build_utils.find_workflow(EXAMPLE_PACKAGE, "l0_to_l1_example_dev").workflow_name
        == "l0_to_l1_example"
    )
    with pytest.raises(
        WorkflowNotFoundError,
        match="has 2 workflows; name one of: l0_to_l1_example_dev, My_Workflow_dev",
    ):
        build_utils.find_workflow(EXAMPLE_PACKAGE)
    with pytest.raises(WorkflowNotFoundError, match="has no workflow 'Nope'"):
        build_utils.find_workflow(EXAMPLE_PACKAGE, "Nope")


def test_export_dags_writes_every_dag_file_and_reports_progress(tmp_path):
    lines: list[str] = []
    paths = build_utils.export_dags(EXAMPLE_PACKAGE, tmp_path / "dags", progress=lines.append)
    assert [path.name for path in paths] == [f"{dag_id}.py" for dag_id in EXAMPLE_DAG_IDS]
    assert all(path.parent == tmp_path / "dags" for path in paths)
    assert lines[:2] == [
        "[1/2] l0_to_l1_example_dev: l0_to_l1_example_dev.py",
        "[2/2] My_Workflow_dev: My_Workflow_dev.py",
    ]
    assert tree(tmp_path) == ["dags", "dags/My_Workflow_dev.py", "dags/l0_to_l1_example_dev.py"]
    # Exporting again into its own output needs no force: the same names are replaced.
    build_utils.export_dags(EXAMPLE_PACKAGE, tmp_path / "dags")
    assert tree(tmp_path) == ["dags", "dags/My_Workflow_dev.py", "dags/l0_to_l1_example_dev.py"]


def test_export_writes_beside_other_files_and_leaves_them_untouched(tmp_path):
    # As the previous product did: a pipeline's CI exports into a folder that holds other files.
    target = tmp_path / "dags"
    target.mkdir()
    user_file = target / "notes.txt"
    user_file.write_text("mine")
    build_utils.export_dags(EXAMPLE_PACKAGE, target)
    assert user_file.read_text() == "mine"
    assert tree(tmp_path) == [
        "dags",
        "dags/My_Workflow_dev.py",
        "dags/l0_to_l1_example_dev.py",
        "dags/notes.txt",
    ]


@pytest.mark.parametrize("target", ["/", "/usr", "/etc", "~", "/tmp"])
def test_a_filesystem_root_or_system_folder_is_refused_without_walking_it(tmp_path, target):
    with pytest.raises(
        ExportTargetError, match="it is a filesystem root, a system folder or the home folder"
    ):
        build_utils.export_dags(EXAMPLE_PACKAGE, Path(target).expanduser())
    with pytest.raises(
        ExportTargetError, match="it is a filesystem root, a system folder or the home folder"
    ):
        build_utils.export_notebooks(EXAMPLE_PACKAGE, Path(target).expanduser())
    assert not list(Path("/").glob(".*staging-*"))


@pytest.mark.parametrize(
    "package",
    [BROKEN_PACKAGE, f"{BROKEN_PACKAGE}.dag_rejected"],
    ids=["fails-before-writing", "fails-in-the-dagbag-after-staging"],
)
def test_a_failed_export_leaves_nothing_behind(tmp_path, package):
    target = tmp_path / "new" / "deeper" / "dags"
    with pytest.raises(WorkflowValidationError):
        build_utils.export_dags(package, target)
    assert (
        tree(tmp_path) == []
    )  # neither the target, nor the parents made for it, nor a staging folder
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "Rejected_Dag_dev.py").write_text("# an older export, kept")
    with pytest.raises(WorkflowValidationError):
        build_utils.export_dags(package, existing)
    assert tree(tmp_path) == ["existing", "existing/Rejected_Dag_dev.py"]
    assert (existing / "Rejected_Dag_dev.py").read_text() == "# an older export, kept"


def test_a_file_as_target_is_refused(tmp_path):
    target = tmp_path / "dags"
    target.write_text("not a folder")
    with pytest.raises(ExportTargetError, match="is not a folder"):
        build_utils.export_notebooks(EXAMPLE_PACKAGE, target)


def test_export_notebooks_writes_valid_notebooks(tmp_path):
    paths = build_utils.export_notebooks(EXAMPLE_PACKAGE, tmp_path / "notebooks")
    assert [path.name for path in paths] == [f"{dag_id}.ipynb" for dag_id in EXAMPLE_DAG_IDS]
    for path in paths:
        nbformat.validate(nbformat.read(path, as_version=4))


def test_export_notebook_dockerfile_defines_a_jupyter_image_with_the_pinned_pipeline(tmp_path):
    dockerfile = build_utils.export_notebook_dockerfile(EXAMPLE_PACKAGE, tmp_path / "image")
    assert dockerfile == tmp_path / "image" / "Dockerfile"
    assert tree(tmp_path / "image") == [
        "Dockerfile",
        "notebooks",
        "notebooks/My_Workflow_dev.ipynb",
        "notebooks/l0_to_l1_example_dev.ipynb",
    ]
    text = dockerfile.read_text()
    assert (
        "ARG BASE_IMAGE=quay.io/jupyter/minimal-notebook:python-3.11\nFROM ${BASE_IMAGE}\n" in text
    )
    assert "ENV IS_NOTEBOOK_EXECUTION_ENVIRONMENT=true" in text
    assert '"dkist-processing-example[frozen]==1.0.0"' in text
    assert '"dkist-processing-core-task[notebook]==1.0.0"' in text
    assert "COPY --chown=${NB_UID}:${NB_GID} notebooks/ /home/${NB_USER}/notebooks/" in text


@pytest.mark.parametrize(
    ("requires_python", "tag"),
    [
        ([">=3.13"], "python-3.13"),
        ([">=3.11"], "python-3.11"),
        ([None], "python-3.11"),
        ([">=3.12", ">3.12"], "python-3.12"),
    ],
)
def test_dockerfile_base_image_carries_the_python_the_pipeline_requires(requires_python, tag):
    # The DKIST pipelines require Python >= 3.13: a 3.11 image could not install them.
    from dkist_processing_core._dockerfile import base_image_for

    assert base_image_for(requires_python) == f"quay.io/jupyter/minimal-notebook:{tag}"
    with pytest.raises(ValueError, match="choose an image with --base-image"):
        base_image_for([">=3.99"])


def test_dockerfile_base_image_is_validated_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="not a Docker image reference"):
        build_utils.export_notebook_dockerfile(
            EXAMPLE_PACKAGE, tmp_path / "image", base_image="x\nRUN rm -rf /"
        )
    assert tree(tmp_path) == []


def test_mermaid_flowchart_of_the_fan_out_workflow():
    workflow = build_utils.find_workflow(EXAMPLE_PACKAGE, "l0_to_l1_example")
    text = build_utils.mermaid_flowchart(workflow)
    lines = text.splitlines()
    assert lines[:4] == ["---", "title: l0_to_l1_example_dev", "---", "flowchart TD"]
    assert (
        '    PolarimetricCalibration["PolarimetricCalibration<br/><small>queue: high_memory</small>"]'
        in lines
    )
    assert '    ScienceCalibration["ScienceCalibration<br/><small>retries: 2</small>"]' in lines
    edges = [line.strip() for line in lines if "-->" in line]
    assert len(edges) == 11
    assert sum(edge.startswith("ParseL0Inputs -->") for edge in edges) == 5
    assert sum(edge.endswith("--> ScienceCalibration") for edge in edges) == 5
    assert build_utils.mermaid_flowchart(workflow) == text  # stable


def test_every_example_workflow_matches_the_contract_of_the_issue():
    l0_to_l1 = build_utils.find_workflow(EXAMPLE_PACKAGE, "l0_to_l1_example")
    fan_out = [node for node in l0_to_l1.nodes if node.upstream_task_ids == ["ParseL0Inputs"]]
    assert len(fan_out) >= 5
    fan_in = next(node for node in l0_to_l1.nodes if node.task_id == "ScienceCalibration")
    assert sorted(fan_in.upstream_task_ids) == sorted(node.task_id for node in fan_out)
    assert fan_in.retries == 2
    assert {node.resource_queue.value for node in l0_to_l1.nodes} == {"default", "high_memory"}
    seed = build_utils.find_workflow(EXAMPLE_PACKAGE, "My_Workflow")
    assert [(node.task_id, node.upstream_task_ids) for node in seed.nodes] == [
        ("MyTask1", []),
        ("MyTask2", ["MyTask1"]),
    ]
    assert l0_to_l1.tags == ["example", "dev", "l0", "l1"]
