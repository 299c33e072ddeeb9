"""An OTLP gRPC receiver for tests: a real grpc server implementing the collector's trace and metrics services.

    from helpers.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        env = {**os.environ, **receiver.environment()}   # point a subprocess at it
        subprocess.run([...], env=env, check=True)
        spans = receiver.wait_for_spans(4)
        assert "My_Workflow.MyTask" in receiver.span_names()
        receiver.wait_for_metric("dkist.processing.tasks.executed")

Or use the pytest fixture ``otlp_receiver`` (import it into a conftest.py). The server listens on
127.0.0.1 with a port the OS picks, so tests can run in parallel. ``reject_with`` makes the
receiver answer every export with a gRPC error, to test exporters against a failing collector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

__all__ = ["OtlpReceiver", "ReceivedMetricPoint", "ReceivedSpan", "otlp_receiver"]

_STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(key_values: Any) -> dict[str, Any]:
    return {item.key: _any_value(item.value) for item in key_values}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector received it."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    status: str  # UNSET, OK or ERROR
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str


@dataclass(frozen=True)
class ReceivedMetricPoint:
    """One data point of one metric as the collector received it."""

    name: str
    kind: str  # sum, gauge, histogram, exponential_histogram, summary
    value: float | int | None  # sum/gauge value; histogram: the sum of the observations
    count: int | None  # histogram: number of observations
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str


@dataclass
class _Store:
    condition: threading.Condition = field(default_factory=threading.Condition)
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedMetricPoint] = field(default_factory=list)
    trace_requests: int = 0
    metric_requests: int = 0


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # grpc names the method
        store = self._receiver._store
        with store.condition:
            store.trace_requests += 1
        if self._receiver.reject_with is not None:
            context.abort(self._receiver.reject_with, "rejected by the test receiver")
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            attributes=_attributes(span.attributes),
                            status=_STATUS_NAMES.get(span.status.code, str(span.status.code)),
                            status_message=span.status.message,
                            events=[
                                (event.name, _attributes(event.attributes)) for event in span.events
                            ],
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
        with store.condition:
            store.spans.extend(received)
            store.condition.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # grpc names the method
        store = self._receiver._store
        with store.condition:
            store.metric_requests += 1
        if self._receiver.reject_with is not None:
            context.abort(self._receiver.reject_with, "rejected by the test receiver")
        received = []
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    for point in getattr(metric, kind).data_points:
                        if kind in ("sum", "gauge"):
                            number = point.WhichOneof("value")
                            value = getattr(point, number) if number else None
                            count = None
                        else:
                            value = (
                                point.sum if kind == "summary" or point.HasField("sum") else None
                            )
                            count = point.count
                        received.append(
                            ReceivedMetricPoint(
                                name=metric.name,
                                kind=kind,
                                value=value,
                                count=count,
                                attributes=_attributes(point.attributes),
                                resource=resource,
                                scope=scope_metrics.scope.name,
                            )
                        )
        with store.condition:
            store.points.extend(received)
            store.condition.notify_all()
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    """A grpc server on 127.0.0.1 (port chosen by the OS) that collects OTLP spans and metrics."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._store = _Store()
        self._server: grpc.Server | None = None
        self.port: int | None = None
        self.reject_with: grpc.StatusCode | None = None
        """Set to a status code to answer every export with that error."""

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), server)
        self.port = server.add_insecure_port(f"{self._host}:0")
        if not self.port:
            raise RuntimeError(f"the OTLP test receiver could not bind a port on {self._host}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``host:port`` for ``OTEL_EXPORTER_OTLP_*_ENDPOINT`` (insecure gRPC)."""
        if self.port is None:
            raise RuntimeError("the receiver is not started")
        return f"{self._host}:{self.port}"

    def environment(self, *, traces: bool = True, metrics: bool = True) -> dict[str, str]:
        """Environment variables that point dkist-processing-core (in a subprocess) at this receiver."""
        env = {}
        if traces:
            env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = self.endpoint
            env["OTEL_EXPORTER_OTLP_TRACES_INSECURE"] = "true"
        if metrics:
            env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = self.endpoint
            env["OTEL_EXPORTER_OTLP_METRICS_INSECURE"] = "true"
        return env

    # -- what arrived ------------------------------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        with self._store.condition:
            return list(self._store.spans)

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans()]

    def span(self, name: str) -> ReceivedSpan:
        """The one span called ``name`` (AssertionError when there are none or several)."""
        matching = [span for span in self.spans() if span.name == name]
        assert len(matching) == 1, f"expected one span {name!r}, received {self.span_names()}"
        return matching[0]

    def metric_points(self, name: str | None = None) -> list[ReceivedMetricPoint]:
        with self._store.condition:
            return [point for point in self._store.points if name is None or point.name == name]

    def metric_names(self) -> set[str]:
        return {point.name for point in self.metric_points()}

    @property
    def export_requests(self) -> tuple[int, int]:
        """Number of (trace, metrics) export calls received, including rejected ones."""
        with self._store.condition:
            return self._store.trace_requests, self._store.metric_requests

    # -- waiting -----------------------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` is true (checked after every export); AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._store.condition:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"OTLP receiver at {self.endpoint}: {what} not met within {timeout} s; "
                        f"spans {[span.name for span in self._store.spans]}, "
                        f"metrics {sorted({point.name for point in self._store.points})}"
                    )
                self._store.condition.wait(remaining)

    def wait_for_spans(self, count: int, timeout: float = 30.0) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans arrived and return all spans."""
        self.wait_for(lambda: len(self._store.spans) >= count, timeout, f"{count} spans")
        return self.spans()

    def wait_for_metric(self, name: str, timeout: float = 30.0) -> list[ReceivedMetricPoint]:
        """Wait until a data point of metric ``name`` arrived and return the points of that metric."""
        self.wait_for(
            lambda: any(point.name == name for point in self._store.points),
            timeout,
            f"metric {name!r}",
        )
        return self.metric_points(name)


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started :class:`OtlpReceiver`, stopped after the test."""
    with OtlpReceiver() as receiver:
        yield receiver
