"""TaskBase: hooks, spans, counter, attributes, context manager, rollback, file descriptor limit, ids."""

from __future__ import annotations

import json

import pytest
from dkist_processing_core import TaskBase
from dkist_processing_core.run_task import run_task
from dkist_processing_core.task import meter_name
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
    assert dict(span.attributes) == {**task.base_telemetry_attributes, "frames": 12, "detector": "camera-1"}
    assert task.meter.name == "dkist-processing-visp.meter"
    assert task.format_metric_name("frames.calibrated") == "dkist-processing-visp.meter.processing.frames.calibrated"
    (point,) = in_memory_telemetry.metric_points("dkist-processing-visp.meter.processing.frames.calibrated")
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
    counter_name = "unknown-service-name.meter.processing.tasks.executed"
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
    (point,) = in_memory_telemetry.metric_points("unknown-service-name.meter.processing.tasks.executed")
    assert point.value == 1


def test_meter_name_follows_the_service_name():
    assert meter_name("dkist-processing-cryonirsp") == "dkist-processing-cryonirsp.meter"


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


def test_rollback_is_called_on_failure_and_the_error_reraised(rollback_module):
    module, log = rollback_module
    with pytest.raises(ValueError, match="bad frame"):
        run_task(module, "Fails", 1, "Test_Workflow", "1.0")
    assert _events(log) == ["run", "rollback"]


def test_failing_rollback_keeps_the_original_error(rollback_module):
    module, log = rollback_module
    with pytest.raises(ValueError, match="bad frame"):
        run_task(module, "RollbackFails", 1, "Test_Workflow", "1.0")
    assert _events(log) == ["rollback"]


def test_default_rollback_does_nothing(rollback_module):
    module, _ = rollback_module
    with pytest.raises(ValueError, match="bad frame"):
        run_task(module, "DefaultRollback", 1, "Test_Workflow", "1.0")
    assert _task().rollback() is None


# -- class contract --------------------------------------------------------------------------------


def test_class_attributes_and_names(task_env):
    task = _task()
    assert (TaskBase.retries, TaskBase.retry_delay_seconds) == (0, 60)
    assert task.task_name == "Recorder"
    assert (task.recipe_run_id, task.workflow_name, task.workflow_version) == (7, "Test_Workflow", "2.0.1")
    assert repr(task) == "Recorder(recipe_run_id=7, workflow_name='Test_Workflow', workflow_version='2.0.1')"


def test_run_is_abstract(task_env):
    class NoRun(TaskBase):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoRun(recipe_run_id=1, workflow_name="W", workflow_version="1")


@pytest.mark.parametrize("recipe_run_id", [0, 1, 2**40])
def test_recipe_run_id_accepts_non_negative_ints(task_env, recipe_run_id):
    assert _task(recipe_run_id=recipe_run_id).recipe_run_id == recipe_run_id


@pytest.mark.parametrize(
    ("recipe_run_id", "error", "message"),
    [
        (True, TypeError, "must be an int, got bool"),
        (False, TypeError, "must be an int, got bool"),
        ("5", TypeError, "must be an int, got str '5'"),
        ("1; rm -rf /", TypeError, "must be an int, got str"),
        (5.0, TypeError, "must be an int, got float"),
        (None, TypeError, "must be an int, got NoneType"),
        (-1, ValueError, "must be a non-negative int, got -1"),
    ],
)
def test_recipe_run_id_rejects_everything_else(task_env, recipe_run_id, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(")):
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
if LOWER_HARD_TO is not None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, LOWER_HARD_TO), LOWER_HARD_TO))
Noop(recipe_run_id=1, workflow_name="W", workflow_version="1")
Noop(recipe_run_id=2, workflow_name="W", workflow_version="1")
print(json.dumps(resource.getrlimit(resource.RLIMIT_NOFILE)))
"""


def _rlimit_probe(max_file_descriptors: str, lower_hard_to: int | None):
    code = RLIMIT_PROBE.replace("LOWER_HARD_TO", repr(lower_hard_to))
    result = run_python(code, clean_environment(MAX_FILE_DESCRIPTORS=max_file_descriptors))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_soft_file_descriptor_limit_is_set_and_logged_once():
    (soft, hard), log = _rlimit_probe("256", lower_hard_to=None)
    assert soft == 256
    assert log.count("soft limit of open files set to 256") == 1


def test_file_descriptor_limit_never_exceeds_the_hard_limit():
    (soft, hard), log = _rlimit_probe("100000", lower_hard_to=512)
    assert (soft, hard) == (512, 512)
    assert log.count("MAX_FILE_DESCRIPTORS=100000 is above the hard limit 512") == 1
