"""TaskBase: hooks, spans, counter, attributes, context manager, rollback, file descriptor limit, ids."""

from __future__ import annotations

import json
import re

import pytest
from dkist_processing_core import TaskBase
from dkist_processing_core.run_task import run_task
from dkist_processing_core.task import METER_NAME
from helpers.task_modules import clean_environment
from helpers.task_modules import run_python
from helpers.task_modules import unique_module_name
from helpers.task_modules import write_module
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import StatusCode

BASE_KEYS = {
    "recipe.run.id",
    "workflow.name",
    "workflow.version",
    "task.name",
    "nomad.allocation.id",
    "nomad.allocation.name",
    "nomad.allocation.group",
}


class Recorder(TaskBase):
    """Records the order in which its hooks run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def pre_run(self) -> None:
        self.calls.append("pre_run")

    def run(self) -> None:
        self.calls.append("run")

    def post_run(self) -> None:
        self.calls.append("post_run")


class DetectorOnFire(Exception):
    pass


class FailsInRun(Recorder):
    error = DetectorOnFire("the detector is on fire")

    def run(self) -> None:
        self.calls.append("run")
        raise self.error


class FailsInPreRun(Recorder):
    def pre_run(self) -> None:
        raise DetectorOnFire("too early")


class UsesTelemetryHelpers(TaskBase):
    """What client tasks do with the helpers SPEC section 8 lists."""

    def run(self) -> None:
        with self.telemetry_span("Calibrate frames", attributes={"frames": 12}) as span:
            span.set_attribute("detector", "camera-1")
        counter = self.meter.create_counter(self.format_metric_name("frames.calibrated"), unit="1")
        counter.add(12, attributes=self.base_telemetry_attributes)
        self.meter.create_observable_gauge(self.format_metric_name("queue.depth"), callbacks=[])


def _task(cls=Recorder, recipe_run_id=7):
    return cls(recipe_run_id=recipe_run_id, workflow_name="Test_Workflow", workflow_version="2.0.1")


# -- spans -----------------------------------------------------------------------------------------


def test_call_runs_hooks_in_order_inside_the_span_tree(task_env, in_memory_telemetry):
    task = _task()
    task()
    assert task.calls == ["pre_run", "run", "post_run"]

    spans = in_memory_telemetry.spans()
    assert [span.name for span in spans] == ["Pre Run", "Run", "Post Run", "Test_Workflow.Recorder"]
    root = in_memory_telemetry.span("Test_Workflow.Recorder")
    assert root.parent is None
    for child in spans[:3]:
        assert child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert child.status.status_code is StatusCode.OK
        assert dict(child.attributes) == task.base_telemetry_attributes
    assert dict(root.attributes) == {**task.base_telemetry_attributes, "dkist.root": "True"}
    assert root.status.status_code is StatusCode.OK
    # children run one after the other
    assert spans[0].end_time <= spans[1].start_time and spans[1].end_time <= spans[2].start_time


def test_base_telemetry_attributes(task_env):
    task_env.setenv("NOMAD_ALLOC_ID", "alloc-9")
    task_env.setenv("NOMAD_ALLOC_NAME", "workers.worker[1]")
    task_env.setenv("NOMAD_GROUP_NAME", "workers")
    task = _task(recipe_run_id=123)
    assert task.base_telemetry_attributes == {
        "recipe.run.id": 123,
        "workflow.name": "Test_Workflow",
        "workflow.version": "2.0.1",
        "task.name": "Recorder",
        "nomad.allocation.id": "alloc-9",
        "nomad.allocation.name": "workers.worker[1]",
        "nomad.allocation.group": "workers",
    }
    assert set(task.base_telemetry_attributes) == BASE_KEYS


def test_exception_is_recorded_and_reraised_unchanged(task_env, in_memory_telemetry):
    task = _task(FailsInRun)
    with pytest.raises(DetectorOnFire) as caught:
        task()
    assert caught.value is FailsInRun.error
    assert task.calls == ["pre_run", "run"]
    assert in_memory_telemetry.span_names() == ["Pre Run", "Run", "Test_Workflow.FailsInRun"]
    for name in ("Run", "Test_Workflow.FailsInRun"):
        span = in_memory_telemetry.span(name)
        assert span.status.status_code is StatusCode.ERROR
        (event,) = [event for event in span.events if event.name == "exception"]
        assert event.attributes["exception.type"].endswith("DetectorOnFire")
        assert event.attributes["exception.message"] == "the detector is on fire"
    assert in_memory_telemetry.span("Pre Run").status.status_code is StatusCode.OK


def test_failure_in_pre_run_skips_run_and_post_run(task_env, in_memory_telemetry):
    task = _task(FailsInPreRun)
    with pytest.raises(DetectorOnFire, match="too early"):
        task()
    assert task.calls == []
    assert in_memory_telemetry.span_names() == ["Pre Run", "Test_Workflow.FailsInPreRun"]


def test_subclass_telemetry_helpers(task_env, in_memory_telemetry):
    task_env.setenv("OTEL_SERVICE_NAME", "dkist-processing-visp")
    task = _task(UsesTelemetryHelpers)
    task()
    span = in_memory_telemetry.span("Calibrate frames")
    assert span.parent.span_id == in_memory_telemetry.span("Run").context.span_id
    assert dict(span.attributes) == {
        **task.base_telemetry_attributes,
        "frames": 12,
        "detector": "camera-1",
    }
    assert task.meter.name == "dkist"
    assert task.format_metric_name("frames.calibrated") == "dkist.processing.frames.calibrated"
    (point,) = in_memory_telemetry.metric_points("dkist.processing.frames.calibrated")
    assert point.value == 12


def test_telemetry_span_records_exceptions_of_subclass_code(task_env, in_memory_telemetry):
    task = _task()
    with pytest.raises(KeyError):
        with task.telemetry_span("Read headers"):
            raise KeyError("NAXIS")
    span = in_memory_telemetry.span("Read headers")
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


# -- the counter -----------------------------------------------------------------------------------


def test_counter_is_incremented_once_per_run(task_env, in_memory_telemetry):
    counter_name = "dkist.processing.tasks.executed"
    task = _task()
    assert task.format_metric_name("tasks.executed") == counter_name
    assert in_memory_telemetry.metric_points(counter_name) == []
    task()
    (point,) = in_memory_telemetry.metric_points(counter_name)
    assert point.value == 1
    assert dict(point.attributes) == task.base_telemetry_attributes
    task()
    (point,) = in_memory_telemetry.metric_points(counter_name)
    assert point.value == 2  # cumulative


def test_counter_counts_failed_runs_too(task_env, in_memory_telemetry):
    with pytest.raises(DetectorOnFire):
        _task(FailsInRun)()
    (point,) = in_memory_telemetry.metric_points("dkist.processing.tasks.executed")
    assert point.value == 1


def test_meter_and_metric_names_are_the_previous_products(task_env):
    # Operators' dashboards key on these names (dkist-processing-core 7.5.0: meter "dkist").
    task_env.setenv("OTEL_SERVICE_NAME", "dkist-processing-cryonirsp")
    task = _task()
    assert METER_NAME == task.meter.name == "dkist"
    assert task.format_metric_name("frames.read") == "dkist.processing.frames.read"


# -- context manager -------------------------------------------------------------------------------


def test_context_manager_returns_the_task_and_flushes_on_exit(task_env, in_memory_telemetry):
    # A batching processor holds spans until flushed: leaving the block must flush them.
    batched = BatchSpanProcessor(in_memory_telemetry.span_exporter, schedule_delay_millis=3_600_000)
    in_memory_telemetry.tracer_provider.add_span_processor(batched)
    in_memory_telemetry.span_exporter.clear()
    task = _task()
    with task as entered:
        assert entered is task
        task()
        spans_before_exit = len(in_memory_telemetry.spans())
    # The SimpleSpanProcessor already delivered 4 spans; the batch processor delivers its copies at exit.
    assert spans_before_exit == 4
    assert len(in_memory_telemetry.spans()) == 8


def test_context_manager_never_swallows(task_env, in_memory_telemetry):
    with pytest.raises(DetectorOnFire) as caught:
        with _task(FailsInRun) as task:
            task()
    assert caught.value is FailsInRun.error
    assert _task().__exit__(DetectorOnFire, FailsInRun.error, None) is None


# -- rollback through run_task ---------------------------------------------------------------------

ROLLBACK_TASKS = """
import json
import os
from pathlib import Path

from dkist_processing_core import TaskBase

LOG = Path(os.environ["ROLLBACK_LOG"])


def record(event):
    with LOG.open("a") as log:
        log.write(json.dumps(event) + "\\n")


class Succeeds(TaskBase):
    def run(self):
        record("run")

    def rollback(self):
        record("rollback")


class Fails(TaskBase):
    def run(self):
        record("run")
        raise ValueError("bad frame")

    def rollback(self):
        record("rollback")


class RollbackFails(TaskBase):
    def run(self):
        raise ValueError("bad frame")

    def rollback(self):
        record("rollback")
        raise OSError("database gone")


class DefaultRollback(TaskBase):
    def run(self):
        raise ValueError("bad frame")
"""


@pytest.fixture
def rollback_module(tmp_path, task_env, monkeypatch):
    name = unique_module_name("rollback_tasks")
    write_module(tmp_path, name, ROLLBACK_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "events.jsonl"
    monkeypatch.setenv("ROLLBACK_LOG", str(log))
    return name, log


def _events(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_rollback_is_not_called_on_success(rollback_module):
    module, log = rollback_module
    run_task(module, "Succeeds", 1, "Test_Workflow", "1.0")
    assert _events(log) == ["run"]


def test_rollback_is_never_called_for_a_failure(rollback_module):
    # A manual operation, as in the previous product: for dkist-processing-common tasks an automatic
    # rollback would delete scratch files and reset the recipe run, hiding the failure.
    module, log = rollback_module
    with pytest.raises(ValueError, match="bad frame"):
        run_task(module, "Fails", 1, "Test_Workflow", "1.0")
    assert _events(log) == ["run"]


def test_rollback_is_not_called_by_the_worker_entry_point(rollback_module):
    module, log = rollback_module
    result = run_python(
        "import sys\nfrom dkist_processing_core.run_task import main\n"
        f"sys.exit(main(['--module={module}', '--task=Fails', '--workflow-name=W', '--workflow-version=1', '--recipe-run-id=3']))",
        clean_environment(ROLLBACK_LOG=str(log), PYTHONPATH=str(log.parent)),
    )
    assert result.returncode == 1, result.stderr
    assert "task Fails failed: ValueError: bad frame" in result.stderr
    assert _events(log) == ["run"]


def test_manual_rollback_runs_the_override(rollback_module):
    module, log = rollback_module
    task_class = __import__(module).Fails
    with task_class(recipe_run_id=1, workflow_name="W", workflow_version="1") as task:
        with pytest.raises(ValueError, match="bad frame"):
            task()
        task.rollback()
    assert _events(log) == ["run", "rollback"]


def test_default_rollback_does_nothing(task_env):
    assert _task().rollback() is None


# -- class contract --------------------------------------------------------------------------------


def test_class_attributes_and_names(task_env):
    task = _task()
    assert (TaskBase.retries, TaskBase.retry_delay_seconds) == (0, 60)
    assert task.task_name == "Recorder"
    assert (task.recipe_run_id, task.workflow_name, task.workflow_version) == (
        7,
        "Test_Workflow",
        "2.0.1",
    )
    assert (
        repr(task)
        == "Recorder(recipe_run_id=7, workflow_name='Test_Workflow', workflow_version='2.0.1')"
    )


def test_run_is_abstract(task_env):
    class NoRun(TaskBase):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoRun(recipe_run_id=1, workflow_name="W", workflow_version="1")


@pytest.mark.parametrize(
    ("recipe_run_id", "expected"), [(0, 0), ("42", 42), (42.0, 42), (2**63 - 1, 2**63 - 1)]
)
def test_recipe_run_id_follows_the_one_rule(task_env, recipe_run_id, expected):
    # The edges of the rule are in test_recipe_run_id.py, for every place that takes an id.
    task = _task(recipe_run_id=recipe_run_id)
    assert task.recipe_run_id == expected
    assert type(task.recipe_run_id) is int


@pytest.mark.parametrize("recipe_run_id", [True, " 42 ", "42.0", 4.5, None, -1, 2**63])
def test_recipe_run_id_refused_by_the_one_rule(task_env, recipe_run_id):
    with pytest.raises(ValueError, match=re.escape(f"got {recipe_run_id!r}")):
        _task(recipe_run_id=recipe_run_id)


def test_workflow_name_and_version_must_be_text(task_env):
    with pytest.raises(TypeError, match="workflow_name must be a str"):
        Recorder(recipe_run_id=1, workflow_name=None, workflow_version="1")
    with pytest.raises(TypeError, match="workflow_version must be a str"):
        Recorder(recipe_run_id=1, workflow_name="W", workflow_version=1.0)


# -- file descriptor limit (in a subprocess: it changes the process) -------------------------------

RLIMIT_PROBE = """
import json, resource
from dkist_processing_core import TaskBase

class Noop(TaskBase):
    def run(self):
        pass

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, LOWER_SOFT_TO), min(hard, LOWER_HARD_TO)))
Noop(recipe_run_id=1, workflow_name="W", workflow_version="1")
Noop(recipe_run_id=2, workflow_name="W", workflow_version="1")
print(json.dumps(resource.getrlimit(resource.RLIMIT_NOFILE)))
"""


def _rlimit_probe(max_file_descriptors: str, lower_hard_to: int, lower_soft_to: int):
    code = RLIMIT_PROBE.replace("LOWER_HARD_TO", repr(lower_hard_to)).replace(
        "LOWER_SOFT_TO", repr(lower_soft_to)
    )
    result = run_python(code, clean_environment(MAX_FILE_DESCRIPTORS=max_file_descriptors))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_soft_file_descriptor_limit_is_raised_and_logged_once():
    (soft, hard), log = _rlimit_probe("2000", lower_hard_to=4096, lower_soft_to=256)
    assert (soft, hard) == (2000, 4096)
    assert log.count("soft limit of open files raised to 2000 (was 256, hard limit 4096)") == 1


def test_file_descriptor_limit_is_never_lowered():
    # The previous product never lowered it; instrument tasks open many FITS files.
    (soft, hard), log = _rlimit_probe("1024", lower_hard_to=4096, lower_soft_to=3000)
    assert (soft, hard) == (3000, 4096)
    assert (
        log.count(
            "soft limit of open files kept at 3000 (MAX_FILE_DESCRIPTORS=1024, hard limit 4096)"
        )
        == 1
    )


def test_file_descriptor_limit_never_exceeds_the_hard_limit():
    (soft, hard), log = _rlimit_probe("100000", lower_hard_to=512, lower_soft_to=256)
    assert (soft, hard) == (512, 512)
    assert log.count("MAX_FILE_DESCRIPTORS=100000 is above the hard limit 512") == 1


# -- the task log: the previous product's lines ------------------------------------------------------

LOG_PROBE = """
from dkist_processing_core import TaskBase

class Steps(TaskBase):
    def run(self):
        with self.telemetry_span("Collecting DARK"):
            pass

for recipe_run_id in (1, 2):
    with Steps(recipe_run_id=recipe_run_id, workflow_name="W", workflow_version="1") as task:
        task()
"""


def test_task_log_has_the_settings_once_and_a_line_per_span_as_in_the_previous_product():
    # 7.5.0 logged its settings (secrets masked), "Task X initialized" and "Span started/ended: X"
    # for every span; operators follow a task's progress by those lines.
    result = run_python(
        LOG_PROBE, clean_environment(ISB_PASSWORD="not-for-the-log", ISB_USERNAME="operator")
    )
    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "not-for-the-log" not in log
    assert log.count("isb_password: **********") == 1
    assert log.count("isb_username: operator") == 1
    assert log.count("Task Steps initialized") == 2
    spans = re.findall(r"Span (started|ended): (.+)", log)
    one_run = [
        ("started", "W.Steps"),
        ("started", "Pre Run"),
        ("ended", "Pre Run"),
        ("started", "Run"),
        ("started", "Collecting DARK"),
        ("ended", "Collecting DARK"),
        ("ended", "Run"),
        ("started", "Post Run"),
        ("ended", "Post Run"),
        ("ended", "W.Steps"),
    ]
    assert spans == one_run * 2
