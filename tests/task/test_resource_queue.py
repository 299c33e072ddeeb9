"""ResourceQueue: the worker queues and their Airflow pools."""

from enum import StrEnum

import pytest
from dkist_processing_core import ResourceQueue


def test_queues_are_the_four_known_ones():
    assert [queue.value for queue in ResourceQueue] == [
        "default",
        "high_memory",
        "multi_core",
        "gpu",
    ]


@pytest.mark.parametrize(
    ("queue", "pool"),
    [
        (ResourceQueue.DEFAULT, "default_pool"),
        (ResourceQueue.HIGH_MEMORY, "high_memory_pool"),
        (ResourceQueue.MULTI_CORE, "multi_core_pool"),
        (ResourceQueue.GPU, "gpu_pool"),
    ],
)
def test_each_queue_has_a_pool(queue, pool):
    assert queue.pool == pool


def test_queues_are_strings_airflow_can_use_directly():
    assert issubclass(ResourceQueue, StrEnum)
    assert ResourceQueue.HIGH_MEMORY == "high_memory"
    assert f"{ResourceQueue.GPU}" == "gpu"
    assert ResourceQueue("multi_core") is ResourceQueue.MULTI_CORE


def test_unknown_queue_is_refused():
    with pytest.raises(ValueError, match="'huge_memory' is not a valid ResourceQueue"):
        ResourceQueue("huge_memory")
