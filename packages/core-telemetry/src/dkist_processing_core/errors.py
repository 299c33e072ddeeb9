"""The root of every error dkist-processing-core raises on purpose.

Each distribution defines its errors where they arise (``ConfigurationError`` in ``config``,
``WorkflowError`` in ``node``, ...), all subclasses of :class:`DKISTProcessingCoreError`, most also
of the built-in exception they always were (``ValueError``, ``LookupError``, ``OSError``), so
existing ``except ValueError`` clauses keep working. Callers that want "anything the product
refuses" catch the root. ``exit_status`` is what the command line exits with for that error: 1
for a failure, 2 for a wrong invocation (:class:`UsageError`).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "DKISTProcessingCoreError", "UsageError"]

EXIT_FAILURE = 1
EXIT_USAGE = 2


class DKISTProcessingCoreError(Exception):
    """Something dkist-processing-core refuses or cannot do; the message says what to change."""

    exit_status: ClassVar[int] = EXIT_FAILURE


class UsageError(DKISTProcessingCoreError):
    """The command, its arguments or the names it was given are wrong (exit status 2)."""

    exit_status: ClassVar[int] = EXIT_USAGE
