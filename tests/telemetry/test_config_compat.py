"""The previous product's configuration surface that client pipelines call (dkist-processing-common).

dkist-processing-common 14.8.0 subclasses the configuration and calls these at import and in its
tasks; the expected values are what dkist-processing-core 7.5.0 (on dkist-service-configuration and
talus) returned.
"""

from __future__ import annotations

import importlib

import pytest
from dkist_processing_core import config
from dkist_processing_core.config import DEFAULT_MESH_SERVICE
from dkist_processing_core.config import SECRET_MASK
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from dkist_processing_core.config import MeshService
from dkist_processing_core.config import RetryConfig
from loguru import logger
from pydantic import BaseModel
from pydantic import Field


class Credential(BaseModel):
    client_id: str
    client_secret: str


class CommonLikeConfiguration(DKISTProcessingCoreConfiguration):
    """Shaped like dkist-processing-common's DKISTProcessingCommonConfiguration."""

    notebook_save_wait_attempts: int = Field(default=120)
    gql_auth_token: str | None = Field(default="dev")
    globus_inbound_client_credentials: list[Credential] = Field(default_factory=list)

    @property
    def object_store_api_mesh_service(self) -> MeshService:
        return self.service_mesh_detail(service_name="object-store-api")

    @property
    def scratch_inventory_mesh_service(self) -> MeshService:
        mesh = self.service_mesh_detail(service_name="automated-processing-scratch-inventory")
        if mesh == DEFAULT_MESH_SERVICE:
            return MeshService(mesh_address="localhost", mesh_port=6379)
        return mesh


@pytest.fixture
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


def test_service_mesh_detail_returns_the_entry_or_the_default(core_env):
    core_env.setenv(
        "MESH_CONFIG", '{"object-store-api": {"mesh_address": "minio", "mesh_port": 9000}}'
    )
    configuration = CommonLikeConfiguration()
    assert configuration.object_store_api_mesh_service == MeshService(
        mesh_address="minio", mesh_port=9000
    )
    missing = configuration.service_mesh_detail(service_name="internal-api-gateway")
    assert (missing.host, missing.port) == (
        "127.0.0.1",
        0,
    )  # the previous product's "not configured"
    assert missing == DEFAULT_MESH_SERVICE
    assert configuration.scratch_inventory_mesh_service == MeshService(
        mesh_address="localhost", mesh_port=6379
    )
    fallback = MeshService(mesh_address="db", mesh_port=5432)
    assert configuration.service_mesh_detail("nope", default_mesh_service=fallback) is fallback


def test_mesh_services_answer_host_and_port_and_compare_with_the_previous_class(core_env):
    service = MeshService(mesh_address="rabbit", mesh_port=5673)
    assert (service.host, service.port) == ("rabbit", 5673)

    class PreviousMeshService(BaseModel):  # dkist_service_configuration.settings.MeshService
        host: str = Field(alias="mesh_address")
        port: int = Field(alias="mesh_port")

    assert service == PreviousMeshService(mesh_address="rabbit", mesh_port=5673)
    assert service != PreviousMeshService(mesh_address="rabbit", mesh_port=1)
    assert DEFAULT_MESH_SERVICE == PreviousMeshService(mesh_address="127.0.0.1", mesh_port=0)
    assert len({service, MeshService(mesh_address="rabbit", mesh_port=5673)}) == 1


def test_interservice_bus_properties(core_env):
    core_env.setenv(
        "MESH_CONFIG", '{"interservice-bus": {"mesh_address": "rabbit.mesh", "mesh_port": 5673}}'
    )
    core_env.setenv("ISB_QUEUE_TYPE", "quorum")
    core_env.setenv("ISB_EXCHANGE", "pipeline.x")
    core_env.setenv("OTEL_SERVICE_NAME", "dkist-processing-visp")
    configuration = CommonLikeConfiguration(isb_username="pipe", isb_password="word")
    assert (configuration.isb_mesh_service.host, configuration.isb_mesh_service.port) == (
        "rabbit.mesh",
        5673,
    )
    assert configuration.isb_queue_arguments == {"x-queue-type": "quorum"}

    import talus

    exchange = configuration.isb_publish_exchange
    assert isinstance(exchange, talus.Exchange)
    assert (exchange.name, exchange.type.value, exchange.durable) == ("pipeline.x", "direct", True)
    parameters = configuration.isb_producer_connection_parameters()
    assert (parameters.host, parameters.port, parameters.credentials.username) == (
        "rabbit.mesh",
        5673,
        "pipe",
    )
    assert parameters.client_properties["connection_name"] == "dkist-processing-visp-producer"
    assert configuration.isb_connection_retryer().stop.max_attempt_number == 3


def test_interservice_bus_default_is_localhost(core_env):
    assert CommonLikeConfiguration().isb_mesh_service == MeshService(
        mesh_address="localhost", mesh_port=5672
    )


def test_log_configurations_logs_every_setting_with_secrets_masked(core_env, log_lines):
    core_env.setenv("GQL_AUTH_TOKEN", "token-value-42")
    core_env.setenv("ISB_PASSWORD", "isb-password-42")
    core_env.setenv(
        "GLOBUS_INBOUND_CLIENT_CREDENTIALS",
        '[{"client_id": "id1", "client_secret": "globus-secret-42"}]',
    )
    configuration = CommonLikeConfiguration()
    configuration.log_configurations()
    logged = "\n".join(log_lines)
    assert "isb_exchange: master.direct.x" in log_lines
    assert (
        f"isb_password: {SECRET_MASK}" in log_lines
        and f"gql_auth_token: {SECRET_MASK}" in log_lines
    )
    assert "notebook_save_wait_attempts: 120" in log_lines
    # "credential" in the name: the whole field is a secret (issue 14)
    assert f"globus_inbound_client_credentials: {SECRET_MASK}" in log_lines
    for secret in ("token-value-42", "isb-password-42", "globus-secret-42"):
        assert secret not in logged
    assert len(log_lines) == len(CommonLikeConfiguration.model_fields)


def test_log_configurations_of_the_subclass_only(core_env, log_lines):
    # What dkist-processing-common does at import: the core's own settings are not logged again.
    CommonLikeConfiguration().log_configurations(log_parent_configurations=False)
    assert [line.split(":")[0] for line in log_lines] == [
        "notebook_save_wait_attempts",
        "gql_auth_token",
        "globus_inbound_client_credentials",
    ]


def test_retry_config_has_the_seed_names_defaults_and_int_values(core_env):
    retry = CommonLikeConfiguration().retry_config
    assert retry == RetryConfig(
        retry_delay=1, retry_backoff=2, retry_jitter=(1, 10), retry_max_delay=300, retry_tries=-1
    )
    values = [
        retry.retry_delay,
        retry.retry_backoff,
        *retry.retry_jitter,
        retry.retry_max_delay,
        retry.retry_tries,
    ]
    assert all(type(value) is int for value in values)
    core_env.setenv("RETRY_CONFIG", '{"retry_delay": 2.0, "retry_jitter": [0, 2.5]}')
    retry = CommonLikeConfiguration().retry_config
    assert type(retry.retry_delay) is int and retry.retry_jitter == (0, 2.5)


@pytest.mark.parametrize(
    "raw",
    [
        '{"retry_jitter": [0, NaN]}',
        '{"retry_jitter": [0, Infinity]}',
        '{"retry_delay": NaN}',
        '{"retry_max_delay": 1e400}',
        '{"retry_tries": 0}',
        '{"retry_backoff": 1000}',
    ],
)
def test_retry_config_refuses_values_without_sane_bounds(core_env, raw):
    core_env.setenv("RETRY_CONFIG", raw)
    with pytest.raises(config.ConfigurationError, match="RETRY_CONFIG"):
        CommonLikeConfiguration()


def test_model_copy_and_cpu_count(core_env):
    configuration = CommonLikeConfiguration()
    copied = configuration.model_copy(update={"is_notebook_execution_environment": True})
    assert (
        copied.is_notebook_execution_environment
        and not configuration.is_notebook_execution_environment
    )
    assert isinstance(configuration.cpu_count, int) and configuration.cpu_count >= 1


def test_previous_field_names_read_the_new_fields(core_env):
    core_env.setenv("OTEL_SERVICE_NAME", "svc")
    core_env.setenv("DKIST_SERVICE_VERSION", "1.2")
    core_env.setenv("NOMAD_ALLOC_ID", "a1")
    core_env.setenv("NOMAD_ALLOC_NAME", "n1")
    core_env.setenv("NOMAD_GROUP_NAME", "g1")
    core_env.setenv("LOGURU_LEVEL", "DEBUG")
    c = CommonLikeConfiguration()
    assert (
        c.service_name,
        c.service_version,
        c.allocation_id,
        c.allocation_name,
        c.allocation_group,
        c.log_level,
    ) == (
        "svc",
        "1.2",
        "a1",
        "n1",
        "g1",
        "DEBUG",
    )
    assert c.service_mesh is c.mesh_config


def test_module_attribute_core_configurations_is_read_on_first_use(core_env):
    module = importlib.import_module("dkist_processing_core.config")
    assert module.core_configurations is config.core_configuration()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("ISB_PUBLISH_TIMEOUT", "inf"),
        ("ISB_PUBLISH_TIMEOUT", "nan"),
        ("ISB_PUBLISH_TIMEOUT", "1e10"),
        ("MAX_FILE_DESCRIPTORS", str(2**40)),
        ("PIP_TIMEOUT", "100000"),
        ("PIP_RETRIES", "1000"),
    ],
)
def test_numbers_have_documented_ranges(core_env, variable, raw):
    core_env.setenv(variable, raw)
    with pytest.raises(config.ConfigurationError, match=variable):
        DKISTProcessingCoreConfiguration()
