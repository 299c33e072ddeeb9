"""Numbers and secrets of the configuration (issue 14). Each range is one field constraint; the
3600 s bound is one constant (``isb.MAX_SECONDS``) that ``dkist_processing_core.isb`` checks too:

- ``ISB_PUBLISH_TIMEOUT``: finite, > 0 and <= 3600 (``Field(gt=0, le=3600, allow_inf_nan=False)``)
- ``RETRY_CONFIG``: ``retry_delay``, ``retry_max_delay`` and both ends of ``retry_jitter`` finite,
  0 ... 3600; ``retry_backoff`` 1 ... 100; ``retry_tries`` -1 or 1 ... 10000 (0 refused)
- ``MAX_FILE_DESCRIPTORS``: 64 ... 2**31 - 1 (a limit of 1 kills the task with an error that does
  not name the setting; 10**30 overflows ``setrlimit``)
- ``PIP_TIMEOUT`` 1 ... 3600, ``PIP_RETRIES`` 0 ... 100

Masking: besides pass/secret/token, field names containing ``key``, ``credential`` or ``private``,
and the user-info part of any URL-like value (``scheme://user:password@host``), at any depth;
keys of plain mappings (a client's ``s3_client_config``) by the same names rule (issue 24).
"""

from __future__ import annotations

import pytest
from dkist_processing_core.config import ConfigurationError
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from dkist_processing_core.config import is_secret_field
from pydantic import BaseModel

ACCEPTED_TODAY = [
    ("ISB_PUBLISH_TIMEOUT", "inf"),
    ("ISB_PUBLISH_TIMEOUT", "1e10"),
    ("ISB_PUBLISH_TIMEOUT", "3601"),
    ("RETRY_CONFIG", '{"retry_jitter": [NaN, 1]}'),
    ("RETRY_CONFIG", '{"retry_jitter": [0, Infinity]}'),
    ("RETRY_CONFIG", '{"retry_delay": 1e400}'),
    ("RETRY_CONFIG", '{"retry_delay": 7200}'),
    ("RETRY_CONFIG", '{"retry_max_delay": Infinity}'),
    ("RETRY_CONFIG", '{"retry_backoff": 1e400}'),
    ("RETRY_CONFIG", '{"retry_backoff": 1000}'),
    ("RETRY_CONFIG", '{"retry_tries": 0}'),
    ("RETRY_CONFIG", '{"retry_tries": 100000}'),
    ("MAX_FILE_DESCRIPTORS", "1"),
    ("MAX_FILE_DESCRIPTORS", "10"),
    ("MAX_FILE_DESCRIPTORS", "1000000000000000000000000000000"),
    ("PIP_TIMEOUT", "1000000000"),
    ("PIP_RETRIES", "1000000000"),
]


@pytest.mark.parametrize(("variable", "value"), ACCEPTED_TODAY)
def test_a_number_out_of_its_range_is_refused_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        DKISTProcessingCoreConfiguration()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ISB_PUBLISH_TIMEOUT", "3600"),
        ("ISB_PUBLISH_TIMEOUT", "0.5"),
        (
            "RETRY_CONFIG",
            '{"retry_delay": 0, "retry_backoff": 1, "retry_jitter": [0, 3600], '
            '"retry_max_delay": 3600, "retry_tries": 10000}',
        ),
        ("RETRY_CONFIG", '{"retry_tries": -1}'),
        ("MAX_FILE_DESCRIPTORS", "64"),
        ("MAX_FILE_DESCRIPTORS", "1048576"),
    ],
)
def test_the_ends_of_the_ranges_are_accepted(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    DKISTProcessingCoreConfiguration()


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "aws_access_key_id",
        "credentials",
        "service_credential",
        "private_key",
        "privatekey",
    ],
)
def test_key_credential_and_private_names_are_secret(name):
    assert is_secret_field(name)


class _ObjectStore(BaseModel):
    endpoint_url: str = "https://alice:s3-url-password@store.example:9000/bucket"
    access_key: str = "AKIA-ACCESS-KEY-VALUE"
    private_cert: str = "PRIVATE-CERT-VALUE"


class _ClientConfiguration(DKISTProcessingCoreConfiguration):
    object_store: _ObjectStore = _ObjectStore()
    scratch_credentials: str = "CREDENTIALS-VALUE"
    database_url: str = "postgresql://bob:db-url-password@db.example:5432/recipes"


def test_key_credential_private_fields_and_url_user_info_never_show():
    configuration = _ClientConfiguration()
    shown = [repr(configuration), str(configuration), repr(configuration.masked_dump())]
    for secret in (
        "s3-url-password",
        "AKIA-ACCESS-KEY-VALUE",
        "PRIVATE-CERT-VALUE",
        "CREDENTIALS-VALUE",
        "db-url-password",
    ):
        assert all(secret not in text for text in shown), secret
    dumped = configuration.masked_dump()
    # The rest of a URL stays readable: only the user-info part is masked.
    assert "db.example:5432/recipes" in dumped["database_url"]
    assert "store.example:9000/bucket" in dumped["object_store"]["endpoint_url"]


class _PlainDictConfiguration(DKISTProcessingCoreConfiguration):
    # dkist-processing-common's s3_client_config and friends are plain dicts
    s3_client_config: dict | None = {
        "aws_secret_access_key": "DICT-SECRET-VALUE",
        "region_name": "us-west-2",
        "retries": [{"session_token": "TOKEN-IN-A-LIST"}],
    }


def test_secret_keys_of_plain_dicts_are_masked_like_fields(core_env):
    from loguru import logger

    configuration = _PlainDictConfiguration()
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(message.record["message"]), level="INFO")
    try:
        configuration.log_configurations(log_parent_configurations=False)
    finally:
        logger.remove(sink)
    shown = [repr(configuration), str(configuration), repr(configuration.masked_dump()), *logged]
    for secret in ("DICT-SECRET-VALUE", "TOKEN-IN-A-LIST"):
        assert all(secret not in text for text in shown), secret
    dumped = configuration.masked_dump()["s3_client_config"]
    assert dumped["region_name"] == "us-west-2"
    assert configuration.s3_client_config["aws_secret_access_key"] == "DICT-SECRET-VALUE"


def test_json_nesting_is_bounded_by_pydantics_parser(core_env):
    # pydantic's JSON parser refuses more than 200 levels (json.loads would raise RecursionError
    # near 1,000); anything below is read, and shown, like any other value.
    def nested(depth: int) -> str:
        return '{"a": ' * depth + "1" + "}" * depth

    core_env.setenv("S3_CLIENT_CONFIG", nested(150))
    assert "'a'" in repr(_PlainDictConfiguration())
    core_env.setenv("S3_CLIENT_CONFIG", nested(250))
    with pytest.raises(ConfigurationError, match="environment variable S3_CLIENT_CONFIG"):
        _PlainDictConfiguration()
