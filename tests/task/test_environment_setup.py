"""The worker program's environment setup, recorded in the task's trace and metrics."""

from __future__ import annotations

import time

import pytest
from dkist_processing_core import TaskBase
from dkist_processing_core.environment_setup import ENVIRONMENT_VARIABLES
from dkist_processing_core.environment_setup import take_environment_setup


class Quick(TaskBase):
    def run(self) -> None:
        pass


def _report(monkeypatch, installer="uv", cache="hit", seconds=2.5) -> tuple[int, int]:
    end = time.time_ns() - 10_000_000
    start = end - int(seconds * 1e9)
    for name, value in zip(
        ENVIRONMENT_VARIABLES, (installer, cache, str(start), str(end)), strict=True
    ):
        monkeypatch.setenv(name, value)
    return start, end


def test_the_setup_is_a_span_of_the_task_trace_with_its_real_times(
    task_env, in_memory_telemetry, monkeypatch
):
    start, end = _report(monkeypatch, installer="pip", cache="built")
    with Quick(recipe_run_id=3, workflow_name="W", workflow_version="1.0.0") as task:
        task()
    root = in_memory_telemetry.span("W.Quick")
    setup = in_memory_telemetry.span("Environment Setup")
    assert (setup.start_time, setup.end_time) == (start, end)
    assert setup.parent.span_id == root.context.span_id
    assert setup.context.trace_id == root.context.trace_id
    assert root.start_time == start  # the task's trace begins where its environment did
    assert dict(setup.attributes) == {
        **task.base_telemetry_attributes,
        "installer": "pip",
        "cache": "built",
    }
    children = [
        span.name
        for span in in_memory_telemetry.spans()
        if span.parent and span.parent.span_id == root.context.span_id
    ]
    assert children == ["Environment Setup", "Pre Run", "Run", "Post Run"]

    (point,) = in_memory_telemetry.metric_points("dkist.processing.environment.setup.duration")
    assert dict(point.attributes) == {"installer": "pip", "cache": "built"}
    assert point.count == 1 and point.sum == pytest.approx((end - start) / 1e9)


def test_recorded_once_per_process_and_not_passed_on(task_env, in_memory_telemetry, monkeypatch):
    import os

    _report(monkeypatch)
    for _ in range(2):
        with Quick(recipe_run_id=3, workflow_name="W", workflow_version="1.0.0") as task:
            task()
    assert in_memory_telemetry.span_names().count("Environment Setup") == 1
    assert not any(name in os.environ for name in ENVIRONMENT_VARIABLES)


def test_without_a_report_nothing_changes(task_env, in_memory_telemetry):
    with Quick(recipe_run_id=3, workflow_name="W", workflow_version="1.0.0") as task:
        task()
    assert "Environment Setup" not in in_memory_telemetry.span_names()
    assert in_memory_telemetry.metric_points("dkist.processing.environment.setup.duration") == []


@pytest.mark.parametrize(
    "values",
    [
        ("uv", "hit", "abc", "12"),
        ("uv", "hit", "20", "10"),  # ends before it starts
        ("u v; x", "hit", "1", "2"),
        ("", "", "", ""),
        ("uv", "hit", "\u00b2", "3"),  # str.isdigit() says yes, int() says no
        ("uv", "hit", "1", "\u0661"),  # Arabic-Indic: int() reads it, the worker never writes it
    ],
)
def test_a_malformed_report_is_ignored(values):
    environ = dict(zip(ENVIRONMENT_VARIABLES, values, strict=True))
    assert take_environment_setup(environ) is None
    assert environ == {}
