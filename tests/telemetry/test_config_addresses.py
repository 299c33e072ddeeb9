"""Credentials in addresses (issue 22, item 2): user-info never reaches any output.

``MESH_CONFIG``'s ``mesh_address`` is a host name or an IP address and nothing else (what every
real client does with it: pika's ``host``, ``f"http://{host}:{port}/graphql"``, Redis, the object
store). An address that carries user-info (``amqp://user:secret@host``, ``user:secret@host``, a
percent-encoded ``@``, ...) is refused when the configuration is read, with a message that names
the variable and points to ``ISB_USERNAME``/``ISB_PASSWORD`` and never echoes the value. The
checks run on what a user sees: the configuration's error, ``dkist-processing-core config``, the
failure callback's log lines and its outbox entry, and an ``IsbTarget`` built by code.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
from urllib.parse import quote

import pytest
from dkist_processing_core.config import ConfigurationError
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from dkist_processing_core.config import MeshService
from dkist_processing_core.failure_callback import chat_ops_notification
from dkist_processing_core.isb import IsbTarget
from helpers.build_cli import cli_command
from helpers.task_modules import clean_environment

SECRET = "S3cret-PW-do-not-print"
USER = "isb-user-hidden"
ODD_SECRET = "p@ss:w/rd#S3cret"  # needs percent-encoding inside a URL

ADDRESSES_WITH_USER_INFO = {
    "url": f"amqp://{USER}:{SECRET}@rabbit.mesh",
    "url-port-vhost": f"amqps://{USER}:{SECRET}@rabbit.mesh:5671/%2F",
    "url-upper-case": f"AMQP://{USER}:{SECRET}@RABBIT.MESH",
    "http-url": f"http://{USER}:{SECRET}@rabbit.mesh/",
    "no-scheme": f"{USER}:{SECRET}@rabbit.mesh",
    "no-scheme-port": f"{USER}:{SECRET}@rabbit.mesh:5672",
    "scheme-relative": f"//{USER}:{SECRET}@rabbit.mesh",
    "user-only": f"{USER}@rabbit.mesh",
    "url-user-only": f"amqp://{USER}@rabbit.mesh",
    "percent-encoded-password": f"amqp://{USER}:{quote(ODD_SECRET, safe='')}@rabbit.mesh",
    "all-percent-encoded": quote(f"{USER}:{SECRET}@rabbit.mesh", safe=""),
    "ipv6-url": f"amqp://{USER}:{SECRET}@[::1]:5672",
    "ipv6-no-scheme": f"{USER}:{SECRET}@[::1]",
    "spaces": f"  {USER}:{SECRET}@rabbit.mesh  ",
    "newline": f"rabbit.mesh\n{USER}:{SECRET}@",
    "nothing-after": f"{USER}:{SECRET}@",
}
HIDDEN = (SECRET, USER, quote(SECRET, safe=""), quote(ODD_SECRET, safe=""), "S3cret")


def mesh_config(address: str, service: str = "interservice-bus") -> str:
    return json.dumps({service: {"mesh_address": address, "mesh_port": 5672}})


def assert_hidden(*texts: str) -> None:
    for text in texts:
        for hidden in HIDDEN:
            assert hidden not in text, f"{hidden!r} shown in: {text[-600:]}"


@pytest.mark.parametrize(
    "address", ADDRESSES_WITH_USER_INFO.values(), ids=list(ADDRESSES_WITH_USER_INFO)
)
def test_an_address_with_user_info_is_refused_without_echoing_it(monkeypatch, address):
    monkeypatch.setenv("MESH_CONFIG", mesh_config(address))

    with pytest.raises(ConfigurationError) as refused:
        DKISTProcessingCoreConfiguration()

    message = str(refused.value)
    assert "MESH_CONFIG (interservice-bus.mesh_address)" in message
    assert "ISB_USERNAME" in message and "ISB_PASSWORD" in message
    assert "\n" not in message
    assert_hidden(message, repr(refused.value))


@pytest.mark.parametrize(
    "address",
    ["amqp://rabbit.mesh", "rabbit.mesh:5672", "rabbit.mesh/vhost", "räbbit.mesh", "", " "],
)
def test_anything_but_a_host_or_ip_is_refused_naming_the_variable(monkeypatch, address):
    monkeypatch.setenv("MESH_CONFIG", mesh_config(address, "object-store-api"))

    with pytest.raises(ConfigurationError, match=r"MESH_CONFIG \(object-store-api.mesh_address\)"):
        DKISTProcessingCoreConfiguration()


@pytest.mark.parametrize(
    "address",
    [
        "rabbit.mesh",
        "localhost",
        "rabbitmq_1.service.consul",
        "RABBIT.MESH.",
        "10.0.0.5",
        "::1",
        "[::1]",
        "fe80::1%eth0",
    ],
)
def test_host_names_and_ip_addresses_are_accepted_as_written(monkeypatch, address):
    monkeypatch.setenv("MESH_CONFIG", mesh_config(address))

    configuration = DKISTProcessingCoreConfiguration()

    assert configuration.isb_mesh_service.host == address  # clients read it unchanged
    target = IsbTarget.from_configuration(configuration)
    assert target.host == address.strip("[]")  # pika takes an IPv6 address without brackets


def test_a_bare_ipv6_address_from_the_mesh_becomes_a_valid_otlp_endpoint(monkeypatch):
    monkeypatch.setenv("MESH_CONFIG", mesh_config("::1", "otlp-traces-endpoint"))

    assert DKISTProcessingCoreConfiguration().otlp_traces_endpoint == "[::1]:5672"


@pytest.mark.parametrize(
    "address", ADDRESSES_WITH_USER_INFO.values(), ids=list(ADDRESSES_WITH_USER_INFO)
)
def test_an_isb_target_built_by_code_refuses_user_info_without_echoing_it(tmp_path, address):
    with pytest.raises(ValueError) as refused:
        IsbTarget(host=address, outbox_dir=tmp_path)

    assert "ISB_USERNAME" in str(refused.value)
    assert_hidden(str(refused.value))


def test_a_mesh_service_built_by_code_does_not_echo_its_input():
    with pytest.raises(ValueError) as refused:
        MeshService(mesh_address=ADDRESSES_WITH_USER_INFO["no-scheme"], mesh_port=5672)

    assert_hidden(str(refused.value), repr(refused.value))


@pytest.mark.parametrize(
    "key",
    [
        f"amqp://{USER}:{SECRET}@rabbit.mesh",
        f"{USER}:{SECRET}@rabbit.mesh",
        "bad key\nwith newline",
    ],
)
def test_a_mesh_config_key_is_a_service_name_and_is_never_echoed(monkeypatch, key):
    monkeypatch.setenv(
        "MESH_CONFIG", json.dumps({key: {"mesh_address": "rabbit.mesh", "mesh_port": 1}})
    )

    with pytest.raises(ConfigurationError, match="MESH_CONFIG") as refused:
        DKISTProcessingCoreConfiguration()

    assert_hidden(str(refused.value))
    assert "\n" not in str(refused.value)


def config_command(tmp_path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment(ISB_OUTBOX_DIR=str(tmp_path / "outbox"), **variables)
    return subprocess.run(
        [*cli_command(), "config"], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "address", ADDRESSES_WITH_USER_INFO.values(), ids=list(ADDRESSES_WITH_USER_INFO)
)
def test_config_command_refuses_the_address_and_prints_no_user_info(tmp_path, address):
    result = config_command(tmp_path, MESH_CONFIG=mesh_config(address))

    assert result.returncode == 1, result.stdout
    assert "MESH_CONFIG" in result.stderr and "ISB_PASSWORD" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_hidden(result.stdout, result.stderr)


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]
)
@pytest.mark.parametrize(
    "endpoint",
    [
        f"http://{USER}:{SECRET}@otel:4317",
        f"{USER}:{SECRET}@otel:4317",
        f"https://{USER}@otel:4317",
    ],
)
def test_otlp_endpoints_with_user_info_are_refused_and_never_printed(tmp_path, variable, endpoint):
    result = config_command(tmp_path, **{variable: endpoint})

    assert result.returncode == 1
    assert variable in result.stderr
    assert_hidden(result.stdout, result.stderr)


@pytest.mark.parametrize(
    "address",
    [
        ADDRESSES_WITH_USER_INFO[name]
        for name in ("url", "no-scheme", "percent-encoded-password", "ipv6-no-scheme")
    ],
)
def test_the_failure_callback_prints_no_user_info_and_keeps_the_report(
    monkeypatch, tmp_path, caplog, address
):
    outbox = tmp_path / "outbox"
    monkeypatch.setenv("MESH_CONFIG", mesh_config(address))
    monkeypatch.setenv("ISB_OUTBOX_DIR", str(outbox))
    monkeypatch.setenv("ISB_PUBLISH_TIMEOUT", "2")
    monkeypatch.setenv("RETRY_CONFIG", '{"retry_delay": 0.05, "retry_jitter": [0, 0.05]}')
    caplog.set_level(logging.DEBUG)
    callback = functools.partial(
        chat_ops_notification, workflow_name="W", workflow_version="1.0", task_name="T"
    )

    callback({"run_id": "manual__1"})

    assert_hidden(caplog.text)
    kept = [json.loads(path.read_text()) for path in outbox.glob("*.json")]
    assert [entry["body"]["taskName"] for entry in kept] == ["T"]
    assert_hidden(json.dumps(kept))
