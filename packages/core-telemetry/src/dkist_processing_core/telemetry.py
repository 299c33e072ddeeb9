"""OpenTelemetry tracer and meter providers of this process, created lazily, once.

With an OTLP endpoint configured (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, else ``MESH_CONFIG["otlp-traces-endpoint"]`` /
``["otlp-metrics-endpoint"]``) the SDK providers export over gRPC (``BatchSpanProcessor``,
``PeriodicExportingMetricReader``), with the resource ``service.name`` = ``OTEL_SERVICE_NAME`` and
``service.version`` = ``DKIST_SERVICE_VERSION``. Without one, telemetry is a no-op: no SDK, exporter
or grpc module is imported, nothing touches the network and nothing is logged above DEBUG.

Exit is bounded: :func:`flush_telemetry` (called by ``TaskBase.__exit__``) flushes traces and
metrics side by side and returns after at most 5 s, whatever the exporters wait for; the SDK's own
exit-time shutdown is replaced by one that takes at most 5 s when nothing was flushed before, 1 s
after a flush that finished, and 0.25 s after one that did not (the collector is unreachable or
stalls: it is not waited for twice). Exporters give up on one export after 5 s unless
``OTEL_EXPORTER_OTLP_TIMEOUT`` (or the traces/metrics variant) says otherwise.

The providers are kept here, not only in OpenTelemetry's set-once globals, so that tests and
clients can put their own in place with :func:`install_providers` (for example SDK providers with an
``InMemorySpanExporter``) and go back with :func:`reset_telemetry`. Exporting providers created here
are also registered as the OpenTelemetry globals when nothing else registered one first, so code
that calls ``opentelemetry.trace.get_tracer`` directly exports too.

Auto-instrumentation (the extra ``dkist-processing-core-telemetry[instrumentation]``): see
``_instrumentation``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._instrumentation import INSTRUMENTATIONS
from dkist_processing_core._instrumentation import auto_instrument

if TYPE_CHECKING:
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration
    from opentelemetry.metrics import Meter
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.trace import TracerProvider

__all__ = [
    "FLUSH_TIMEOUT_SECONDS",
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

#: Longest :func:`flush_telemetry` waits by default (traces and metrics are flushed side by side);
#: also how long one OTLP export may take unless OTEL_EXPORTER_OTLP_*TIMEOUT says otherwise.
FLUSH_TIMEOUT_SECONDS = 5.0
# Longest the exit-time shutdown waits: nothing flushed before / after a flush that finished /
# after one that did not (an unreachable or stalled collector is not waited for twice).
_EXIT_SHUTDOWN_SECONDS = {None: FLUSH_TIMEOUT_SECONDS, True: 1.0, False: 0.25}
_TIMEOUT_VARIABLES = {
    "traces": ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
    "metrics": ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
}
_UNFINISHED = object()


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
# Shutdowns of the exporting providers built here, each given the seconds it may take; run
# (bounded) at exit. _last_flush_finished: None: no flush yet, else whether the last one finished.
_built: list[Callable[[float], Any]] = []
_last_flush_finished: bool | None = None
_exit_handler_registered = False


def telemetry_providers(
    configuration: DKISTProcessingCoreConfiguration | None = None,
) -> TelemetryProviders:
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


def flush_telemetry(timeout_seconds: float = FLUSH_TIMEOUT_SECONDS) -> bool:
    """Export what the providers hold, waiting at most ``timeout_seconds`` in all; never raises.

    Traces and metrics are flushed side by side in threads of their own, so the bound holds
    whatever an exporter waits for (an unreachable collector, one that accepts and never answers).
    Returns True when everything was exported (or nothing was pending). Providers that were never
    created are not created by this call.
    """
    global _last_flush_finished
    providers = _providers
    if providers is None:
        return True
    seconds = max(timeout_seconds, 0.0)
    kinds = {"traces": providers.tracer_provider, "metrics": providers.meter_provider}
    calls = {  # the API's no-op providers have nothing to flush
        kind: _with_timeout(provider.force_flush, seconds)
        for kind, provider in kinds.items()
        if hasattr(provider, "force_flush")
    }
    outcomes = _run_bounded(calls, seconds, "flush").values()
    for outcome in outcomes:
        if isinstance(outcome, Exception):  # an exporter fault must not hide the task's outcome
            _log.warning("flushing telemetry failed: %s: %s", type(outcome).__name__, outcome)
    flushed = not any(o is _UNFINISHED or o is False or isinstance(o, Exception) for o in outcomes)
    if not flushed:
        _log.warning("not all telemetry could be exported within %.1f s", timeout_seconds)
    _last_flush_finished = flushed
    return flushed


def _with_timeout(method: Callable[..., Any], seconds: float) -> Callable[[], Any]:
    return lambda: method(timeout_millis=int(seconds * 1000))


def _run_bounded(
    calls: Mapping[str, Callable[[], Any]], seconds: float, what: str
) -> dict[str, Any]:
    """Run the calls side by side in daemon threads; wait at most ``seconds`` in all.

    Returns each call's result, the exception it raised, or ``_UNFINISHED``. A call still running
    is left behind: its daemon thread does not keep the process alive.
    """
    outcomes: dict[str, Any] = dict.fromkeys(calls, _UNFINISHED)

    def run(name: str, call: Callable[[], Any]) -> None:
        try:
            outcomes[name] = call()
        except Exception as error:
            outcomes[name] = error

    threads = [
        threading.Thread(
            target=run, args=item, name=f"dkist-telemetry-{what}-{item[0]}", daemon=True
        )
        for item in calls.items()
    ]
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return dict(outcomes)


def _shutdown_at_exit() -> None:
    """Shut the exporting providers built here down, bounded (they are built without the SDK's
    own unbounded exit handler)."""
    shutdowns, _built[:] = list(_built), []
    if not shutdowns:
        return
    seconds = _EXIT_SHUTDOWN_SECONDS[_last_flush_finished]
    calls = {str(index): partial(shutdown, seconds) for index, shutdown in enumerate(shutdowns)}
    _run_bounded(calls, seconds, "shutdown")


def _export_timeout(kind: str) -> float | None:
    """Seconds one OTLP export may take: the SDK's own setting if the environment has one."""
    if any(os.environ.get(name) for name in _TIMEOUT_VARIABLES[kind]):
        return None
    return FLUSH_TIMEOUT_SECONDS


def _remember_for_exit(shutdown: Callable[[float], Any]) -> None:
    global _exit_handler_registered
    with _lock:
        if not _exit_handler_registered:
            atexit.register(_shutdown_at_exit)
            _exit_handler_registered = True
        _built.append(shutdown)


def _build_providers(configuration: DKISTProcessingCoreConfiguration) -> TelemetryProviders:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    traces_endpoint = configuration.otlp_traces_endpoint
    metrics_endpoint = configuration.otlp_metrics_endpoint
    if not traces_endpoint and not metrics_endpoint:
        _log.debug("telemetry is off: no OTLP traces or metrics endpoint is configured")
        return TelemetryProviders(
            tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
        )

    resource = _resource(configuration)
    tracer_provider = meter_provider = None  # exporting ones
    if traces_endpoint:
        tracer_provider = _exporting_tracer_provider(
            resource, traces_endpoint, configuration.otel_exporter_otlp_traces_insecure
        )
    if metrics_endpoint:
        meter_provider = _exporting_meter_provider(
            resource, metrics_endpoint, configuration.otel_exporter_otlp_metrics_insecure
        )
    _register_globals(tracer_provider, meter_provider)
    instrumentations = auto_instrument(
        configuration, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    _log.debug(
        "telemetry: traces to %s, metrics to %s, instrumentations %s",
        traces_endpoint or "nowhere",
        metrics_endpoint or "nowhere",
        ", ".join(instrumentations) or "none",
    )
    return TelemetryProviders(
        tracer_provider=NoOpTracerProvider() if tracer_provider is None else tracer_provider,
        meter_provider=NoOpMeterProvider() if meter_provider is None else meter_provider,
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

    exporter = OTLPSpanExporter(
        endpoint=endpoint, insecure=insecure, timeout=_export_timeout("traces")
    )
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _remember_for_exit(lambda _seconds: provider.shutdown())  # the SDK's takes no timeout
    return provider


def _exporting_meter_provider(resource: Any, endpoint: str, insecure: bool) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(
        endpoint=endpoint, insecure=insecure, timeout=_export_timeout("metrics")
    )
    reader = PeriodicExportingMetricReader(exporter)
    provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    _remember_for_exit(lambda seconds: _with_timeout(provider.shutdown, seconds)())
    return provider


def _register_globals(tracer_provider: Any | None, meter_provider: Any | None) -> None:
    """Make exporting providers OpenTelemetry's globals unless something registered its own first."""
    from opentelemetry import metrics
    from opentelemetry import trace

    if tracer_provider is not None and isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    ):
        trace.set_tracer_provider(tracer_provider)
    # The API has no public "is a meter provider set" check; its placeholder is _ProxyMeterProvider.
    if (
        meter_provider is not None
        and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    ):
        metrics.set_meter_provider(meter_provider)
