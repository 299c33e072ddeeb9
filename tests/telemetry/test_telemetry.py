"""Telemetry: a silent no-op without an endpoint; spans and metrics reach a real OTLP gRPC receiver with one."""

from __future__ import annotations

import json

import pytest
from dkist_processing_core import telemetry
from helpers.rabbitmq import require_rabbitmq
from helpers.task_modules import clean_environment
from helpers.task_modules import run_python
from helpers.task_modules import run_task_process
from helpers.task_modules import unique_module_name
from helpers.task_modules import write_module
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

HEAVY_MODULES = (
    "grpc",
    "opentelemetry.exporter",
    "opentelemetry.sdk",
    "opentelemetry.instrumentation",
)

TASKS = """
import http.server
import threading

from dkist_processing_core import TaskBase


class Noop(TaskBase):
    def run(self):
        pass


class Fails(TaskBase):
    def run(self):
        raise RuntimeError("the detector is on fire")


class TalksToServices(TaskBase):
    \"\"\"Publishes to RabbitMQ with pika and GETs a local web server with requests.\"\"\"

    def run(self):
        import pika
        import requests

        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
        try:
            channel = connection.channel()
            channel.basic_publish(exchange="", routing_key="dkist-test-nowhere", body=b"{}")
        finally:
            connection.close()

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            requests.get(f"http://127.0.0.1:{server.server_port}/", timeout=10)
        finally:
            server.shutdown()
"""


@pytest.fixture
def tasks_module(tmp_path):
    name = unique_module_name("telemetry_tasks")
    write_module(tmp_path, name, TASKS)
    return name


# -- no endpoint: no-op ----------------------------------------------------------------------------

NO_OP_PROBE = """
import json, sys

connections = []
def audit(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        connections.append(event)
sys.addaudithook(audit)

from dkist_processing_core import telemetry
from dkist_processing_core.run_task import run_task

providers = telemetry.telemetry_providers()
tracer = telemetry.get_tracer("probe")
with tracer.start_as_current_span("a span") as span:
    span.set_attribute("k", "v")
telemetry.get_meter("probe").create_counter("probe.count").add(1)
run_task(MODULE, "Noop", 5, "Probe_Workflow", "1.0")
flushed = telemetry.flush_telemetry()
print(json.dumps({
    "heavy": sorted(m for m in sys.modules if m.startswith(HEAVY)),
    "connections": connections,
    "exports_traces": providers.exports_traces,
    "exports_metrics": providers.exports_metrics,
    "instrumentations": list(providers.instrumentations),
    "flushed": flushed,
}))
"""


def test_without_endpoint_telemetry_is_a_silent_no_op(tmp_path, tasks_module):
    code = NO_OP_PROBE.replace("MODULE", repr(tasks_module)).replace("HEAVY", repr(HEAVY_MODULES))
    result = run_python(code, clean_environment(tmp_path, LOGURU_LEVEL="DEBUG"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "heavy": [],
        "connections": [],
        "exports_traces": False,
        "exports_metrics": False,
        "instrumentations": [],
        "flushed": True,
    }
    for word in ("WARNING", "ERROR", "Traceback"):
        assert word not in result.stderr


def test_flush_before_any_use_creates_nothing():
    result = run_python(
        """
        import sys
        from dkist_processing_core.telemetry import flush_telemetry
        assert flush_telemetry() is True
        assert not [m for m in sys.modules if m.startswith(("opentelemetry", "pydantic"))]
        print("nothing created")
        """,
        clean_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing created"


# -- providers installed by tests and clients ------------------------------------------------------


def test_installed_providers_are_used_and_globals_stay_untouched(core_env, in_memory_telemetry):
    global_before = trace.get_tracer_provider()
    with telemetry.get_tracer("client").start_as_current_span("client work"):
        pass
    telemetry.get_meter("client.meter").create_counter("client.count").add(2)
    assert in_memory_telemetry.span_names() == ["client work"]
    assert [point.value for point in in_memory_telemetry.metric_points("client.count")] == [2]
    assert telemetry.telemetry_providers().installed is True
    assert trace.get_tracer_provider() is global_before


def test_reset_goes_back_to_the_configuration(core_env):
    custom = TracerProvider()
    telemetry.install_providers(tracer_provider=custom)
    assert telemetry.get_tracer_provider() is custom
    assert type(telemetry.get_meter_provider()).__name__ == "NoOpMeterProvider"
    telemetry.reset_telemetry()
    providers = telemetry.telemetry_providers()
    assert providers.installed is False
    assert type(providers.tracer_provider).__name__ == "NoOpTracerProvider"
    custom.shutdown()


class _FlushFails:
    """A provider whose exporter breaks while flushing (a fault a real exporter cannot be made to raise)."""

    def get_tracer(self, *args, **kwargs):  # pragma: no cover - not used
        raise AssertionError

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        raise ConnectionError("collector vanished")


def test_flush_never_raises(core_env):
    telemetry.install_providers(tracer_provider=_FlushFails())  # type: ignore[arg-type]
    assert telemetry.flush_telemetry(timeout_seconds=1) is False


# -- with an endpoint: a real OTLP gRPC receiver ---------------------------------------------------


def _service_env(receiver, tmp_path, **extra):
    """A worker's environment pointing at ``receiver``; system metrics off unless ``extra`` says otherwise."""
    variables = {
        **receiver.environment(),
        "OTEL_SERVICE_NAME": "dkist-processing-test",
        "DKIST_SERVICE_VERSION": "9.8.7",
        "NOMAD_ALLOC_ID": "alloc-1",
        "NOMAD_ALLOC_NAME": "workers.worker[3]",
        "NOMAD_GROUP_NAME": "workers",
        "RECIPE_RUN_ID": "42",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "system_metrics",
        **extra,
    }
    return clean_environment(tmp_path, **variables)


def _assert_task_span_tree(receiver, root_name):
    root = receiver.span(root_name)
    assert root.parent_span_id is None
    children = [span for span in receiver.spans() if span.parent_span_id == root.span_id]
    assert sorted(span.name for span in children) == ["Post Run", "Pre Run", "Run"]
    assert {span.trace_id for span in children} == {root.trace_id}
    return root


def test_spans_and_metrics_reach_the_receiver(otlp_receiver, tmp_path, tasks_module):
    result = run_task_process(
        tasks_module, "Noop", _service_env(otlp_receiver, tmp_path), workflow_name="Demo_Flow"
    )
    assert result.returncode == 0, result.stderr

    otlp_receiver.wait_for_spans(4)
    root = _assert_task_span_tree(otlp_receiver, "Demo_Flow.Noop")
    assert root.status == "OK"
    assert root.attributes == {
        "recipe.run.id": 42,
        "workflow.name": "Demo_Flow",
        "workflow.version": "1.0.0",
        "task.name": "Noop",
        "nomad.allocation.id": "alloc-1",
        "nomad.allocation.name": "workers.worker[3]",
        "nomad.allocation.group": "workers",
        "dkist.root": "True",
    }
    assert root.resource["service.name"] == "dkist-processing-test"
    assert root.resource["service.version"] == "9.8.7"
    assert root.resource["nomad.allocation.id"] == "alloc-1"

    points = otlp_receiver.wait_for_metric("dkist.processing.tasks.executed")
    assert {point.value for point in points} == {1}  # cumulative: one run
    assert points[0].attributes["task.name"] == "Noop"
    assert points[0].attributes["recipe.run.id"] == 42
    assert points[0].resource["service.name"] == "dkist-processing-test"


def test_failed_task_spans_carry_the_exception(otlp_receiver, tmp_path, tasks_module):
    result = run_task_process(
        tasks_module, "Fails", _service_env(otlp_receiver, tmp_path), workflow_name="Demo_Flow"
    )
    assert result.returncode == 1
    otlp_receiver.wait_for_spans(3)
    root = otlp_receiver.span("Demo_Flow.Fails")
    run = otlp_receiver.span("Run")
    assert "Post Run" not in otlp_receiver.span_names()
    for span in (root, run):
        assert span.status == "ERROR"
        exception_events = [attributes for name, attributes in span.events if name == "exception"]
        assert exception_events and exception_events[0]["exception.type"] == "RuntimeError"
        assert exception_events[0]["exception.message"] == "the detector is on fire"


def test_endpoints_from_the_service_mesh(otlp_receiver, tmp_path, tasks_module):
    mesh = {
        "otlp-traces-endpoint": {"mesh_address": "127.0.0.1", "mesh_port": otlp_receiver.port},
        "otlp-metrics-endpoint": {"mesh_address": "127.0.0.1", "mesh_port": otlp_receiver.port},
    }
    env = clean_environment(tmp_path, MESH_CONFIG=json.dumps(mesh), RECIPE_RUN_ID="1")
    result = run_task_process(tasks_module, "Noop", env, workflow_name="Mesh_Flow")
    assert result.returncode == 0, result.stderr
    _assert_task_span_tree(otlp_receiver, "Mesh_Flow.Noop")
    otlp_receiver.wait_for_metric("dkist.processing.tasks.executed")


def test_only_traces_configured_sends_no_metrics(otlp_receiver, tmp_path, tasks_module):
    env = clean_environment(
        tmp_path,
        **otlp_receiver.environment(metrics=False),
        RECIPE_RUN_ID="1",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="system_metrics",
    )
    result = run_task_process(tasks_module, "Noop", env)
    assert result.returncode == 0, result.stderr
    otlp_receiver.wait_for_spans(4)
    assert otlp_receiver.export_requests[1] == 0


def test_secure_connection_is_used_when_insecure_is_false(otlp_receiver, tmp_path, tasks_module):
    # The receiver speaks plain gRPC: a TLS client cannot deliver to it. The task still succeeds.
    env = _service_env(
        otlp_receiver,
        tmp_path,
        OTEL_EXPORTER_OTLP_TRACES_INSECURE="false",
        OTEL_EXPORTER_OTLP_METRICS_INSECURE="false",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
    )
    result = run_task_process(tasks_module, "Noop", env)
    assert result.returncode == 0, result.stderr
    assert otlp_receiver.spans() == []
    assert otlp_receiver.metric_points() == []


def test_exporting_providers_become_the_globals(otlp_receiver, tmp_path):
    code = """
        from opentelemetry import metrics, trace
        from dkist_processing_core import telemetry
        providers = telemetry.telemetry_providers()
        assert trace.get_tracer_provider() is providers.tracer_provider
        assert metrics.get_meter_provider() is providers.meter_provider
        with trace.get_tracer("client.library").start_as_current_span("client library span"):
            pass
        telemetry.flush_telemetry()
    """
    result = run_python(code, _service_env(otlp_receiver, tmp_path))
    assert result.returncode == 0, result.stderr
    otlp_receiver.wait_for_spans(1)
    assert otlp_receiver.span("client library span").scope == "client.library"


def test_a_global_provider_set_by_the_application_is_kept(otlp_receiver, tmp_path):
    code = """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        application_provider = TracerProvider()
        trace.set_tracer_provider(application_provider)
        from dkist_processing_core import telemetry
        providers = telemetry.telemetry_providers()
        assert trace.get_tracer_provider() is application_provider
        assert providers.tracer_provider is not application_provider
        print("kept")
    """
    result = run_python(code, _service_env(otlp_receiver, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "kept"
    assert "Overriding" not in result.stderr


# -- auto-instrumentation ---------------------------------------------------------------------------


def require_instrumentation_extra() -> None:
    """Fail (not skip) when the optional instrumentations are not installed in the test environment."""
    import importlib.util

    for name in ("pika", "requests", "system_metrics"):
        try:
            found = importlib.util.find_spec(f"opentelemetry.instrumentation.{name}") is not None
        except ImportError:
            found = False
        if not found:
            pytest.fail(
                f"opentelemetry-instrumentation-{name.replace('_', '-')} is not installed; install the extra with "
                "`pip install -e 'packages/core-telemetry[instrumentation]'`",
                pytrace=False,
            )


def test_pika_requests_and_system_metrics_are_instrumented(otlp_receiver, tmp_path, tasks_module):
    require_rabbitmq()
    require_instrumentation_extra()
    env = _service_env(
        otlp_receiver,
        tmp_path,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="",
        SYSTEM_METRIC_INSTRUMENTATION_CONFIG=json.dumps(
            {
                "system.memory.usage": ["used"],
                "process.runtime.memory": True,
                "system.cpu.time": False,
            }
        ),
    )
    result = run_task_process(tasks_module, "TalksToServices", env, workflow_name="Bus_Flow")
    assert result.returncode == 0, result.stderr
    otlp_receiver.wait_for_spans(6)
    run = otlp_receiver.span("Run")
    library_spans = {
        span.scope.split(".")[2]: span
        for span in otlp_receiver.spans()
        if span.parent_span_id == run.span_id
    }  # scopes are opentelemetry.instrumentation.<library>[.<module>]
    assert library_spans["pika"].name == "dkist-test-nowhere send"
    assert library_spans["requests"].name == "GET"

    otlp_receiver.wait_for_metric("system.memory.usage")
    system_metrics = {
        name
        for name in otlp_receiver.metric_names()
        if name.startswith(("system.", "process.", "cpython."))
    }
    assert system_metrics == {"system.memory.usage", "process.runtime.cpython.memory"}
    assert {
        point.attributes["state"] for point in otlp_receiver.metric_points("system.memory.usage")
    } == {"used"}


def test_disabled_instrumentations_stay_off(otlp_receiver, tmp_path, tasks_module):
    require_rabbitmq()
    require_instrumentation_extra()
    env = _service_env(
        otlp_receiver,
        tmp_path,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS='["pika", "requests", "system_metrics"]',
    )
    result = run_task_process(tasks_module, "TalksToServices", env, workflow_name="Bus_Flow")
    assert result.returncode == 0, result.stderr
    otlp_receiver.wait_for_spans(4)
    otlp_receiver.wait_for_metric("dkist.processing.tasks.executed")
    assert sorted(otlp_receiver.span_names()) == [
        "Bus_Flow.TalksToServices",
        "Post Run",
        "Pre Run",
        "Run",
    ]
    assert otlp_receiver.metric_names() == {"dkist.processing.tasks.executed"}


HIDE_INSTRUMENTATION = """
import sys

class HideInstrumentation:
    # Behaves as if dkist-processing-core-telemetry[instrumentation] were not installed.
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.instrumentation" or name.startswith("opentelemetry.instrumentation."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideInstrumentation())
"""


def test_without_the_extra_nothing_is_instrumented_or_imported(otlp_receiver, tmp_path):
    code = (
        HIDE_INSTRUMENTATION
        + """
import json
from dkist_processing_core import telemetry
providers = telemetry.telemetry_providers()
with telemetry.get_tracer("probe").start_as_current_span("still traced"):
    pass
telemetry.flush_telemetry()
print(json.dumps({
    "instrumentations": list(providers.instrumentations),
    "imported": sorted(m for m in sys.modules if m.startswith("opentelemetry.instrumentation")),
}))
"""
    )
    env = _service_env(
        otlp_receiver, tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="", LOGURU_LEVEL="DEBUG"
    )
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"instrumentations": [], "imported": []}
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr
    otlp_receiver.wait_for_spans(1)
    assert otlp_receiver.span_names() == ["still traced"]
