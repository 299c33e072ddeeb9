"""Configuration of dkist-processing-core, read from environment variables.

Field names are lower-case snake names; pydantic-settings reads them from the upper-case
environment variables of the same name, case-insensitively. Clients subclass
:class:`DKISTProcessingCoreConfiguration` and add fields of their own.

Every value that cannot be used raises :class:`ConfigurationError` naming the variable, whatever
went wrong (a bad value, JSON nested too deeply, a path the system will not look at), and no
error message repeats a value. Secrets (any field whose name contains ``pass``, ``secret``,
``token``, ``key``, ``credential`` or ``private``, and the user-info of URLs) never appear in
reprs, errors or :meth:`DKISTProcessingCoreConfiguration.masked_dump`; addresses
(``MESH_CONFIG``'s ``mesh_address``) are host names or IP addresses only, so none can carry a
password (docs/decisions.md, "Configuration").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from typing import Any

from dkist_processing_core import _config_checks as checks
from dkist_processing_core import _text_rules as rules
from dkist_processing_core._config_checks import isb_outbox_dir_from_environment
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
from pydantic_settings import PydanticBaseSettingsSource
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
    "isb_outbox_dir_from_environment",
]

_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_QUEUE_TYPES = ("classic", "quorum", "stream")


#: Range of ``MAX_FILE_DESCRIPTORS``: below 64 a Python process cannot do much; above 2**31 - 1
#: ``setrlimit`` overflows.
MIN_FILE_DESCRIPTORS = 64
MAX_FILE_DESCRIPTORS_LIMIT = 2**31 - 1
#: Upper bound of ``ISB_PUBLISH_TIMEOUT``: a failure callback must not hold an Airflow worker longer.
MAX_ISB_PUBLISH_TIMEOUT = 3600.0


class ConfigurationError(DKISTProcessingCoreError, ValueError):
    """An environment variable holds a value that cannot be used."""


def _default_outbox_dir() -> Path:
    try:
        return default_isb_outbox_dir()
    except (RuntimeError, KeyError, OSError):  # no HOME and no passwd entry (a container's uid)
        raise ConfigurationError(
            "invalid configuration: environment variable ISB_OUTBOX_DIR: not set, and this user "
            "has no home folder for the default outbox; set ISB_OUTBOX_DIR to an absolute path"
        ) from None


class DKISTProcessingCoreConfiguration(PreviousProductSurface, BaseSettings):
    """Settings of the processing core; every field is read from its upper-case environment variable."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_nested_delimiter=None,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
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
        default_factory=_default_outbox_dir,
        description="Folder of the durable outbox that keeps failure reports the interservice-bus did not confirm.",
    )

    # Checks beyond the types, so that a bad value fails when the settings are read, naming the
    # variable, instead of deep inside a task (see docs/decisions.md).

    @field_validator("*", mode="before")
    @classmethod
    def _valid_text(cls, value: object) -> object:
        return checks.check_unicode(value)

    @field_validator("loguru_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        # loguru reads LOGURU_LEVEL itself when it is imported and knows only these names, as
        # written: "debug", "10" or " INFO" make `import loguru` fail in every process.
        if not isinstance(value, str) or value in _LOG_LEVELS:
            return value
        known = value.strip().upper()
        hint = f" (write {known})" if known in _LOG_LEVELS else ""
        raise ValueError(
            f"unknown log level; use one of {', '.join(_LOG_LEVELS)}, in capitals as loguru "
            f"reads this variable itself{hint}"
        )

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
        return checks.check_endpoint(value)

    @field_validator("otel_python_disabled_instrumentations", mode="before")
    @classmethod
    def _instrumentation_names(cls, value: object) -> object:
        return checks.instrumentation_names(value)

    @field_validator("otel_python_fastapi_excluded_urls")
    @classmethod
    def _url_patterns(cls, value: str) -> str:
        return checks.check_url_patterns(value)

    @field_validator("isb_outbox_dir", mode="before")
    @classmethod
    def _outbox_dir(cls, value: object) -> object:
        return checks.check_outbox_dir(value)

    @field_validator("mesh_config", mode="before")
    @classmethod
    def _service_names(cls, value: object) -> object:
        if isinstance(value, dict):
            for key in value:
                rules.check_service_name(key, "MESH_CONFIG")
        return value

    # What goes on the wire to the broker (docs/decisions.md, "Interservice bus").
    @field_validator("isb_exchange")
    @classmethod
    def _exchange(cls, value: str) -> str:
        rules.check_short_string(value, "the exchange name", allow_empty=False)
        return rules.check_name(value, "the exchange name")

    @field_validator("isb_username")
    @classmethod
    def _username(cls, value: str) -> str:
        return rules.check_name(value, "the user name")

    @field_validator("isb_password")
    @classmethod
    def _password(cls, value: str) -> str:
        return rules.check_credential(value, "the password")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources, with JSON nested deeper than any setting needs refused
        before it is parsed (the parser would fail with RecursionError, not a bad value)."""
        for source in (env_settings, dotenv_settings):
            bounded = checks.bounded_decoder(source.decode_complex_value)
            source.decode_complex_value = bounded  # type: ignore[method-assign,assignment]
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigurationError(checks.describe_validation_error(error)) from None
        except SettingsError as error:  # a complex variable (JSON) that does not parse
            raise ConfigurationError(checks.describe_settings_error(error)) from None
        except RecursionError:  # values given by code, nested deeper than Python follows
            raise ConfigurationError(
                "invalid configuration: a value is nested too deeply to be read"
            ) from None

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
        return f"{rules.host_in_url(service.mesh_address)}:{service.mesh_port}"

    def masked_dump(self) -> dict[str, Any]:
        """All settings as JSON-ready values, with secrets (at any depth) replaced by a mask."""
        dumped: dict[str, Any] = masked(self, self.model_dump(mode="json"))
        return dumped

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        for name, value in super().__repr_args__():
            yield name, SECRET_MASK if name and is_secret_field(name) else MaskedRepr.wrap(value)


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
