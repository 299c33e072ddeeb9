"""The nested values of the configuration: a service on the mesh and a retry policy.

Both keep the shape of the previous product (``dkist-service-configuration``), because client
pipelines build and compare them: a :class:`MeshService` is written ``mesh_address``/``mesh_port``
and read ``.host``/``.port``; a :class:`RetryConfig` has the seed's field names and defaults, and
whole numbers stay ``int`` so clients can hand them to APIs typed ``int``.

``mesh_address`` is a host name or an IP address and nothing else, which is all any client does
with it (pika's host, ``http://{host}:{port}``, Redis): an address with user-info is refused, so
no password can ride in it into a log line (docs/decisions.md). Errors never echo the input.
"""

from __future__ import annotations

import math
from typing import Any

from dkist_processing_core._text_rules import check_host
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator

__all__ = ["DEFAULT_MESH_SERVICE", "MAX_RETRY_SECONDS", "MeshService", "RetryConfig"]

#: Upper bound of every delay in ``RETRY_CONFIG`` (one hour; ``dkist_processing_core.isb`` checks
#: the same): larger values are a typo, not a policy.
MAX_RETRY_SECONDS = 3600
#: Upper bounds of ``retry_tries`` and ``retry_backoff``.
_MAX_TRIES = 10_000
_MAX_BACKOFF = 100


class MeshService(BaseModel):
    """Location of a service on the service mesh: ``{"mesh_address": ..., "mesh_port": ...}``."""

    model_config = ConfigDict(hide_input_in_errors=True)

    mesh_address: str = Field(
        min_length=1,
        description="Host name or IP address of the service (no user-info, port or path)",
    )
    mesh_port: int = Field(ge=1, le=65535, description="TCP port of the service")

    @field_validator("mesh_address")
    @classmethod
    def _host_only(cls, value: str) -> str:
        return check_host(value, "mesh_address")

    @property
    def host(self) -> str:
        """The address, under the name the previous product's ``MeshService`` used."""
        return self.mesh_address

    @property
    def port(self) -> int:
        """The port, under the name the previous product's ``MeshService`` used."""
        return self.mesh_port

    def __eq__(self, other: object) -> bool:
        # Equal to any mesh service with the same host and port, including the previous product's
        # (dkist_service_configuration.settings.MeshService), which clients compare against.
        if isinstance(other, MeshService):
            return (self.mesh_address, self.mesh_port) == (other.mesh_address, other.mesh_port)
        host, port = getattr(other, "host", None), getattr(other, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            return (self.mesh_address, self.mesh_port) == (host, port)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.mesh_address, self.mesh_port))


#: What :meth:`service_mesh_detail` returns for a service that is not configured and has no default
#: of its own; port 0 marks "not configured", as in the previous product.
DEFAULT_MESH_SERVICE = MeshService.model_construct(mesh_address="127.0.0.1", mesh_port=0)


def _whole_as_int(value: float) -> float:
    return int(value) if float(value).is_integer() else value


class RetryConfig(BaseModel):
    """Retry policy (``RETRY_CONFIG``): delay, exponential backoff, jitter and limits, in seconds.

    Defaults and names are the seed's. Every number must be finite; delays are at most one hour.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    retry_delay: float = Field(
        default=1, ge=0, le=MAX_RETRY_SECONDS, description="Seconds before the first retry"
    )
    retry_backoff: float = Field(
        default=2, ge=1, le=_MAX_BACKOFF, description="Multiplier of the delay after each retry"
    )
    retry_jitter: tuple[float, float] = Field(
        default=(1, 10), description="Range of random seconds added to each delay, [low, high]"
    )
    retry_max_delay: float = Field(
        default=300, ge=0, le=MAX_RETRY_SECONDS, description="Upper bound of one delay in seconds"
    )
    retry_tries: int = Field(
        default=-1,
        ge=-1,
        le=_MAX_TRIES,
        description="Attempts in all; -1 means until the time bound",
    )

    @field_validator(
        "retry_delay", "retry_backoff", "retry_max_delay", "retry_tries", mode="before"
    )
    @classmethod
    def _finite_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a bool")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("retry_delay", "retry_backoff", "retry_max_delay")
    @classmethod
    def _int_when_whole(cls, value: float) -> float:
        return _whole_as_int(value)

    @field_validator("retry_jitter")
    @classmethod
    def _jitter_is_a_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("retry_jitter must hold finite numbers")
        if low < 0 or high < low or high > MAX_RETRY_SECONDS:
            raise ValueError(
                f"retry_jitter must be [low, high] with 0 <= low <= high <= {MAX_RETRY_SECONDS}"
            )
        return _whole_as_int(low), _whole_as_int(high)

    @field_validator("retry_tries")
    @classmethod
    def _tries_not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("retry_tries must be -1 (until the time bound) or at least 1")
        return value
