"""SDK providers with in-memory exporters, installed with ``dkist_processing_core.telemetry.install_providers``.

    def test_spans(in_memory_telemetry):
        ...run a task in this process...
        assert in_memory_telemetry.span_names() == ["Pre Run", "Run", "Post Run", "W.Task"]

Import the fixture into a conftest.py (``from helpers.in_memory_telemetry import in_memory_telemetry``).
OpenTelemetry's global providers are not touched; the process's providers are reset after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dkist_processing_core import telemetry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["InMemoryTelemetry", "in_memory_telemetry"]


class InMemoryTelemetry:
    """Finished spans and collected metric points of the providers it installed."""

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    def install(self) -> InMemoryTelemetry:
        telemetry.install_providers(self.tracer_provider, self.meter_provider)
        return self

    def spans(self) -> list[ReadableSpan]:
        return list(self.span_exporter.get_finished_spans())

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans()]

    def span(self, name: str) -> ReadableSpan:
        matching = [span for span in self.spans() if span.name == name]
        assert len(matching) == 1, f"expected one span {name!r}, got {self.span_names()}"
        return matching[0]

    def metric_points(self, name: str) -> list[Any]:
        """Data points of metric ``name`` collected now (cumulative sums for counters)."""
        data = self.metric_reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def close(self) -> None:
        telemetry.reset_telemetry()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def in_memory_telemetry() -> Iterator[InMemoryTelemetry]:
    """In-memory SDK providers installed for the test, removed afterwards."""
    recorder = InMemoryTelemetry().install()
    try:
        yield recorder
    finally:
        recorder.close()
