"""The public API of dkist_processing_core: lazy, cheap to import, clear when a distribution is missing."""

from __future__ import annotations

import importlib.metadata
import json

import dkist_processing_core
import pytest
from helpers.task_modules import clean_environment
from helpers.task_modules import run_python

# Must never be loaded by importing the task runtime on a worker.
FORBIDDEN = (
    "airflow",
    "nbformat",
    "nbconvert",
    "jupyter",
    "grpc",
    "pika",
    "opentelemetry.exporter",
)

MODULES_AFTER = """
import json, sys
{statement}
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(statement: str, env: dict[str, str] | None = None) -> list[str]:
    result = run_python(MODULES_AFTER.format(statement=statement), env or clean_environment())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [
        name
        for name in modules
        if name in prefixes or name.startswith(tuple(f"{p}." for p in prefixes))
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "from dkist_processing_core import TaskBase",
        "from dkist_processing_core.task import TaskBase",
        "from dkist_processing_core import TaskBase, ResourceQueue",
        "import dkist_processing_core.run_task",
        "from dkist_processing_core.notebook_utils import export_notebook_by_path, wait_for_notebook_save",
    ],
)
def test_importing_the_task_runtime_loads_nothing_heavy(statement):
    assert _loaded(_modules_after(statement), FORBIDDEN) == []


def test_importing_taskbase_defers_config_logging_and_opentelemetry():
    # Stronger than the contract above: all of these load when the first task is constructed.
    assert (
        _loaded(
            _modules_after("from dkist_processing_core import TaskBase"),
            ("pydantic", "loguru", "opentelemetry"),
        )
        == []
    )


def test_constructing_and_running_a_task_without_endpoint_loads_nothing_heavy():
    statement = """
from dkist_processing_core import TaskBase
class Noop(TaskBase):
    def run(self):
        pass
with Noop(recipe_run_id=1, workflow_name="W", workflow_version="1") as task:
    task()
"""
    modules = _modules_after(statement)
    assert _loaded(modules, FORBIDDEN + ("opentelemetry.sdk",)) == []
    assert "dkist_processing_core.task" in modules


def test_public_names_load_on_first_access():
    result = run_python(
        """
        import sys
        import dkist_processing_core
        assert "dkist_processing_core.task" not in sys.modules
        assert "dkist_processing_core.resource_queue" not in sys.modules
        from dkist_processing_core import TaskBase, ResourceQueue
        from dkist_processing_core.task import TaskBase as Same
        assert TaskBase is Same
        assert ResourceQueue.GPU.pool == "gpu_pool"
        print(sorted(set(dkist_processing_core.__all__) & set(dir(dkist_processing_core))))
        """,
        clean_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == "['Node', 'ResourceQueue', 'TaskBase', 'Workflow', '__version__']"
    )


def test_version_is_the_task_distribution_version():
    from dkist_processing_core._version_task import __version__

    assert dkist_processing_core.__version__ == __version__
    assert dkist_processing_core.__version__ == importlib.metadata.version(
        "dkist-processing-core-task"
    )


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        dkist_processing_core.NoSuchThing  # noqa: B018


HIDE_WORKFLOW = """
import sys

class HideWorkflowDistribution:
    # Behaves as if dkist-processing-core-workflow were not installed.
    def find_spec(self, name, path=None, target=None):
        if name in ("dkist_processing_core._workflow_model", "dkist_processing_core.node"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideWorkflowDistribution())
"""


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("dkist_processing_core", "Workflow"),
        ("dkist_processing_core", "Node"),
        ("dkist_processing_core.workflow", "Workflow"),
        ("dkist_processing_core.workflow", "WorkflowCycleError"),
    ],
)
def test_workflow_names_without_the_workflow_distribution(module, name):
    code = (
        HIDE_WORKFLOW
        + f"""
from dkist_processing_core import TaskBase, ResourceQueue  # still fine on a lean worker
from dkist_processing_core.workflow import dag_name, workflow_name_from_details  # so is this
assert dag_name("a", "1") == "a_1"
try:
    from {module} import {name}
except ImportError as error:
    print(error)
else:
    raise SystemExit("imported {name} although its distribution is hidden")
"""
    )
    result = run_python(code, clean_environment())
    assert result.returncode == 0, result.stderr
    assert "dkist-processing-core-workflow" in result.stdout
    assert "pip install dkist-processing-core-workflow" in result.stdout


def test_error_inside_an_installed_module_is_not_disguised():
    # A missing dependency *inside* the workflow module must surface as itself, not as "not installed".
    code = """
import sys
class Raising:
    def find_spec(self, name, path=None, target=None):
        if name == "dkist_processing_core._workflow_model":
            raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")
sys.meta_path.insert(0, Raising())
try:
    from dkist_processing_core import Workflow
except ModuleNotFoundError as error:
    print(error.name)
"""
    result = run_python(code, clean_environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "some_dependency"
