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

from typing import Annotated

from dkist_processing_core._text_rules import MAX_SECONDS
from dkist_processing_core._text_rules import check_host
from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator

__all__ = ["DEFAULT_MESH_SERVICE", "MeshService", "RetryConfig"]


class MeshService(BaseModel):
    """Location of a service on the service mesh: ``{"mesh_address": ..., "mesh_port": ...}``."""

    model_config = ConfigDict(hide_input_in_errors=True)

    mesh_address: Annotated[
        str, AfterValidator(lambda value: check_host(value, "mesh_address"))
    ] = Field(description="Host name or IP address of the service (no user-info, port or path)")
    mesh_port: int = Field(ge=1, le=65535, description="TCP port of the service")

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
        host, port = getattr(other, "host", None), getattr(other, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            return (self.host, self.port) == (host, port)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.mesh_address, self.mesh_port))


#: What ``service_mesh_detail`` returns for a service that is not configured and has no default
#: of its own; port 0 marks "not configured", as in the previous product.
DEFAULT_MESH_SERVICE = MeshService.model_construct(mesh_address="127.0.0.1", mesh_port=0)


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):  # pydantic would read True as 1
        raise ValueError("must be a number, not a bool")
    return value


def _int_when_whole(value: float) -> float:
    return int(value) if float(value).is_integer() else value


def _number(low: float, high: float) -> tuple[object, ...]:
    """A finite number from ``low`` to ``high`` (not a bool), ``int`` when it is whole."""
    return (
        BeforeValidator(_not_a_bool),
        Field(ge=low, le=high, allow_inf_nan=False),
        AfterValidator(_int_when_whole),
    )


_Seconds = Annotated[float, *_number(0, MAX_SECONDS)]


class RetryConfig(BaseModel):
    """Retry policy (``RETRY_CONFIG``): delay, exponential backoff, jitter and limits, in seconds.

    Defaults and names are the seed's. Every number is finite; delays are at most one hour.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    retry_delay: _Seconds = Field(default=1, description="Seconds before the first retry")
    retry_backoff: Annotated[float, *_number(1, 100)] = Field(
        default=2, description="Multiplier of the delay after each retry"
    )
    retry_jitter: tuple[float, float] = Field(
        default=(1, 10), description="Range of random seconds added to each delay, [low, high]"
    )
    retry_max_delay: _Seconds = Field(
        default=300, description="Upper bound of one delay in seconds"
    )
    retry_tries: Annotated[int, BeforeValidator(_not_a_bool)] = Field(
        default=-1, ge=-1, le=10_000, description="Attempts in all; -1 means until the time bound"
    )

    @field_validator("retry_jitter")
    @classmethod
    def _jitter_is_a_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low <= high <= MAX_SECONDS:  # NaN fails every comparison
            raise ValueError(
                f"retry_jitter must be [low, high] with 0 <= low <= high <= {MAX_SECONDS}"
            )
        return _int_when_whole(low), _int_when_whole(high)

    @field_validator("retry_tries")
    @classmethod
    def _tries_not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("retry_tries must be -1 (until the time bound) or at least 1")
        return value
