"""Resource queues: which kind of Airflow worker runs a task."""

from enum import StrEnum

__all__ = ["ResourceQueue"]


class ResourceQueue(StrEnum):
    """The worker queue a task is routed to; each queue has an Airflow pool ``{queue}_pool``."""

    DEFAULT = "default"
    HIGH_MEMORY = "high_memory"
    MULTI_CORE = "multi_core"
    GPU = "gpu"

    @property
    def pool(self) -> str:
        """Name of the Airflow pool that limits concurrency on this queue."""
        return f"{self.value}_pool"
