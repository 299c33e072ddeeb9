"""Where and how the interservice bus is published to: :class:`IsbTarget` and its limits.

A target refuses, when it is made, what the broker would refuse on every attempt (a name over
255 bytes) and what must never reach a log line (a host with user-info): the rules are
``_text_rules``'s, the ones the configuration applies to the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from dkist_processing_core import _text_rules as rules
from dkist_processing_core.isb_outbox import Outbox
from dkist_processing_core.isb_outbox import default_isb_outbox_dir

if TYPE_CHECKING:
    from dkist_processing_core._settings_models import RetryConfig
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration

__all__ = ["FAILURE_QUEUE", "FAILURE_ROUTING_KEY", "MAX_SECONDS", "IsbTarget", "check_seconds"]

FAILURE_QUEUE = "recipe.run.failure.q"
FAILURE_ROUTING_KEY = "recipe.run.failure.m"
#: Upper bound of every time bound and retry delay, in seconds (the settings' bound too).
MAX_SECONDS = rules.MAX_SECONDS


def _default_retry() -> RetryConfig:
    from dkist_processing_core._settings_models import RetryConfig

    return RetryConfig()


def check_seconds(value: object, what: str, *, positive: bool = False) -> float:
    """``value`` as seconds if it is a finite number in range, else ValueError naming ``what``."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    # NaN fails every comparison; no float conversion, so a huge integer is refused, not overflowed.
    if not ((number > 0 if positive else number >= 0) and number <= MAX_SECONDS):
        low = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{what} must be a number of seconds {low} and <= {MAX_SECONDS:g}, got {value!r}"
        )
    return float(number)


@dataclass(frozen=True)
class IsbTarget:
    """Where and how to publish; :meth:`from_configuration` fills it from the environment."""

    host: str = "127.0.0.1"
    port: int = 5672
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    virtual_host: str = "/"
    exchange: str = "master.direct.x"
    queue: str = FAILURE_QUEUE
    routing_key: str = FAILURE_ROUTING_KEY
    queue_type: str = "classic"
    # False when the queue is owned by someone else (the producer then only declares the exchange).
    declare_queue: bool = True
    publish_timeout: float = 30.0
    outbox_dir: Path = field(default_factory=default_isb_outbox_dir)
    retry: RetryConfig = field(default_factory=_default_retry)

    def __post_init__(self) -> None:
        rules.check_host(self.host, "IsbTarget host")
        for name in ("exchange", "queue", "routing_key", "virtual_host"):
            rules.check_short_string(getattr(self, name), f"IsbTarget {name}")
        rules.check_name(self.username, "IsbTarget username")
        rules.check_credential(self.password, "IsbTarget password")
        check_seconds(
            self.publish_timeout, "IsbTarget publish_timeout (ISB_PUBLISH_TIMEOUT)", positive=True
        )
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError(
                f"IsbTarget port must be an integer from 1 to 65535, got {self.port!r}"
            )
        from dkist_processing_core._settings_models import RetryConfig

        if not isinstance(self.retry, RetryConfig):
            raise ValueError(f"IsbTarget retry must be a RetryConfig, got {self.retry!r}")

    @classmethod
    def from_configuration(
        cls, configuration: DKISTProcessingCoreConfiguration | None = None, **overrides: Any
    ) -> IsbTarget:
        """The production target from ``configuration`` (default: this process's), with overrides."""
        if configuration is None:
            from dkist_processing_core.config import core_configuration

            configuration = core_configuration()
        service = configuration.isb_mesh_service
        target = cls(
            host=rules.host_for_connecting(service.host),
            port=service.port,
            username=configuration.isb_username,
            password=configuration.isb_password,
            exchange=configuration.isb_exchange,
            queue_type=configuration.isb_queue_type,
            publish_timeout=configuration.isb_publish_timeout,
            outbox_dir=Path(configuration.isb_outbox_dir),
            retry=configuration.retry_config,
        )
        return replace(target, **overrides) if overrides else target

    @property
    def broker(self) -> str:
        return f"{rules.host_in_url(self.host)}:{self.port}"

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.outbox_dir)
