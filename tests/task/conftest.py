from helpers.core_environment import core_env  # noqa: F401 - fixture
from helpers.core_environment import task_env  # noqa: F401 - fixture
from helpers.in_memory_telemetry import in_memory_telemetry  # noqa: F401 - fixture
from helpers.otlp_receiver import otlp_receiver  # noqa: F401 - fixture
