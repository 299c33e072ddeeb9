"""DKISTProcessingCoreConfiguration: every variable read from the environment, valid and invalid."""

from __future__ import annotations

from pathlib import Path

import pytest
from dkist_processing_core.config import SECRET_MASK
from dkist_processing_core.config import ConfigurationError
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from dkist_processing_core.config import MeshService
from dkist_processing_core.config import RetryConfig
from dkist_processing_core.config import core_configuration
from dkist_processing_core.config import is_secret_field
from pydantic import BaseModel
from pydantic import Field

# variable -> (raw value, attribute, expected parsed value). Every field of the class is listed:
# test_every_field_has_a_valid_and_an_invalid_case keeps this table complete.
VALID = {
    "LOGURU_LEVEL": ("DEBUG", "loguru_level", "DEBUG"),
    "MESH_CONFIG": (
        '{"interservice-bus": {"mesh_address": "rabbit.mesh", "mesh_port": 5673}}',
        "mesh_config",
        {"interservice-bus": MeshService(mesh_address="rabbit.mesh", mesh_port=5673)},
    ),
    "RETRY_CONFIG": (
        '{"retry_delay": 0.5, "retry_backoff": 3, "retry_jitter": [0, 2], "retry_max_delay": 10, "retry_tries": 4}',
        "retry_config",
        RetryConfig(
            retry_delay=0.5, retry_backoff=3, retry_jitter=(0, 2), retry_max_delay=10, retry_tries=4
        ),
    ),
    "OTEL_SERVICE_NAME": ("dkist-processing-visp", "otel_service_name", "dkist-processing-visp"),
    "DKIST_SERVICE_VERSION": ("2.1.0", "dkist_service_version", "2.1.0"),
    "NOMAD_ALLOC_ID": ("5b3c-77aa", "nomad_alloc_id", "5b3c-77aa"),
    "NOMAD_ALLOC_NAME": ("workers.worker[0]", "nomad_alloc_name", "workers.worker[0]"),
    "NOMAD_GROUP_NAME": ("worker", "nomad_group_name", "worker"),
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": ("false", "otel_exporter_otlp_traces_insecure", False),
    "OTEL_EXPORTER_OTLP_METRICS_INSECURE": ("0", "otel_exporter_otlp_metrics_insecure", False),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": (
        "collector:4317",
        "otel_exporter_otlp_traces_endpoint",
        "collector:4317",
    ),
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": (
        "https://otel.example.org",
        "otel_exporter_otlp_metrics_endpoint",
        "https://otel.example.org",
    ),
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": (
        '["pika", "requests"]',
        "otel_python_disabled_instrumentations",
        ["pika", "requests"],
    ),
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": (
        "client/.*/info,healthcheck",
        "otel_python_fastapi_excluded_urls",
        "client/.*/info,healthcheck",
    ),
    "SYSTEM_METRIC_INSTRUMENTATION_CONFIG": (
        '{"system.memory.usage": ["used", "free"], "process.runtime.memory": true}',
        "system_metric_instrumentation_config",
        {"system.memory.usage": ["used", "free"], "process.runtime.memory": True},
    ),
    "ISB_USERNAME": ("pipeline", "isb_username", "pipeline"),
    "ISB_PASSWORD": ("s3cret-value", "isb_password", "s3cret-value"),
    "ISB_EXCHANGE": ("other.direct.x", "isb_exchange", "other.direct.x"),
    "ISB_QUEUE_TYPE": ("Quorum", "isb_queue_type", "quorum"),
    "BUILD_VERSION": ("1.2.3rc1", "build_version", "1.2.3rc1"),
    "MAX_FILE_DESCRIPTORS": ("4096", "max_file_descriptors", 4096),
    "PIP_TIMEOUT": ("30", "pip_timeout", 30),
    "PIP_RETRIES": ("0", "pip_retries", 0),
    "IS_NOTEBOOK_EXECUTION_ENVIRONMENT": ("true", "is_notebook_execution_environment", True),
    "ISB_PUBLISH_TIMEOUT": ("2.5", "isb_publish_timeout", 2.5),
    "ISB_OUTBOX_DIR": ("/var/lib/dkist/outbox", "isb_outbox_dir", Path("/var/lib/dkist/outbox")),
}

# variable -> raw values that must be refused with an error naming the variable.
INVALID = {
    "LOGURU_LEVEL": ["LOUD", "debug", "10", " INFO"],  # loguru itself fails on the last three
    "MESH_CONFIG": [
        "not json",
        '{"interservice-bus": {"mesh_address": "rabbit", "mesh_port": 70000}}',
    ],
    "RETRY_CONFIG": ['{"retry_backoff": 0.5}', '{"retry_jitter": [2, 1]}', '{"retry_tries": -2}'],
    "OTEL_SERVICE_NAME": [""],
    "DKIST_SERVICE_VERSION": [""],
    "NOMAD_ALLOC_ID": [""],
    "NOMAD_ALLOC_NAME": [""],
    "NOMAD_GROUP_NAME": [""],
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": ["maybe"],
    "OTEL_EXPORTER_OTLP_METRICS_INSECURE": ["maybe"],
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": [
        "collector:port",
        "localhost:70000",
        "ftp://collector:4317",
    ],
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ["two words:4317"],
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ["[1, 2]", '["pika"'],
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": ["health,(["],
    "SYSTEM_METRIC_INSTRUMENTATION_CONFIG": [
        '{"system.memory.usage": "used"}',
        '["system.memory.usage"]',
    ],
    "ISB_USERNAME": [""],
    "ISB_PASSWORD": [""],
    "ISB_EXCHANGE": [""],
    "ISB_QUEUE_TYPE": ["lazy"],
    "BUILD_VERSION": ["1.0 beta", "1.0+local"],
    "MAX_FILE_DESCRIPTORS": ["0", "many"],
    "PIP_TIMEOUT": ["0", "fast"],
    "PIP_RETRIES": ["-1"],
    "IS_NOTEBOOK_EXECUTION_ENVIRONMENT": ["sometimes"],
    "ISB_PUBLISH_TIMEOUT": ["0", "soon"],
    "ISB_OUTBOX_DIR": ["", "relative/outbox"],
}


def test_every_field_has_a_valid_and_an_invalid_case():
    variables = {name.upper() for name in DKISTProcessingCoreConfiguration.model_fields}
    assert set(VALID) == variables
    assert set(INVALID) == variables


def test_defaults_are_the_seed_defaults(core_env):
    configuration = DKISTProcessingCoreConfiguration()
    assert configuration.loguru_level == "INFO"
    assert configuration.mesh_config == {}
    assert configuration.retry_config == RetryConfig()
    assert configuration.otel_service_name == "unknown-service-name"
    assert configuration.dkist_service_version == "unknown-service-version"
    assert configuration.nomad_alloc_id == "unknown-allocation-id"
    assert configuration.nomad_alloc_name == "unknown-allocation-name"
    assert configuration.nomad_group_name == "unknown-allocation-group"
    assert configuration.otel_exporter_otlp_traces_insecure is True
    assert configuration.otel_exporter_otlp_metrics_insecure is True
    assert configuration.otel_exporter_otlp_traces_endpoint is None
    assert configuration.otel_exporter_otlp_metrics_endpoint is None
    assert configuration.otel_python_disabled_instrumentations == []
    assert configuration.otel_python_fastapi_excluded_urls == "health"
    assert configuration.system_metric_instrumentation_config is None
    assert configuration.isb_username == "guest"
    assert configuration.isb_password == "guest"
    assert configuration.isb_exchange == "master.direct.x"
    assert configuration.isb_queue_type == "classic"
    assert configuration.build_version == "dev"
    assert configuration.max_file_descriptors == 1024
    assert configuration.pip_timeout == 15
    assert configuration.pip_retries == 5
    assert configuration.is_notebook_execution_environment is False
    assert configuration.isb_publish_timeout == 30.0
    assert (
        configuration.isb_outbox_dir
        == Path.home() / ".local" / "state" / "dkist-processing-core" / "isb-outbox"
    )


@pytest.mark.parametrize("variable", sorted(VALID))
def test_valid_value_is_read_from_the_environment(core_env, variable):
    raw, attribute, expected = VALID[variable]
    core_env.setenv(variable, raw)
    assert getattr(DKISTProcessingCoreConfiguration(), attribute) == expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [(variable, raw) for variable, values in sorted(INVALID.items()) for raw in values],
)
def test_invalid_value_fails_naming_the_variable(core_env, variable, raw):
    core_env.setenv(variable, raw)
    with pytest.raises(ConfigurationError) as caught:
        DKISTProcessingCoreConfiguration()
    message = str(caught.value)
    assert f"environment variable {variable}" in message
    assert isinstance(caught.value, ValueError)


def test_variable_names_are_case_insensitive(core_env):
    core_env.setenv("isb_username", "lower-case-user")
    assert DKISTProcessingCoreConfiguration().isb_username == "lower-case-user"


def test_fields_can_be_passed_by_name(core_env):
    configuration = DKISTProcessingCoreConfiguration(isb_username="x", max_file_descriptors=100)
    assert (configuration.isb_username, configuration.max_file_descriptors) == ("x", 100)


def test_disabled_instrumentations_accept_opentelemetry_comma_form(core_env):
    core_env.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "pika, requests,system_metrics")
    assert DKISTProcessingCoreConfiguration().otel_python_disabled_instrumentations == [
        "pika",
        "requests",
        "system_metrics",
    ]


def test_empty_endpoint_means_not_configured(core_env):
    core_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    assert DKISTProcessingCoreConfiguration().otlp_traces_endpoint is None


def test_outbox_dir_expands_the_home_folder(core_env):
    core_env.setenv("ISB_OUTBOX_DIR", "~/outbox")
    assert DKISTProcessingCoreConfiguration().isb_outbox_dir == Path.home() / "outbox"


def test_outbox_dir_that_is_a_file_is_refused(core_env, tmp_path):
    a_file = tmp_path / "outbox"
    a_file.write_text("not a folder")
    core_env.setenv("ISB_OUTBOX_DIR", str(a_file))
    with pytest.raises(ConfigurationError, match="ISB_OUTBOX_DIR"):
        DKISTProcessingCoreConfiguration()


def test_otlp_endpoints_fall_back_to_the_mesh(core_env):
    core_env.setenv(
        "MESH_CONFIG",
        '{"otlp-traces-endpoint": {"mesh_address": "traces.mesh", "mesh_port": 4317},'
        ' "otlp-metrics-endpoint": {"mesh_address": "metrics.mesh", "mesh_port": 4318}}',
    )
    configuration = DKISTProcessingCoreConfiguration()
    assert configuration.otlp_traces_endpoint == "traces.mesh:4317"
    assert configuration.otlp_metrics_endpoint == "metrics.mesh:4318"


def test_otlp_endpoint_variables_override_the_mesh(core_env):
    core_env.setenv(
        "MESH_CONFIG",
        '{"otlp-traces-endpoint": {"mesh_address": "traces.mesh", "mesh_port": 4317}}',
    )
    core_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "override:4317")
    configuration = DKISTProcessingCoreConfiguration()
    assert configuration.otlp_traces_endpoint == "override:4317"
    assert configuration.otlp_metrics_endpoint is None


def test_interservice_bus_from_the_mesh_with_a_local_default(core_env):
    # localhost, as in the previous product (dkist-processing-core 7.5.0)
    assert DKISTProcessingCoreConfiguration().isb_mesh_service == MeshService(
        mesh_address="localhost", mesh_port=5672
    )
    core_env.setenv(
        "MESH_CONFIG", '{"interservice-bus": {"mesh_address": "rabbit.mesh", "mesh_port": 5673}}'
    )
    assert DKISTProcessingCoreConfiguration().isb_mesh_service == MeshService(
        mesh_address="rabbit.mesh", mesh_port=5673
    )


def test_cpu_count_is_the_cpus_this_process_may_use(core_env):
    import os

    assert DKISTProcessingCoreConfiguration().cpu_count == len(os.sched_getaffinity(0))


def test_core_configuration_is_read_once_per_process(core_env):
    core_env.setenv("ISB_USERNAME", "first")
    first = core_configuration()
    core_env.setenv("ISB_USERNAME", "second")
    assert core_configuration() is first
    assert first.isb_username == "first"


# -- secrets ---------------------------------------------------------------------------------------


def test_password_never_appears_in_repr_str_or_dump(core_env):
    core_env.setenv("ISB_PASSWORD", "hunter2-very-secret")
    configuration = DKISTProcessingCoreConfiguration()
    assert configuration.isb_password == "hunter2-very-secret"
    for text in (repr(configuration), str(configuration), str(configuration.masked_dump())):
        assert "hunter2-very-secret" not in text
        assert SECRET_MASK in text
    dumped = configuration.masked_dump()
    assert dumped["isb_password"] == SECRET_MASK
    assert dumped["isb_username"] == "guest"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("isb_password", True),
        ("globus_client_secret", True),
        ("api_token", True),
        ("isb_username", False),
    ],
)
def test_secret_field_names(name, secret):
    assert is_secret_field(name) is secret


def test_invalid_json_is_reported_without_its_content(core_env):
    core_env.setenv("MESH_CONFIG", '{"interservice-bus": {"password": "hunter2-in-json"')
    with pytest.raises(ConfigurationError) as caught:
        DKISTProcessingCoreConfiguration()
    assert "MESH_CONFIG" in str(caught.value)
    assert "hunter2" not in str(caught.value)


# -- client subclasses ------------------------------------------------------------------------------


class PipelineConfiguration(DKISTProcessingCoreConfiguration):
    """What a client pipeline adds: more fields, read the same way."""

    scratch_base_path: Path = Field(
        default=Path("/scratch"), description="Root of the scratch disk"
    )
    scratch_inventory_max_db_index: int = Field(default=15, ge=0)
    object_store_secret_key: str = Field(default="")
    api_token: int = Field(default=0)


def test_client_subclass_reads_its_own_and_the_core_variables(core_env):
    core_env.setenv("SCRATCH_BASE_PATH", "/data/scratch")
    core_env.setenv("SCRATCH_INVENTORY_MAX_DB_INDEX", "3")
    core_env.setenv("ISB_USERNAME", "pipeline")
    configuration = PipelineConfiguration()
    assert configuration.scratch_base_path == Path("/data/scratch")
    assert configuration.scratch_inventory_max_db_index == 3
    assert configuration.isb_username == "pipeline"
    assert configuration.cpu_count >= 1


def test_client_subclass_invalid_value_names_its_variable(core_env):
    core_env.setenv("SCRATCH_INVENTORY_MAX_DB_INDEX", "-1")
    with pytest.raises(
        ConfigurationError, match="environment variable SCRATCH_INVENTORY_MAX_DB_INDEX"
    ):
        PipelineConfiguration()


class ObjectStore(BaseModel):
    endpoint: str = "https://store.example"
    secret_key: str = "nested-secret-value"


class NestedSecretConfiguration(DKISTProcessingCoreConfiguration):
    object_store: ObjectStore = Field(default_factory=ObjectStore)
    stores: dict[str, ObjectStore] = Field(default_factory=lambda: {"archive": ObjectStore()})


def test_secrets_of_nested_client_models_are_masked(core_env):
    configuration = NestedSecretConfiguration()
    for text in (repr(configuration), str(configuration), str(configuration.masked_dump())):
        assert "nested-secret-value" not in text
        assert "https://store.example" in text
    dumped = configuration.masked_dump()
    assert dumped["object_store"] == {
        "endpoint": "https://store.example",
        "secret_key": SECRET_MASK,
    }
    assert dumped["stores"]["archive"]["secret_key"] == SECRET_MASK
    assert dumped["mesh_config"] == {} and dumped["retry_config"]["retry_jitter"] == [1, 10]
    assert "ObjectStore(endpoint='https://store.example', secret_key='**********')" in repr(
        configuration
    )


def test_client_subclass_secrets_are_masked_everywhere(core_env):
    core_env.setenv("OBJECT_STORE_SECRET_KEY", "s3-secret-key-value")
    configuration = PipelineConfiguration()
    assert "s3-secret-key-value" not in repr(configuration)
    assert configuration.masked_dump()["object_store_secret_key"] == SECRET_MASK
    core_env.setenv("API_TOKEN", "hunter2-token-not-an-int")
    with pytest.raises(ConfigurationError) as caught:
        PipelineConfiguration()
    assert "environment variable API_TOKEN" in str(caught.value)
    assert "hunter2" not in str(caught.value)
