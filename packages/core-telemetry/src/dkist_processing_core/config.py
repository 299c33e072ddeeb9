"""Configuration of dkist-processing-core, read from environment variables.

Field names are lower-case snake names; pydantic-settings reads them from the upper-case
environment variables of the same name, case-insensitively. Clients subclass
:class:`DKISTProcessingCoreConfiguration` and add fields of their own.

Every value that cannot be used raises :class:`ConfigurationError` naming the variable, whatever
went wrong (a bad value, JSON nested too deeply, a path the system will not look at), and no
error message repeats a value. Secrets (``_masking``'s rule: names with ``pass``, ``secret``,
``token``, ``key``, ``credential`` or ``private``, and the user-info of URLs) never appear in
reprs, logs or :meth:`DKISTProcessingCoreConfiguration.masked_dump`; addresses
(``MESH_CONFIG``'s ``mesh_address``) are host names or IP addresses only, so none can carry a
password (docs/decisions.md, "Configuration").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import import_module
from pathlib import Path
from typing import Annotated
from typing import Any

from dkist_processing_core import _config_checks as checks
from dkist_processing_core._config_checks import isb_outbox_dir_from_environment
from dkist_processing_core._masking import SECRET_MASK
from dkist_processing_core._masking import is_secret_field
from dkist_processing_core._masking import masked
from dkist_processing_core._settings_models import DEFAULT_MESH_SERVICE
from dkist_processing_core._settings_models import MeshService
from dkist_processing_core._settings_models import RetryConfig
from dkist_processing_core._text_rules import MAX_SECONDS
from dkist_processing_core._text_rules import host_in_url
from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.isb_outbox import default_isb_outbox_dir
from pydantic import Field
from pydantic import ValidationError
from pydantic import field_validator
from pydantic_settings import BaseSettings
from pydantic_settings import PydanticBaseSettingsSource
from pydantic_settings import SettingsConfigDict
from pydantic_settings import SettingsError

__all__ = [
    "DEFAULT_MESH_SERVICE",
    "ConfigurationError",
    "DKISTProcessingCoreConfiguration",
    "MeshService",
    "RetryConfig",
    "SECRET_MASK",
    "core_configuration",
    "reset_core_configuration",
    "default_isb_outbox_dir",
    "is_secret_field",
    "isb_outbox_dir_from_environment",
]


NonEmpty = Annotated[str, Field(min_length=1)]


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


def _talus(name: str, module: str = "talus") -> Any:
    try:
        return getattr(import_module(module), name)
    except ImportError:
        raise ImportError(
            f"this property returns a talus {name}, and talus is not installed; "
            "install it with: pip install talus (dkist-processing-common depends on it)",
            name="talus",
        ) from None


class DKISTProcessingCoreConfiguration(BaseSettings):
    """Settings of the processing core; every field is read from its upper-case environment variable."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_nested_delimiter=None,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
    )

    loguru_level: checks.LogLevel = Field("INFO", description="Log level for the application")
    mesh_config: Annotated[dict[str, MeshService], checks.ServiceNames] = Field(
        default_factory=dict,
        description="Service mesh configuration",
        examples=[{"upstream_service_name": {"mesh_address": "localhost", "mesh_port": 6742}}],
    )
    retry_config: RetryConfig = Field(
        default_factory=RetryConfig, description="Retry configuration for the service"
    )
    otel_service_name: NonEmpty = Field(
        "unknown-service-name", description="Service name for OpenTelemetry"
    )
    dkist_service_version: NonEmpty = Field(
        "unknown-service-version", description="Service version for OpenTelemetry"
    )
    nomad_alloc_id: NonEmpty = Field(
        "unknown-allocation-id", description="Nomad allocation ID for OpenTelemetry"
    )
    nomad_alloc_name: NonEmpty = Field(
        "unknown-allocation-name",
        description="Allocation name for the deployed container the task is running on.",
    )
    nomad_group_name: NonEmpty = Field(
        "unknown-allocation-group",
        description="Allocation group for the deployed container the task is running on",
    )
    otel_exporter_otlp_traces_insecure: bool = Field(
        True, description="Use insecure connection for OTLP traces"
    )
    otel_exporter_otlp_metrics_insecure: bool = Field(
        True, description="Use insecure connection for OTLP metrics"
    )
    otel_exporter_otlp_traces_endpoint: checks.Endpoint = Field(
        None,
        description="OTLP traces endpoint. Overrides mesh configuration",
        examples=["localhost:4317"],
    )
    otel_exporter_otlp_metrics_endpoint: checks.Endpoint = Field(
        None,
        description="OTLP metrics endpoint. Overrides mesh configuration",
        examples=["localhost:4317"],
    )
    otel_python_disabled_instrumentations: checks.InstrumentationNames = Field(
        default_factory=list,
        description="List of instrumentations to disable. https://opentelemetry.io/docs/zero-code/python/configuration/",
        examples=[["pika", "requests"]],
    )
    otel_python_fastapi_excluded_urls: checks.UrlPatterns = Field(
        "health",
        description="Comma separated list of URLs to exclude from OpenTelemetry instrumentation in FastAPI.",
        examples=["client/.*/info,healthcheck"],
    )
    # The seed declares dict[str, bool] but its own example maps metric names to lists of labels,
    # which is what OpenTelemetry's SystemMetricsInstrumentor takes: both are accepted.
    system_metric_instrumentation_config: dict[str, bool | list[str]] | None = Field(
        None,
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
    isb_username: checks.UserName = Field("guest", description="Username for the interservice-bus.")
    # A plain str, not SecretStr: clients hand it to talus/pika, which need the text; the
    # masking rule keeps it out of every output (docs/decisions.md).
    isb_password: checks.Password = Field("guest", description="Password for the interservice-bus.")
    isb_exchange: checks.ExchangeName = Field(
        "master.direct.x", description="Exchange for the interservice-bus."
    )
    isb_queue_type: checks.QueueType = Field(
        "classic",
        description="Queue type for the interservice-bus.",
        examples=["quorum", "classic"],
    )
    build_version: str = Field(
        "dev",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Fallback build version for workflow tasks.",
    )
    # Below 64 a Python process cannot do much; above 2**31 - 1 setrlimit overflows.
    max_file_descriptors: int = Field(
        1024,
        ge=64,
        le=2**31 - 1,
        description="Maximum number of file descriptors to allow the process.",
    )
    # Fields beyond the seed's table (documented in docs/decisions.md).
    pip_timeout: int = Field(
        15,
        ge=1,
        le=MAX_SECONDS,
        description="Seconds pip waits on the index per request when a node installs its pipeline.",
    )
    pip_retries: int = Field(
        5, ge=0, le=100, description="Retries of pip when a node installs its pipeline."
    )
    is_notebook_execution_environment: bool = Field(
        False, description="True inside the Jupyter environment that runs exported notebooks."
    )
    isb_publish_timeout: float = Field(
        30.0,
        gt=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="Upper bound in seconds for one failure report to reach the interservice-bus before it is kept in the outbox.",
    )
    isb_outbox_dir: checks.OutboxDir = Field(
        default_factory=_default_outbox_dir,
        description="Folder of the durable outbox that keeps failure reports the interservice-bus did not confirm.",
    )

    # Text that is not valid UTF-8 (undecodable bytes in the environment) is refused in every
    # field, client fields included: nothing could print or send it later.
    _printable = field_validator("*", mode="before")(checks.printable)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources, parsing JSON variables with pydantic's bounded parser."""
        for source in (env_settings, dotenv_settings):
            decoder = checks.json_decoder(source.decode_complex_value)
            source.decode_complex_value = decoder  # type: ignore[method-assign,assignment]
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigurationError(checks.describe_validation_error(error)) from None
        except SettingsError as error:  # a JSON variable that does not parse
            raise ConfigurationError(f"invalid configuration: {error.__cause__ or error}") from None

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
        return None if service is None else f"{host_in_url(service.host)}:{service.port}"

    def masked_dump(self) -> dict[str, Any]:
        """All settings as JSON-ready values, with secrets (at any depth) masked."""
        dumped: dict[str, Any] = masked(self.model_dump(mode="json"))
        return dumped

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield from masked(dict(super().__repr_args__())).items()

    # -- The previous product's surface (dkist-processing-core 7.5.0 on dkist-service-configuration
    # and talus), kept because client pipelines call it; docs/migration.md lists it. -------------

    def service_mesh_detail(
        self, service_name: str, default_mesh_service: MeshService = DEFAULT_MESH_SERVICE
    ) -> MeshService:
        """The ``MESH_CONFIG`` entry ``service_name``, else ``default_mesh_service`` (127.0.0.1:0)."""
        return self.mesh_config.get(service_name) or default_mesh_service

    @property
    def isb_mesh_service(self) -> MeshService:
        """The interservice bus: ``MESH_CONFIG['interservice-bus']``, default localhost:5672."""
        return self.service_mesh_detail(
            "interservice-bus", MeshService(mesh_address="localhost", mesh_port=5672)
        )

    @property
    def isb_queue_arguments(self) -> dict[str, str]:
        """Arguments of every queue declared on the interservice bus."""
        return {"x-queue-type": self.isb_queue_type}

    @property
    def isb_publish_exchange(self) -> Any:
        """``talus.Exchange`` named ``ISB_EXCHANGE`` (direct, durable); needs talus."""
        return _talus("Exchange")(name=self.isb_exchange)

    @property
    def isb_producer_connection_parameters(self) -> Any:
        """``talus.ConnectionParameterFactory`` for the interservice bus; needs talus."""
        service = self.isb_mesh_service
        return _talus("ConnectionParameterFactory", "talus.models.connection_parameters")(
            rabbitmq_host=service.host,
            rabbitmq_port=service.port,
            rabbitmq_user=self.isb_username,
            rabbitmq_pass=self.isb_password,
            connection_name=f"{self.otel_service_name}-producer",
        )

    @property
    def isb_connection_retryer(self) -> Any:
        """``talus.ConnectionRetryerFactory`` with the previous product's fixed values."""
        return _talus("ConnectionRetryerFactory")(
            delay_min=1, delay_max=5, backoff=1, jitter_min=1, jitter_max=3, attempts=3
        )

    def log_configurations(self, log_parent_configurations: bool = True) -> None:
        """Log every setting as ``name: value`` at INFO, secrets masked.

        With ``log_parent_configurations=False`` only the fields the subclass itself declares are
        logged (what ``dkist-processing-common`` does, so the core's settings are not logged twice).
        """
        from inspect import get_annotations

        from loguru import logger

        own = get_annotations(type(self))
        names = [n for n in type(self).model_fields if log_parent_configurations or n in own]
        for name, value in masked({name: getattr(self, name) for name in names}).items():
            logger.info("{}: {}", name, value)

    # The previous product's field names, read-only.
    service_mesh = property(lambda self: self.mesh_config, doc="``mesh_config``")
    service_name = property(lambda self: self.otel_service_name, doc="``otel_service_name``")
    service_version = property(
        lambda self: self.dkist_service_version, doc="``dkist_service_version``"
    )
    allocation_id = property(lambda self: self.nomad_alloc_id, doc="``nomad_alloc_id``")
    allocation_name = property(lambda self: self.nomad_alloc_name, doc="``nomad_alloc_name``")
    allocation_group = property(lambda self: self.nomad_group_name, doc="``nomad_group_name``")
    log_level = property(lambda self: self.loguru_level, doc="``loguru_level``")


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
