"""Auto-instrumentation: pika, requests and system metrics, when the optional extra is installed.

With ``dkist-processing-core-telemetry[instrumentation]`` installed and an endpoint configured, the
pika and requests instrumentations (traces endpoint) and the system metrics instrumentation
(metrics endpoint) are switched on, except those named in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``;
``SYSTEM_METRIC_INSTRUMENTATION_CONFIG`` selects the system metrics. Without the extra nothing of
it is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration

__all__ = ["INSTRUMENTATIONS", "auto_instrument"]

_log = logging.getLogger("dkist_processing_core.telemetry")

# name in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS -> (instrumentation module, instrumentor class, library it instruments)
INSTRUMENTATIONS: dict[str, tuple[str, str, str]] = {
    "pika": ("opentelemetry.instrumentation.pika", "PikaInstrumentor", "pika"),
    "requests": ("opentelemetry.instrumentation.requests", "RequestsInstrumentor", "requests"),
    "system_metrics": (
        "opentelemetry.instrumentation.system_metrics",
        "SystemMetricsInstrumentor",
        "psutil",
    ),
}


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _system_metrics_config(
    selection: dict[str, Any] | None, defaults: dict[str, Any]
) -> dict[str, Any] | None:
    """Translate ``SYSTEM_METRIC_INSTRUMENTATION_CONFIG`` into the instrumentor's ``config``.

    A list selects those labels, True the metric with the instrumentor's default labels, False leaves
    the metric out. No selection means the instrumentor's defaults.
    """
    if selection is None:
        return None
    config: dict[str, Any] = {}
    for metric, choice in selection.items():
        if metric not in defaults:
            _log.warning(
                "SYSTEM_METRIC_INSTRUMENTATION_CONFIG names unknown system metric %r; ignored",
                metric,
            )
            continue
        if choice is True:
            config[metric] = defaults[metric]
        elif choice is not False:
            config[metric] = list(choice)
    return config


def auto_instrument(
    configuration: DKISTProcessingCoreConfiguration,
    *,
    tracer_provider: Any | None,
    meter_provider: Any | None,
) -> tuple[str, ...]:
    """Switch on the instrumentations that are installed and not disabled; return their names."""
    disabled = {
        name.strip().lower().replace("-", "_")
        for name in configuration.otel_python_disabled_instrumentations
    }
    switched_on = []
    for name, (module_name, class_name, library) in INSTRUMENTATIONS.items():
        provider = meter_provider if name == "system_metrics" else tracer_provider
        if name in disabled or provider is None:
            continue
        if not (_module_available(library) and _module_available(module_name)):
            continue  # the extra (or the library it instruments) is not installed
        try:
            module = importlib.import_module(module_name)
            instrumentor_class = getattr(module, class_name)
            if name == "system_metrics":
                config = _system_metrics_config(
                    configuration.system_metric_instrumentation_config,
                    getattr(module, "_DEFAULT_CONFIG", {}),
                )
                instrumentor = instrumentor_class(config=config)
            else:
                instrumentor = instrumentor_class()
            # (the system metrics instrumentor ignores tracer_provider)
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(
                    tracer_provider=tracer_provider, meter_provider=meter_provider
                )
        except Exception as error:  # a broken instrumentation must not stop the task
            _log.warning(
                "auto-instrumentation %s could not be switched on: %s: %s",
                name,
                type(error).__name__,
                error,
            )
            continue
        switched_on.append(name)
    return tuple(switched_on)
