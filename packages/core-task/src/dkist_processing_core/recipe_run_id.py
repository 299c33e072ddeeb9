"""The recipe run id: one rule and one parser for every place that takes one.

A recipe run id is a row id of the DKIST database (PostgreSQL ``bigint``) and a 64-bit
OpenTelemetry attribute, so it is an integer from 0 to 2**63 - 1. Accepted forms:

- an integer (``int`` or any ``numbers.Integral``, never a ``bool``);
- a ``float`` that is a whole number (``42.0``; the previous product did ``int(value)``);
- text of ASCII digits only (``"42"``, ``"007"``): what the command line, the runner and the
  worker's ``RECIPE_RUN_ID`` carry. No sign, no spaces, no decimal point or exponent and no other
  script's digits: ``int()`` reads ``" 42"``, ``"+42"`` and ``"٤٢"``, a shell or a database
  reader may not, so text that is not plainly an id is refused everywhere alike.

The CLI, the runner, the worker program and ``TaskBase`` all call :func:`parse_recipe_run_id`.
Standard library only: the worker program imports it with the interpreter that runs Airflow.
"""

from __future__ import annotations

import numbers
import re

from dkist_processing_core.errors import UsageError

__all__ = ["MAX_RECIPE_RUN_ID", "RECIPE_RUN_ID_VARIABLE", "RecipeRunIdError", "parse_recipe_run_id"]

#: Largest id: a signed 64-bit integer (PostgreSQL bigint, OpenTelemetry int attributes).
MAX_RECIPE_RUN_ID = 2**63 - 1
#: The environment variable that carries the id to a task (rendered there from ``dag_run.conf``).
RECIPE_RUN_ID_VARIABLE = "RECIPE_RUN_ID"
_DIGITS = re.compile(r"[0-9]{1,19}")  # [0-9] is ASCII only; 19 digits hold MAX_RECIPE_RUN_ID


class RecipeRunIdError(UsageError, ValueError):
    """A recipe run id the rule refuses; the message names the value."""


def parse_recipe_run_id(value: object) -> int:
    """The id ``value`` stands for, or :class:`RecipeRunIdError` (see the module docstring)."""
    number: int | None = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, float):
        number = int(value) if value.is_integer() else None
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    if number is None or not 0 <= number <= MAX_RECIPE_RUN_ID:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise RecipeRunIdError(
            f"recipe run id must be a non-negative integer below 2**63 (as text: ASCII digits "
            f"only), got {shown}"
        )
    return number
