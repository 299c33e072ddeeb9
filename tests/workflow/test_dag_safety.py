"""No injection: hostile names, versions, tags, extras, module paths, class names and dag_run.conf.

Every input either raises a clear error, or reaches the generated file only as a string literal:
the file's syntax tree, with string literals blanked, is the same as for harmless values. The
recipe run id from ``dag_run.conf`` is checked by the worker program (the one rule of
``dkist_processing_core.recipe_run_id``: ASCII digits only) before anything else runs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dkist_processing_core import Workflow
from dkist_processing_core.export.dag import render_dag
from dkist_processing_core.naming import NamingError
from dkist_processing_core.recipe_run_id import RecipeRunIdError
from dkist_processing_core.recipe_run_id import parse_recipe_run_id
from dkist_processing_core.worker import WORKER_COMMAND
from dkist_processing_core.worker import read_events
from dkist_processing_core.workflow import WorkflowError
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

HOSTILE = [
    "'; import os; os.system('touch /tmp/x') #",
    '"); __import__("os").system("id")  #',
    "$(touch marker)",
    "`touch marker`",
    "1; rm -rf /",
    "a\nimport os",
    "{{ dag_run.conf }}",
    "{% for x in y %}",
    "\\",
    "'''",
    '"""',
    "x\x00y",
    "\u202e",
    "é",
    "a b",
    " ",
    "",
    "--help",
    "-rf",
    "a]==0 ; os_name",
    "x" * 300,
]
SAFE_TEXT = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
HOSTILE_TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40), SAFE_TEXT)
FIELD_WORDS = (
    "input_data",
    "output_data",
    "category",
    "detail",
    "workflow version",
    "workflow name",
    "tag",
    "pip extra",
)
SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _shape(source: str) -> str:
    """The file's syntax tree with every string literal (and list/tuple of them) blanked out."""

    class Blank(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.AST:
            return ast.Constant("S") if isinstance(node.value, str) else node

        def visit_List(self, node: ast.List) -> ast.AST:
            if node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
            ):
                return ast.Constant("S")
            return self.generic_visit(node)

        visit_Tuple = visit_List

    return ast.dump(Blank().visit(ast.parse(source)))


def _strings(source: str) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def _build(
    pipeline,
    *,
    input_data="l0",
    output_data="l1",
    category="cat",
    detail=None,
    version="1.0.0",
    tags=(),
    extras=(),
):
    tasks = pipeline.tasks
    workflow = Workflow(
        input_data=input_data,
        output_data=output_data,
        category=category,
        detail=detail,
        workflow_package=pipeline.package,
        workflow_version=version,
        tags=list(tags),
    )
    workflow.add_node(tasks.Fetch, pip_extras=list(extras))
    workflow.add_node(tasks.Calibrate, upstreams=tasks.Fetch, pip_extras=list(extras))
    return workflow


@pytest.fixture
def baseline_shape(pipeline) -> str:
    return _shape(render_dag(_build(pipeline)))


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS)
@given(
    field=st.sampled_from(
        ["input_data", "output_data", "category", "detail", "version", "tags", "extras"]
    ),
    value=HOSTILE_TEXT,
)
@example(field="tags", value="x'); import os #")
@example(field="tags", value="a b")
@example(field="version", value="1.0.0rc1")
@example(field="extras", value="gpu")
def test_hostile_values_raise_a_clear_error_or_stay_string_literals(
    pipeline, baseline_shape, field, value
):
    arguments = {field: [value]} if field in ("tags", "extras") else {field: value}
    try:
        workflow = _build(pipeline, **arguments)
        source = render_dag(workflow)
    except (NamingError, WorkflowError) as error:
        message = str(error)
        assert any(word in message for word in FIELD_WORDS), message
        return
    if field == "detail" and not value:
        return  # an empty detail is no detail
    assert _shape(source) == baseline_shape
    strings = _strings(source)
    assert any(value in string for string in strings)
    compile(source, "<dag>", "exec")


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESS)
@given(name=HOSTILE_TEXT)
@example(name="Fetch")
@example(name="Evil; import os")
def test_hostile_task_class_names(pipeline, baseline_shape, name):
    assume("\x00" not in name)  # Python itself refuses such a class name
    tasks = pipeline.tasks
    cls = type(name, (tasks.RecordingTask,), {"__module__": tasks.__name__})
    workflow = _build(pipeline)
    if name.isidentifier() and name.isascii() and not hasattr(tasks, name):
        setattr(tasks, name, cls)  # importable as module.Name, like a real task
        try:
            workflow.add_node(cls, upstreams=tasks.Fetch)
            source = render_dag(workflow)
        except WorkflowError as error:
            assert "task" in str(error)
            return
        finally:
            delattr(tasks, name)
        assert name in _strings(source)
        compile(source, "<dag>", "exec")
        return
    with pytest.raises(WorkflowError, match="task"):
        workflow.add_node(cls)


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESS)
@given(module=st.one_of(HOSTILE_TEXT, SAFE_TEXT.map(lambda text: f"hyp_missing_{text}")))
@example(module="os")
@example(module="__main__")
def test_hostile_module_paths_are_rejected(pipeline, module):
    cls = type("Wanderer", (pipeline.tasks.RecordingTask,), {"__module__": module})
    with pytest.raises(WorkflowError, match="Wanderer"):
        _build(pipeline).add_node(cls)


def _script_env(
    tmp_path: Path, recipe_run_id: str, requirement: str = "no-such-dist-x[frozen]==1"
) -> dict[str, str]:
    """What the DAG file and Airflow give a task of workflow "w" at the requirement's version."""
    from helpers.worker_script import worker_path

    return {
        # a worker without uv: the messages below are pip's
        "PATH": worker_path(tmp_path.parent / f"{tmp_path.name}-bin", "pip"),
        "DKIST_WORKER_PYTHON": sys.executable,
        "TMPDIR": str(tmp_path),
        "HOME": str(tmp_path),
        "RECIPE_RUN_ID": recipe_run_id,
        "DKIST_TASK": "pipe.tasks.Fetch",
        "DKIST_REQUIREMENT": requirement,
        # Airflow's own: the DAG id, `{workflow name}_{version}`
        "AIRFLOW_CTX_DAG_ID": f"w_{requirement.rpartition('==')[2]}",
        "DKIST_PIP_TIMEOUT": "1",
        "DKIST_PIP_RETRIES": "0",
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
    }


def _is_valid_id(raw: str) -> bool:
    """The rule, written out independently: 1 to 19 ASCII digits, at most 2**63 - 1."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) < 2**63


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``bash -c WORKER_COMMAND`` as the BashOperator runs it."""
    return subprocess.run(
        ["bash", "-c", WORKER_COMMAND], env=env, capture_output=True, text=True, check=False
    )


def _refused_at_once(result: subprocess.CompletedProcess[str]) -> str:
    """The worker stopped with exit 2 before doing anything: its only output is one error event."""
    assert result.returncode == 2, result.stdout + result.stderr
    events = list(read_events(result.stdout))
    assert [(event, fields["step"], fields["status"]) for event, fields in events] == [
        ("error", "prepare", 2)
    ], result.stdout
    assert len(result.stdout.splitlines()) == 1 and result.stderr == "", (
        result.stdout + result.stderr
    )
    return str(events[0][1]["message"])


@settings(max_examples=60, deadline=None, suppress_health_check=SUPPRESS)
@given(raw=st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30)))
@example(raw="1; touch {marker}")
@example(raw="$(touch {marker})")
@example(raw="`touch {marker}`")
@example(raw="1\ntouch {marker}")
@example(raw="-1")
@example(raw="0x10")
@example(raw="1.5")
@example(raw="\u0664\u0662")  # Arabic-Indic digits: int() reads them, the rule does not
def test_script_refuses_a_bad_recipe_run_id_before_doing_anything(tmp_path, raw):
    marker = tmp_path / "marker"
    raw = raw.replace("{marker}", str(marker))
    assume("\x00" not in raw and not _is_valid_id(raw))
    message = _refused_at_once(_run(_script_env(tmp_path, raw)))
    # the one parser's message, naming the value (shortened when long), and the conf key
    with pytest.raises(RecipeRunIdError) as refused:
        parse_recipe_run_id(raw)
    assert (
        message == f"{refused.value}; trigger the DAG with the conf key recipe_run_id set to the id"
    )
    assert message.startswith("recipe run id must be a non-negative integer")
    if len(repr(raw)) <= 60:
        assert f"got {raw!r};" in message
    assert not marker.exists()
    assert not list(tmp_path.iterdir())  # no venv, no temp dir


@pytest.mark.parametrize(("raw", "normalised"), [("007", 7), ("0", 0), (str(2**63 - 1), 2**63 - 1)])
def test_script_normalises_the_recipe_run_id_it_passes_on(tmp_path, raw, normalised):
    result = _run(_script_env(tmp_path, raw))
    expected = {
        "task": "pipe.tasks.Fetch",
        "workflow": "w",
        "version": "1",
        "recipe_run_id": normalised,
        "requirement": "no-such-dist-x[frozen]==1",
    }
    starts = [fields for event, fields in read_events(result.stdout) if event == "start"]
    assert [{key: fields.get(key) for key in expected} for fields in starts] == [expected], (
        result.stdout
    )


@pytest.mark.parametrize(
    "raw",
    # out of range, and forms int() or float() read that the rule refuses (they were accepted
    # before the one rule: " 17 ", "42.0", "1e3")
    [str(2**63), "9" * 20, "-0.5", "nan", "inf", "1e400", " 17 ", "42.0", "1e3", "+42", "4_2"],
)
def test_script_refuses_ids_out_of_range_or_not_plain_digits(tmp_path, raw):
    message = _refused_at_once(_run(_script_env(tmp_path, raw)))
    assert f"got {raw!r};" in message


def test_script_with_a_good_id_goes_on_and_cleans_up_after_a_failed_install(tmp_path):
    result = _run(_script_env(tmp_path, "17"))
    assert result.returncode != 0
    events = list(read_events(result.stdout))
    assert [event for event, _ in events] == ["start", "nomad", "error"], result.stdout
    (error,) = [fields for event, fields in events if event == "error"]
    assert error["step"] == "setup" and "recipe run id" not in error["message"]
    assert error["status"] == result.returncode  # pip's exit status
    assert "No matching distribution found for no-such-dist-x" in result.stderr
    assert "exit" not in [event for event, _ in events]  # the task never ran
    assert not list(tmp_path.iterdir()), "the throw-away venv must be removed"


def test_dag_run_conf_cannot_inject(pipeline, run_dag, tmp_path):
    """Through real Airflow templating: bad conf values fail the task before any install or task code."""
    workflow = Workflow(
        process_category="conf",
        process_name="attack",
        workflow_package=pipeline.package,
        workflow_version="1.0.0",
    )
    workflow.add_node(pipeline.tasks.Fetch)
    dag_file = workflow.export_dag(tmp_path / "dags")
    marker = tmp_path / "marker"
    record = tmp_path / "record.txt"
    confs = [
        {"recipe_run_id": f"1; touch {marker}"},
        {"recipe_run_id": f"$(touch {marker})"},
        {"recipe_run_id": "{{ 7 * 7 }}"},
        {"recipe_run_id": -5},
        {"recipe_run_id": {"nested": f"`touch {marker}`"}},
        {"recipe_run_id": None},
        {},
    ]
    results = run_dag(
        dag_file,
        confs,
        env={
            "WORKFLOW_TEST_RECORD": str(record),
            "PIP_NO_INDEX": "1",
            "MESH_CONFIG": json.dumps(
                {"interservice-bus": {"mesh_address": "127.0.0.1", "mesh_port": 1}}
            ),
            "ISB_PUBLISH_TIMEOUT": "1",
            "ISB_OUTBOX_DIR": str(tmp_path / "outbox"),
        },
    )
    assert [result.state for result in results] == ["failed"] * len(confs)
    assert [result.task_states for result in results] == [{"Fetch": "failed"}] * len(confs)
    output = results[0].output
    events = list(read_events(output))
    # one refusal per run, at the first step, and nothing started
    assert [(event, fields["step"], fields["status"]) for event, fields in events] == [
        ("error", "prepare", 2)
    ] * len(confs)
    messages = [str(fields["message"]) for _, fields in events]
    assert all(
        message.startswith("recipe run id must be a non-negative integer") for message in messages
    )
    assert "got '{{ 7 * 7 }}';" in messages[2]  # rendered once, never evaluated again
    assert "got '-5';" in messages[3] and "got 'None';" in messages[5]
    # no key at all: the worker says so itself
    assert "got ''; trigger the DAG with the conf key recipe_run_id" in messages[6]
    assert "Looking in links" not in output and "Collecting" not in output
    assert not marker.exists()
    assert not record.exists()
    assert len(list((tmp_path / "outbox").rglob("*.json"))) == len(
        confs
    )  # every failure was reported


@pytest.mark.parametrize(
    "hostile",
    [
        "$(touch {marker})",
        "`touch {marker}`",
        "a b; touch {marker}",
        "-rf",
        "'quoted\"",
        "{{ 7 * 7 }}",
    ],
)
def test_a_hostile_cache_path_is_only_ever_a_path(tmp_path, example_wheelhouse, hostile):
    """DKIST_VENV_CACHE_DIR reaches bash and the helper as one quoted value: a folder of that name."""
    from helpers.worker_script import EXAMPLE_REQUIREMENT
    from helpers.worker_script import cache_outcomes
    from helpers.worker_script import run_script
    from helpers.worker_script import script_env

    marker = tmp_path / "marker"
    cache = tmp_path / hostile.replace("{marker}", str(marker)).replace("/", "_")
    env = script_env(
        tmp_path,
        "uv",
        DKIST_REQUIREMENT=EXAMPLE_REQUIREMENT.format(version="1.0.0"),
        DKIST_TASK="dkist_processing_example.tasks.MyTask1",
        DKIST_VENV_CACHE_DIR=str(cache),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(example_wheelhouse),
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
    )
    result = run_script(env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert cache_outcomes(result.stdout) == ["built"]
    assert (cache / "venvs-v1").is_dir()
    assert not marker.exists()


@pytest.mark.parametrize("value", ["relative/cache", "cache; touch {marker}", "/tmp/a\nb"])
def test_a_cache_path_that_is_not_absolute_stops_the_task_before_anything(tmp_path, value):
    marker = tmp_path / "marker"
    env = _script_env(tmp_path, "5", "dkist-processing-example[frozen]==1.0.0")
    env["DKIST_VENV_CACHE_DIR"] = value.replace("{marker}", str(marker))
    message = _refused_at_once(_run(env))
    assert message.startswith("DKIST_VENV_CACHE_DIR must be an absolute path, got ")
    assert not marker.exists()


@pytest.mark.parametrize(
    "requirement",
    [
        "x[frozen]==1.0; touch {marker}",
        "x[frozen]==1.0 $(touch {marker})",
        "-r{marker}",
        "x[frozen]==1.0\ntouch {marker}",
        "x[frozen]>=1.0",
        "x @ file://{marker}",
    ],
)
def test_a_hostile_requirement_is_never_cached_and_never_a_command(tmp_path, requirement):
    """Anything but ``dist[extras]==version`` is refused before the cache or an installer sees it."""
    marker = tmp_path / "marker"
    env = _script_env(tmp_path, "5")
    env["DKIST_REQUIREMENT"] = requirement.replace("{marker}", str(marker))
    env["DKIST_VENV_CACHE_DIR"] = str(tmp_path / "cache")
    message = _refused_at_once(_run(env))
    assert message.startswith("DKIST_REQUIREMENT must be dist[extras]==version, got ")
    assert not marker.exists()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("version", ["1.0.dev1", "1.0+local"])
def test_a_version_that_may_change_is_installed_but_never_cached(tmp_path, version):
    from helpers.worker_script import cache_outcomes

    env = _script_env(tmp_path, "5", f"no-such-dist-x[frozen]=={version}")
    env["DKIST_VENV_CACHE_DIR"] = str(tmp_path / "cache")
    result = _run(env)
    assert result.returncode != 0  # no such distribution
    notes = [fields["message"] for event, fields in read_events(result.stdout) if event == "note"]
    assert any("is not cached: only public release versions are" in note for note in notes), (
        result.stdout
    )
    assert "No matching distribution found for no-such-dist-x" in result.stderr
    assert cache_outcomes(result.stdout) == []  # the install failed: no setup event
    assert not list((tmp_path / "cache").glob("venvs-v1/*/env-*"))
