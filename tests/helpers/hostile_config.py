"""Hostile values for every environment variable of the settings class, and how they ended.

:func:`classify` sets one variable (on top of a clean environment), reads the configuration and
uses it the way the product does, and names the outcome:

- ``refused``: a ``ConfigurationError`` of one line that names the variable and shows no secret;
- ``inert``: accepted, and everything that reads it works: ``repr``, ``masked_dump`` printed as
  ``dkist-processing-core config`` prints it (UTF-8), the ISB target, the OTLP endpoints, the log
  level (also as loguru reads ``LOGURU_LEVEL`` itself at import), with no secret in any of it;
- ``misbehaved``: anything else (another exception, a message without the variable, a secret
  shown), with the reason.

A "secret" is the marker :data:`SECRET` inside a URL's user-info, in ``ISB_PASSWORD`` or in an
address; a free-text field (a service name) that holds ``user:S3cr3t@host`` without a scheme is
not recognisable as one and is shown as written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from loguru import logger as loguru_logger  # imported before any hostile LOGURU_LEVEL is set

from helpers.task_modules import clean_environment

__all__ = ["HOSTILE_VALUES", "SECRET", "Outcome", "VARIABLES", "classify", "one_variable"]

SECRET = "S3cr3tMarker"
DEEP = 50_000  # brackets: far beyond Python's recursion limit, under Linux's 128 KiB per variable


def _variables() -> list[str]:
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration

    return [name.upper() for name in DKISTProcessingCoreConfiguration.model_fields]


VARIABLES = _variables()
ADDRESS_VARIABLES = {
    "MESH_CONFIG",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
}

#: name -> value (``str`` through ``os.environ``, ``bytes`` through ``os.environb``).
HOSTILE_VALUES: dict[str, str | bytes] = {
    "empty": "",
    "spaces": "   ",
    "huge": "x" * 100_000,
    "huge-multibyte": "é" * 50_000,
    "deep-arrays": "[" * DEEP + "]" * DEEP,
    "deep-objects": '{"a":' * 20_000 + "}" * 20_000,
    "deep-strings-only": '"' + "[" * DEEP + '"',
    "newline": "line one\nline two",
    "carriage-return": "value\rforged log line",
    "escape-sequence": "\x1b[31mred\x1b[0m",
    "delete": "a\x7fb",
    "tab": "a\tb",
    "rtl-override": "abc\u202edef",
    "zero-width": "a\u200bb",
    "non-utf8": b"\xff\xfe\xfa",
    "non-utf8-in-json": b'{"interservice-bus": {"mesh_address": "\xff", "mesh_port": 1}}',
    "true": "true",
    "negative": "-1",
    "zero": "0",
    "huge-number": "1" * 400,
    "float-overflow": "1e400",
    "nan": "nan",
    "infinity": "inf",
    "hex": "0x10",
    "fullwidth-digits": "１２",
    "underscored-number": "1_000",
    "json-null": "null",
    "json-array": "[]",
    "json-object": "{}",
    "json-string": '"quoted"',
    "json-invalid": "{not json",
    "json-nan": '{"retry_delay": NaN}',
    "url-with-password": f"amqp://operator:{SECRET}@rabbit.mesh:5672/",
    "schemeless-user-info": f"operator:{SECRET}@rabbit.mesh",
    "percent-encoded-user-info": f"operator%3A{SECRET}%40rabbit.mesh",
    "mesh-with-password": json.dumps(
        {"interservice-bus": {"mesh_address": f"operator:{SECRET}@rabbit", "mesh_port": 5672}}
    ),
    "mesh-key-with-password": json.dumps(
        {f"amqp://operator:{SECRET}@rabbit": {"mesh_address": "rabbit", "mesh_port": 5672}}
    ),
    "jinja": "{{ 7 * 7 }}{% raw %}",
    "shell": "$(touch /tmp/dkist-hostile-config); `id`",
    "path-traversal": "../../../../etc/passwd",
}


@dataclass(frozen=True)
class Outcome:
    kind: str  # refused | inert | misbehaved
    detail: str = ""


@contextlib.contextmanager
def one_variable(variable: str, value: str | bytes) -> Iterator[None]:
    """The process environment with only ``variable`` of the product's variables set."""
    saved = dict(os.environb)
    kept = clean_environment()
    try:
        for key in list(os.environ):
            if key not in kept:
                del os.environ[key]
        if isinstance(value, bytes):
            os.environb[variable.encode()] = value
        else:
            os.environ[variable] = value
        yield
    finally:
        os.environb.clear()
        os.environb.update(saved)


def _secret_may_show(variable: str, value: str | bytes) -> bool:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return variable not in ADDRESS_VARIABLES | {"ISB_PASSWORD"} and "://" not in text


def classify(variable: str, value: str | bytes) -> Outcome:
    """Read the configuration with ``variable`` set to ``value`` and say how it ended."""
    from dkist_processing_core.config import ConfigurationError
    from dkist_processing_core.config import DKISTProcessingCoreConfiguration
    from dkist_processing_core.isb import IsbTarget
    from dkist_processing_core.logging import configure_logging
    from dkist_processing_core.logging import reset_logging

    with one_variable(variable, value):
        try:
            configuration = DKISTProcessingCoreConfiguration()
        except ConfigurationError as error:
            message = str(error)
            if variable not in message:
                return Outcome("misbehaved", f"refused without naming it: {message[:200]}")
            if "\n" in message or "\r" in message or len(message) > 2000:
                return Outcome("misbehaved", f"message not one short line: {message[:200]!r}")
            if SECRET in message:
                return Outcome("misbehaved", "the refusal shows the secret")
            return Outcome("refused")
        except Exception as error:  # the point is to catch anything
            return Outcome("misbehaved", f"{type(error).__name__}: {str(error)[:200]}")
        try:
            dumped = configuration.masked_dump()
            lines = [
                f"{name.upper()}={item if isinstance(item, str) else json.dumps(item)}"
                for name, item in dumped.items()
            ]
            shown = "\n".join([*lines, json.dumps(dumped), repr(configuration)])
            shown.encode("utf-8")  # what `config` prints must be printable
            IsbTarget.from_configuration(configuration)
            _ = configuration.otlp_traces_endpoint, configuration.otlp_metrics_endpoint
            try:
                configure_logging(configuration.loguru_level)
            finally:
                reset_logging()
            if variable == "LOGURU_LEVEL":  # what `import loguru` does with the raw variable
                loguru_logger.level(os.environ[variable])
        except Exception as error:  # anything that reads the value
            return Outcome("misbehaved", f"accepted, then {type(error).__name__}: {error!s:.200}")
        if SECRET in shown and not _secret_may_show(variable, value):
            return Outcome("misbehaved", "accepted, and the secret is shown")
        return Outcome("inert")
