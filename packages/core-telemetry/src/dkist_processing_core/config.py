"""Configuration of dkist-processing-core, read from environment variables.

Field names are lower-case snake names; pydantic-settings reads them from the upper-case
environment variables of the same name, case-insensitively. Clients subclass
:class:`DKISTProcessingCoreConfiguration` and add fields of their own.

Values that do not parse raise :class:`ConfigurationError` naming the variable. Secrets (any field
whose name contains ``pass``, ``secret``, ``token``, ``key``, ``credential`` or ``private``, and
the user-info of URLs) never appear in reprs, errors or
:meth:`DKISTProcessingCoreConfiguration.masked_dump`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated
from typing import Any

from dkist_processing_core._config_compat import PreviousProductSurface
from dkist_processing_core._masking import SECRET_MASK
from dkist_processing_core._masking import MaskedRepr
from dkist_processing_core._masking import is_secret_field
from dkist_processing_core._masking import masked
from dkist_processing_core._settings_models import DEFAULT_MESH_SERVICE
from dkist_processing_core._settings_models import MeshService
from dkist_processing_core._settings_models import RetryConfig
from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.isb_outbox import default_isb_outbox_dir
from pydantic import Field
from pydantic import ValidationError
from pydantic import field_validator
from pydantic_settings import BaseSettings
from pydantic_settings import NoDecode
from pydantic_settings import SettingsConfigDict
from pydantic_settings import SettingsError

__all__ = [
    "DEFAULT_MESH_SERVICE",
    "ConfigurationError",
    "DKISTProcessingCoreConfiguration",
    "MeshService",
    "MAX_FILE_DESCRIPTORS_LIMIT",
    "MIN_FILE_DESCRIPTORS",
    "MAX_ISB_PUBLISH_TIMEOUT",
    "RetryConfig",
    "SECRET_MASK",
    "core_configuration",
    "reset_core_configuration",
    "default_isb_outbox_dir",
    "is_secret_field",
]

_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_QUEUE_TYPES = ("classic", "quorum", "stream")
_ENDPOINT = re.compile(
    r"(?:https?://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?/?"
)


#: Range of ``MAX_FILE_DESCRIPTORS``: below 64 a Python process cannot do much; above 2**31 - 1
#: ``setrlimit`` overflows.
MIN_FILE_DESCRIPTORS = 64
MAX_FILE_DESCRIPTORS_LIMIT = 2**31 - 1
#: Upper bound of ``ISB_PUBLISH_TIMEOUT``: a failure callback must not hold an Airflow worker longer.
MAX_ISB_PUBLISH_TIMEOUT = 3600.0


class ConfigurationError(DKISTProcessingCoreError, ValueError):
    """An environment variable holds a value that cannot be used."""


class DKISTProcessingCoreConfiguration(PreviousProductSurface, BaseSettings):
    """Settings of the processing core; every field is read from its upper-case environment variable."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_nested_delimiter=None,
        extra="ignore",
        validate_default=True,
    )

    loguru_level: str = Field(default="INFO", description="Log level for the application")
    mesh_config: dict[str, MeshService] = Field(
        default_factory=dict,
        description="Service mesh configuration",
        examples=[{"upstream_service_name": {"mesh_address": "localhost", "mesh_port": 6742}}],
    )
    retry_config: RetryConfig = Field(
        default_factory=RetryConfig, description="Retry configuration for the service"
    )
    otel_service_name: str = Field(
        default="unknown-service-name", min_length=1, description="Service name for OpenTelemetry"
    )
    dkist_service_version: str = Field(
        default="unknown-service-version",
        min_length=1,
        description="Service version for OpenTelemetry",
    )
    nomad_alloc_id: str = Field(
        default="unknown-allocation-id",
        min_length=1,
        description="Nomad allocation ID for OpenTelemetry",
    )
    nomad_alloc_name: str = Field(
        default="unknown-allocation-name",
        min_length=1,
        description="Allocation name for the deployed container the task is running on.",
    )
    nomad_group_name: str = Field(
        default="unknown-allocation-group",
        min_length=1,
        description="Allocation group for the deployed container the task is running on",
    )
    otel_exporter_otlp_traces_insecure: bool = Field(
        default=True, description="Use insecure connection for OTLP traces"
    )
    otel_exporter_otlp_metrics_insecure: bool = Field(
        default=True, description="Use insecure connection for OTLP metrics"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        description="OTLP traces endpoint. Overrides mesh configuration",
        examples=["localhost:4317"],
    )
    otel_exporter_otlp_metrics_endpoint: str | None = Field(
        default=None,
        description="OTLP metrics endpoint. Overrides mesh configuration",
        examples=["localhost:4317"],
    )
    otel_python_disabled_instrumentations: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="List of instrumentations to disable. https://opentelemetry.io/docs/zero-code/python/configuration/",
        examples=[["pika", "requests"]],
    )
    otel_python_fastapi_excluded_urls: str = Field(
        default="health",
        description="Comma separated list of URLs to exclude from OpenTelemetry instrumentation in FastAPI.",
        examples=["client/.*/info,healthcheck"],
    )
    # The seed declares dict[str, bool] but its own example maps metric names to lists of labels,
    # which is what OpenTelemetry's SystemMetricsInstrumentor takes: both are accepted.
    system_metric_instrumentation_config: dict[str, bool | list[str]] | None = Field(
        default=None,
        description="Configuration for system metric instrumentation. https://opentelemetry-python-contrib.readthedocs.io/en/latest/instrumentation/system_metrics/system_metrics.html",
        examples=[
            {
                "system.memory.usage": ["used", "free", "cached"],
                "system.cpu.time": ["idle", "user", "system", "irq"],
                "system.network.io": ["transmit", "receive"],
                "process.runtime.memory": ["rss", "vms"],
                "process.runtime.cpu.time": ["user", "system"],
                "process.runtime.context_switches": ["involuntary", "voluntary"],
            }
        ],
    )
    isb_username: str = Field(
        default="guest", min_length=1, description="Username for the interservice-bus."
    )
    isb_password: str = Field(
        default="guest", min_length=1, description="Password for the interservice-bus."
    )
    isb_exchange: str = Field(
        default="master.direct.x", min_length=1, description="Exchange for the interservice-bus."
    )
    isb_queue_type: str = Field(
        default="classic",
        description="Queue type for the interservice-bus.",
        examples=["quorum", "classic"],
    )
    build_version: str = Field(
        default="dev",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Fallback build version for workflow tasks.",
    )
    max_file_descriptors: int = Field(
        default=1024,
        ge=MIN_FILE_DESCRIPTORS,
        le=MAX_FILE_DESCRIPTORS_LIMIT,
        description="Maximum number of file descriptors to allow the process.",
    )
    # Fields beyond the seed's table (documented in docs/decisions.md).
    pip_timeout: int = Field(
        default=15,
        ge=1,
        le=3600,
        description="Seconds pip waits on the index per request when a node installs its pipeline.",
    )
    pip_retries: int = Field(
        default=5, ge=0, le=100, description="Retries of pip when a node installs its pipeline."
    )
    is_notebook_execution_environment: bool = Field(
        default=False,
        description="True inside the Jupyter environment that runs exported notebooks.",
    )
    isb_publish_timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_ISB_PUBLISH_TIMEOUT,
        allow_inf_nan=False,
        description="Upper bound in seconds for one failure report to reach the interservice-bus before it is kept in the outbox.",
    )
    isb_outbox_dir: Path = Field(
        default_factory=default_isb_outbox_dir,
        description="Folder of the durable outbox that keeps failure reports the interservice-bus did not confirm.",
    )

    # Checks beyond the types, so that a bad value fails when the settings are read, naming the
    # variable, instead of deep inside a task (see docs/decisions.md).

    @field_validator("loguru_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        level = value.strip().upper()
        if level in _LOG_LEVELS or (level.isdigit() and level.isascii()):
            return level
        raise ValueError(f"unknown log level; use one of {', '.join(_LOG_LEVELS)} or a number")

    @field_validator("isb_queue_type", mode="before")
    @classmethod
    def _known_queue_type(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        queue_type = value.strip().lower()
        if queue_type not in _QUEUE_TYPES:
            raise ValueError(f"unknown queue type; RabbitMQ knows {', '.join(_QUEUE_TYPES)}")
        return queue_type

    @field_validator(
        "otel_exporter_otlp_traces_endpoint", "otel_exporter_otlp_metrics_endpoint", mode="before"
    )
    @classmethod
    def _endpoint(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        endpoint = value.strip()
        if not endpoint:
            return None  # an empty variable means "not configured"
        match = _ENDPOINT.fullmatch(endpoint)
        if match is None:
            raise ValueError(
                "not an OTLP gRPC endpoint; use host:port or http(s)://host:port, e.g. localhost:4317"
            )
        port = match.group("port")
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} is not in 1..65535")
        return endpoint

    @field_validator("otel_python_disabled_instrumentations", mode="before")
    @classmethod
    def _instrumentation_names(cls, value: object) -> object:
        """A JSON list (``["pika", "requests"]``) or OpenTelemetry's own comma separated form (``pika,requests``)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("value is not a valid JSON list of names") from None
        return [name.strip() for name in text.split(",") if name.strip()]

    @field_validator("otel_python_fastapi_excluded_urls")
    @classmethod
    def _url_patterns(cls, value: str) -> str:
        for pattern in value.split(","):
            try:
                re.compile(pattern.strip())
            except re.error as error:
                raise ValueError(f"an entry is not a regular expression: {error}") from None
        return value

    @field_validator("isb_outbox_dir", mode="before")
    @classmethod
    def _outbox_dir(cls, value: object) -> object:
        if isinstance(value, str | Path):
            if not str(value).strip():
                raise ValueError("the outbox folder must not be empty")
            path = Path(value).expanduser()
            if not path.is_absolute():
                raise ValueError(
                    "the outbox folder must be an absolute path (tasks run in changing working directories)"
                )
            if path.exists() and not path.is_dir():
                raise ValueError("the path exists and is not a folder")
            return path
        return value

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigurationError(_describe(error)) from None
        except SettingsError as error:  # a complex variable (JSON) that does not parse
            raise ConfigurationError(_describe_settings_error(error)) from None

    @property
    def cpu_count(self) -> int:
        """CPUs this process may run on (respects affinity masks of containers)."""
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            return os.cpu_count() or 1

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Endpoint for spans: the env variable, else ``MESH_CONFIG['otlp-traces-endpoint']``."""
        return self.otel_exporter_otlp_traces_endpoint or self._mesh_endpoint(
            "otlp-traces-endpoint"
        )

    @property
    def otlp_metrics_endpoint(self) -> str | None:
        """Endpoint for metrics: the env variable, else ``MESH_CONFIG['otlp-metrics-endpoint']``."""
        return self.otel_exporter_otlp_metrics_endpoint or self._mesh_endpoint(
            "otlp-metrics-endpoint"
        )

    def _mesh_endpoint(self, key: str) -> str | None:
        service = self.mesh_config.get(key)
        if service is None:
            return None
        return f"{service.mesh_address}:{service.mesh_port}"

    def masked_dump(self) -> dict[str, Any]:
        """All settings as JSON-ready values, with secrets (at any depth) replaced by a mask."""
        dumped: dict[str, Any] = masked(self, self.model_dump(mode="json"))
        return dumped

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        for name, value in super().__repr_args__():
            yield name, SECRET_MASK if name and is_secret_field(name) else MaskedRepr.wrap(value)


def _describe(error: ValidationError) -> str:
    """One readable message per bad variable, naming it in upper case, never echoing secrets."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        location = [str(part) for part in problem["loc"]]
        variable = location[0].upper() if location else "?"
        detail = ".".join(location[1:])
        where = f"{variable} ({detail})" if detail else variable
        lines.append(f"environment variable {where}: {problem['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def _describe_settings_error(error: SettingsError) -> str:
    match = re.search(r'field "([^"]+)"', str(error))
    variable = match.group(1).upper() if match else "?"
    return f"invalid configuration: environment variable {variable}: value is not valid JSON"


_core_configuration: DKISTProcessingCoreConfiguration | None = None


def core_configuration() -> DKISTProcessingCoreConfiguration:
    """The configuration of this process, read from the environment once and then reused."""
    global _core_configuration
    if _core_configuration is None:
        _core_configuration = DKISTProcessingCoreConfiguration()
    return _core_configuration


def reset_core_configuration() -> None:
    """Forget the configuration read by :func:`core_configuration` (tests change the environment)."""
    global _core_configuration
    _core_configuration = None


def __getattr__(name: str) -> Any:
    # The previous product created this at import; here it is read on first use.
    if name == "core_configurations":
        return core_configuration()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
