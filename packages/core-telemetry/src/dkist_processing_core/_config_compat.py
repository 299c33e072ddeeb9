"""What client pipelines call on the configuration beyond its fields (the previous product's surface).

The previous product built its configuration on ``dkist-service-configuration`` and ``talus``;
``dkist-processing-common`` and the instrument pipelines subclass it and call these methods and
properties. They are kept with the same names, signatures and results, and nothing more
(docs/migration.md lists them). The ``talus`` objects are built only when asked for, so a worker
that never touches them does not import ``talus`` (clients that use them install it themselves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core._masking import SECRET_MASK
from dkist_processing_core._masking import MaskedRepr
from dkist_processing_core._masking import is_secret_field
from dkist_processing_core._settings_models import DEFAULT_MESH_SERVICE
from dkist_processing_core._settings_models import MeshService

if TYPE_CHECKING:
    from dkist_processing_core._settings_models import RetryConfig

__all__ = ["ISB_MESH_SERVICE_NAME", "PreviousProductSurface"]

#: The ``MESH_CONFIG`` key of the interservice bus.
ISB_MESH_SERVICE_NAME = "interservice-bus"


def _talus(name: str, module: str = "talus") -> Any:
    from importlib import import_module

    try:
        found = import_module(module)
    except ImportError:
        raise ImportError(
            f"this property returns a talus {name}, and talus is not installed; "
            "install it with: pip install talus (dkist-processing-common depends on it)",
            name="talus",
        ) from None
    return getattr(found, name)


class PreviousProductSurface:
    """Mixin of :class:`~dkist_processing_core.config.DKISTProcessingCoreConfiguration`."""

    if TYPE_CHECKING:  # fields of the settings class this is mixed into
        mesh_config: dict[str, MeshService]
        retry_config: RetryConfig
        loguru_level: str
        otel_service_name: str
        dkist_service_version: str
        nomad_alloc_id: str
        nomad_alloc_name: str
        nomad_group_name: str
        isb_username: str
        isb_password: str
        isb_exchange: str
        isb_queue_type: str

    def service_mesh_detail(
        self, service_name: str, default_mesh_service: MeshService = DEFAULT_MESH_SERVICE
    ) -> MeshService:
        """The ``MESH_CONFIG`` entry ``service_name``, else ``default_mesh_service`` (127.0.0.1:0)."""
        return self.mesh_config.get(service_name) or default_mesh_service

    @property
    def isb_mesh_service(self) -> MeshService:
        """The interservice bus: ``MESH_CONFIG['interservice-bus']``, default localhost:5672."""
        return self.service_mesh_detail(
            service_name=ISB_MESH_SERVICE_NAME,
            default_mesh_service=MeshService(mesh_address="localhost", mesh_port=5672),
        )

    @property
    def isb_queue_arguments(self) -> dict[str, str]:
        """Arguments of every queue declared on the interservice bus: ``{"x-queue-type": ISB_QUEUE_TYPE}``."""
        return {"x-queue-type": self.isb_queue_type}

    @property
    def isb_publish_exchange(self) -> Any:
        """``talus.Exchange`` named ``ISB_EXCHANGE`` (direct, durable)."""
        return _talus("Exchange")(name=self.isb_exchange)

    @property
    def isb_producer_connection_parameters(self) -> Any:
        """``talus.ConnectionParameterFactory`` for the interservice bus, as the previous product built it."""
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

        cls = type(self)
        names = list(cls.model_fields)  # type: ignore[attr-defined]
        if not log_parent_configurations:
            own = get_annotations(cls)
            names = [name for name in names if name in own]
        for name in names:
            value = SECRET_MASK if is_secret_field(name) else MaskedRepr.wrap(getattr(self, name))
            logger.info("{}: {}", name, value)

    # The previous product's field names, read-only (its fields had these names and the
    # environment variable names as aliases).

    @property
    def service_mesh(self) -> dict[str, MeshService]:
        """``MESH_CONFIG`` under the previous product's field name."""
        return self.mesh_config

    @property
    def service_name(self) -> str:
        """``OTEL_SERVICE_NAME`` under the previous product's field name."""
        return self.otel_service_name

    @property
    def service_version(self) -> str:
        """``DKIST_SERVICE_VERSION`` under the previous product's field name."""
        return self.dkist_service_version

    @property
    def allocation_id(self) -> str:
        """``NOMAD_ALLOC_ID`` under the previous product's field name."""
        return self.nomad_alloc_id

    @property
    def allocation_name(self) -> str:
        """``NOMAD_ALLOC_NAME`` under the previous product's field name."""
        return self.nomad_alloc_name

    @property
    def allocation_group(self) -> str:
        """``NOMAD_GROUP_NAME`` under the previous product's field name."""
        return self.nomad_group_name

    @property
    def log_level(self) -> str:
        """``LOGURU_LEVEL`` under the previous product's field name."""
        return self.loguru_level
