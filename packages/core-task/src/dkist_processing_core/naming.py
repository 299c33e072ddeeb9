"""Names of workflows and of the Airflow DAGs exported from them.

A workflow name and a DAG id end up in file names, Airflow ids, bash scripts and Python source,
so they are restricted to ``[A-Za-z0-9._-]``. Errors say which character is wrong and where.
"""

from __future__ import annotations

import re

from dkist_processing_core.errors import DKISTProcessingCoreError

__all__ = [
    "MAX_VERSION_LENGTH",
    "MAX_WORKFLOW_NAME_LENGTH",
    "NamingError",
    "dag_name",
    "validate_name_part",
    "workflow_name",
    "workflow_name_from_details",
]

MAX_WORKFLOW_NAME_LENGTH = 100
MAX_VERSION_LENGTH = 64
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]")
_ALLOWED_TEXT = "letters, digits, '.', '_' and '-'"


class NamingError(DKISTProcessingCoreError, ValueError):
    """A workflow name, version or DAG id is not allowed."""


def validate_name_part(value: object, what: str, max_length: int | None = None) -> str:
    """Return ``value`` if it is a non-empty string of allowed characters, else raise NamingError."""
    if not isinstance(value, str):
        raise NamingError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if not value:
        raise NamingError(f"{what} must not be empty")
    if bad := _NOT_ALLOWED.search(value):
        raise NamingError(
            f"{what} {value!r} has the character {bad[0]!r} at position {bad.start()}; "
            f"only {_ALLOWED_TEXT} are allowed"
        )
    if max_length is not None and len(value) > max_length:
        raise NamingError(
            f"{what} {value!r} is {len(value)} characters long; the limit is {max_length}"
        )
    return value


def workflow_name(
    input_data: str | None = None,
    output_data: str | None = None,
    category: str | None = None,
    detail: str | None = None,
    *,
    process_category: str | None = None,
    process_name: str | None = None,
) -> str:
    """Build a workflow name.

    Data form: ``{input_data}_to_{output_data}_{category}[_{detail}]``.
    Seed form (``process_category``/``process_name``): ``{process_category}_{process_name}``.
    """
    if process_category is not None or process_name is not None:
        if any(part is not None for part in (input_data, output_data, category, detail)):
            raise NamingError(
                "give either process_category/process_name or input_data/output_data/category, not both"
            )
        parts = [
            validate_name_part(process_category, "process_category"),
            validate_name_part(process_name, "process_name"),
        ]
    else:
        parts = [
            validate_name_part(input_data, "input_data"),
            "to",
            validate_name_part(output_data, "output_data"),
            validate_name_part(category, "category"),
        ]
        if detail:
            parts.append(validate_name_part(detail, "detail"))
    name = "_".join(parts)
    return validate_name_part(name, "workflow name", MAX_WORKFLOW_NAME_LENGTH)


def workflow_name_from_details(
    input_data: str, output_data: str, category: str, detail: str | None = None
) -> str:
    """``{input_data}_to_{output_data}_{category}[_{detail}]``: the previous product's name for the data form."""
    return workflow_name(input_data, output_data, category, detail)


def dag_name(workflow_name: str, workflow_version: str) -> str:
    """Airflow DAG id of a workflow at a version: ``{workflow_name}_{workflow_version}``."""
    validate_name_part(workflow_name, "workflow name", MAX_WORKFLOW_NAME_LENGTH)
    validate_name_part(workflow_version, "workflow version", MAX_VERSION_LENGTH)
    return f"{workflow_name}_{workflow_version}"
