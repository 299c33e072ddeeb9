"""OpenTelemetry tracer and meter providers of this process, created lazily, once.

With an OTLP endpoint configured (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, else ``MESH_CONFIG["otlp-traces-endpoint"]`` /
``["otlp-metrics-endpoint"]``) the SDK providers export over gRPC (``BatchSpanProcessor``,
``PeriodicExportingMetricReader``), with the resource ``service.name`` = ``OTEL_SERVICE_NAME`` and
``service.version`` = ``DKIST_SERVICE_VERSION``. Without one, telemetry is a no-op: no SDK, exporter
or grpc module is imported, nothing touches the network and nothing is logged above DEBUG.

The providers are kept here, not only in OpenTelemetry's set-once globals, so that tests and
clients can put their own in place with :func:`install_providers` (for example SDK providers with an
``InMemorySpanExporter``) and go back with :func:`reset_telemetry`. Exporting providers created here
are also registered as the OpenTelemetry globals when nothing else registered one first, so code
that calls ``opentelemetry.trace.get_tracer`` directly exports too.

Auto-instrumentation: when the extra ``dkist-processing-core-telemetry[instrumentation]`` is
installed and an endpoint is configured, the pika and requests instrumentations (traces endpoint)
and the system metrics instrumentation (metrics endpoint) are switched on, except those named in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``. Without the extra nothing of it is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration
    from opentelemetry.metrics import Meter
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.trace import TracerProvider

__all__ = [
    "INSTRUMENTATIONS",
    "TelemetryProviders",
    "flush_telemetry",
    "get_meter",
    "get_meter_provider",
    "get_tracer",
    "get_tracer_provider",
    "install_providers",
    "reset_telemetry",
    "telemetry_providers",
]

_log = logging.getLogger(__name__)

# name in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS -> (instrumentation module, instrumentor class, library it instruments)
INSTRUMENTATIONS: dict[str, tuple[str, str, str]] = {
    "pika": ("opentelemetry.instrumentation.pika", "PikaInstrumentor", "pika"),
    "requests": ("opentelemetry.instrumentation.requests", "RequestsInstrumentor", "requests"),
    "system_metrics": ("opentelemetry.instrumentation.system_metrics", "SystemMetricsInstrumentor", "psutil"),
}


@dataclass(frozen=True)
class TelemetryProviders:
    """The providers this process uses, and what they do."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exports_traces: bool = False
    """True when spans go to an OTLP endpoint (providers built from the configuration)."""
    exports_metrics: bool = False
    """True when metrics go to an OTLP endpoint (providers built from the configuration)."""
    instrumentations: tuple[str, ...] = ()
    """Auto-instrumentations switched on for these providers."""
    installed: bool = False
    """True for providers put in place with :func:`install_providers`."""


_lock = threading.RLock()
_providers: TelemetryProviders | None = None


def telemetry_providers(configuration: DKISTProcessingCoreConfiguration | None = None) -> TelemetryProviders:
    """The providers of this process: built from ``configuration`` (default: the environment) on first use."""
    global _providers
    providers = _providers
    if providers is not None:
        return providers
    with _lock:
        if _providers is None:
            if configuration is None:
                from dkist_processing_core.config import core_configuration

                configuration = core_configuration()
            _providers = _build_providers(configuration)
        return _providers


def get_tracer_provider() -> TracerProvider:
    """The tracer provider of this process (see :func:`telemetry_providers`)."""
    return telemetry_providers().tracer_provider


def get_meter_provider() -> MeterProvider:
    """The meter provider of this process (see :func:`telemetry_providers`)."""
    return telemetry_providers().meter_provider


def get_tracer(name: str, version: str | None = None) -> Tracer:
    """A tracer of this process's tracer provider (a no-op tracer when no endpoint is configured)."""
    return get_tracer_provider().get_tracer(name, version)


def get_meter(name: str, version: str | None = None) -> Meter:
    """A meter of this process's meter provider (a no-op meter when no endpoint is configured)."""
    return get_meter_provider().get_meter(name, version)


def install_providers(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> TelemetryProviders:
    """Use these providers in this process from now on instead of building them from the configuration.

    A provider left out is a no-op one. OpenTelemetry's global providers are not touched, so this
    can be called again (tests do it once per test). Returns what is now in place.
    """
    global _providers
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    providers = TelemetryProviders(
        tracer_provider=tracer_provider if tracer_provider is not None else NoOpTracerProvider(),
        meter_provider=meter_provider if meter_provider is not None else NoOpMeterProvider(),
        installed=True,
    )
    with _lock:
        _providers = providers
    return providers


def reset_telemetry() -> None:
    """Forget the providers in place; the next use builds them again from the configuration.

    The forgotten providers are neither flushed nor shut down: whoever made them owns them.
    """
    global _providers
    with _lock:
        _providers = None


def flush_telemetry(timeout_seconds: float = 10.0) -> bool:
    """Export what the providers hold, waiting at most ``timeout_seconds`` in all; never raises.

    Returns True when everything was exported (or nothing was pending). Providers that were never
    created are not created by this call.
    """
    providers = _providers
    if providers is None:
        return True
    deadline = time.monotonic() + max(timeout_seconds, 0.0)
    flushed = True
    for provider in (providers.tracer_provider, providers.meter_provider):
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is None:
            continue  # the API's no-op providers have nothing to flush
        remaining_millis = max(int((deadline - time.monotonic()) * 1000), 0)
        try:
            result = force_flush(timeout_millis=remaining_millis)
        except Exception as error:  # an exporter fault must not hide the task's own outcome
            _log.warning("flushing telemetry failed: %s: %s", type(error).__name__, error)
            flushed = False
            continue
        flushed = flushed and result is not False
    if not flushed:
        _log.warning("not all telemetry could be exported within %.1f s", timeout_seconds)
    return flushed


def _build_providers(configuration: DKISTProcessingCoreConfiguration) -> TelemetryProviders:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    traces_endpoint = configuration.otlp_traces_endpoint
    metrics_endpoint = configuration.otlp_metrics_endpoint
    if not traces_endpoint and not metrics_endpoint:
        _log.debug("telemetry is off: no OTLP traces or metrics endpoint is configured")
        return TelemetryProviders(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())

    resource = _resource(configuration)
    tracer_provider: Any = NoOpTracerProvider()
    meter_provider: Any = NoOpMeterProvider()
    if traces_endpoint:
        tracer_provider = _exporting_tracer_provider(
            resource, traces_endpoint, configuration.otel_exporter_otlp_traces_insecure
        )
    if metrics_endpoint:
        meter_provider = _exporting_meter_provider(
            resource, metrics_endpoint, configuration.otel_exporter_otlp_metrics_insecure
        )
    _register_globals(tracer_provider if traces_endpoint else None, meter_provider if metrics_endpoint else None)
    instrumentations = _auto_instrument(
        configuration,
        tracer_provider=tracer_provider if traces_endpoint else None,
        meter_provider=meter_provider if metrics_endpoint else None,
    )
    _log.debug(
        "telemetry: traces to %s, metrics to %s, instrumentations %s",
        traces_endpoint or "nowhere",
        metrics_endpoint or "nowhere",
        ", ".join(instrumentations) or "none",
    )
    return TelemetryProviders(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        exports_traces=bool(traces_endpoint),
        exports_metrics=bool(metrics_endpoint),
        instrumentations=instrumentations,
    )


def _resource(configuration: DKISTProcessingCoreConfiguration) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create(
        {
            "service.name": configuration.otel_service_name,
            "service.version": configuration.dkist_service_version,
            "nomad.allocation.id": configuration.nomad_alloc_id,
            "nomad.allocation.name": configuration.nomad_alloc_name,
            "nomad.allocation.group": configuration.nomad_group_name,
        }
    )


def _exporting_tracer_provider(resource: Any, endpoint: str, insecure: bool) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure)))
    return provider


def _exporting_meter_provider(resource: Any, endpoint: str, insecure: bool) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=insecure))
    return MeterProvider(resource=resource, metric_readers=[reader])


def _register_globals(tracer_provider: Any | None, meter_provider: Any | None) -> None:
    """Make exporting providers OpenTelemetry's globals unless something registered its own first."""
    from opentelemetry import metrics
    from opentelemetry import trace

    if tracer_provider is not None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(tracer_provider)
    # The API has no public "is a meter provider set" check; its placeholder is _ProxyMeterProvider.
    if meter_provider is not None and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        metrics.set_meter_provider(meter_provider)


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _system_metrics_config(selection: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any] | None:
    """Translate ``SYSTEM_METRIC_INSTRUMENTATION_CONFIG`` into the instrumentor's ``config``.

    A list selects those labels, True the metric with the instrumentor's default labels, False leaves
    the metric out. No selection means the instrumentor's defaults.
    """
    if selection is None:
        return None
    config: dict[str, Any] = {}
    for metric, choice in selection.items():
        if metric not in defaults:
            _log.warning("SYSTEM_METRIC_INSTRUMENTATION_CONFIG names unknown system metric %r; ignored", metric)
            continue
        if choice is True:
            config[metric] = defaults[metric]
        elif choice is not False:
            config[metric] = list(choice)
    return config


def _auto_instrument(
    configuration: DKISTProcessingCoreConfiguration,
    *,
    tracer_provider: Any | None,
    meter_provider: Any | None,
) -> tuple[str, ...]:
    disabled = {name.strip().lower().replace("-", "_") for name in configuration.otel_python_disabled_instrumentations}
    switched_on = []
    for name, (module_name, class_name, library) in INSTRUMENTATIONS.items():
        wants_traces = name != "system_metrics"
        provider = tracer_provider if wants_traces else meter_provider
        if name in disabled or provider is None:
            continue
        if not (_module_available(library) and _module_available(module_name)):
            continue  # the extra (or the library it instruments) is not installed
        try:
            module = importlib.import_module(module_name)
            instrumentor_class = getattr(module, class_name)
            if name == "system_metrics":
                config = _system_metrics_config(
                    configuration.system_metric_instrumentation_config, getattr(module, "_DEFAULT_CONFIG", {})
                )
                instrumentor = instrumentor_class(config=config)
            else:
                instrumentor = instrumentor_class()
            if instrumentor.is_instrumented_by_opentelemetry:
                switched_on.append(name)
                continue
            if wants_traces:
                instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
            else:
                instrumentor.instrument(meter_provider=meter_provider)
        except Exception as error:  # a broken instrumentation must not stop the task
            _log.warning("auto-instrumentation %s could not be switched on: %s: %s", name, type(error).__name__, error)
            continue
        switched_on.append(name)
    return tuple(switched_on)
