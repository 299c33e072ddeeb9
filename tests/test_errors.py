"""One exception root: every error the product raises on purpose is a DKISTProcessingCoreError with its exit status."""

from __future__ import annotations

import importlib

import pytest
from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.errors import UsageError

# (module, class, built-in base kept for existing except-clauses, exit status)
ERRORS = [
    ("dkist_processing_core.config", "ConfigurationError", ValueError, 1),
    ("dkist_processing_core.isb_outbox", "OutboxError", OSError, 1),
    ("dkist_processing_core.isb_outbox", "InvalidMessageError", ValueError, 1),
    ("dkist_processing_core.naming", "NamingError", ValueError, 1),
    ("dkist_processing_core.run_task", "InvocationError", ValueError, 2),
    ("dkist_processing_core.recipe_run_id", "RecipeRunIdError", ValueError, 2),
    # its own `status` (the worker's exit status: 2, or the installer's) is set per instance
    ("dkist_processing_core.worker._protocol", "WorkerError", Exception, 1),
    ("dkist_processing_core.worker._cache", "CacheFullError", OSError, 1),
    ("dkist_processing_core.node", "WorkflowError", ValueError, 1),
    ("dkist_processing_core.node", "WorkflowCycleError", ValueError, 1),
    ("dkist_processing_core.build_utils", "ExportTargetError", ValueError, 1),
    ("dkist_processing_core.build_utils", "UnknownPackageError", LookupError, 2),
    ("dkist_processing_core.build_utils", "WorkflowNotFoundError", LookupError, 2),
    ("dkist_processing_core.build_utils", "WorkflowValidationError", Exception, 1),
    ("dkist_processing_core.runner", "RunError", RuntimeError, 1),
    ("dkist_processing_core._dagbag_loader", "LoaderError", RuntimeError, 1),
    ("dkist_processing_core._wheelhouse", "WheelhouseError", RuntimeError, 1),
    ("dkist_processing_core.cli", "UsageError", Exception, 2),
]


@pytest.mark.parametrize(
    ("module", "name", "builtin", "status"), ERRORS, ids=[e[1] for e in ERRORS]
)
def test_every_error_has_the_root_and_its_exit_status(module, name, builtin, status):
    error = getattr(importlib.import_module(module), name)
    assert issubclass(error, DKISTProcessingCoreError) and issubclass(error, builtin)
    assert error.exit_status == status
    assert issubclass(error, UsageError) == (status == 2)


def test_no_other_exception_class_in_the_product():
    import ast
    from pathlib import Path

    listed = {name for _, name, _, _ in ERRORS} | {
        "DKISTProcessingCoreError",
        "UsageError",
        "FatalBrokerError",
    }
    found = set()
    for path in (
        Path(__file__).resolve().parents[1].glob("packages/*/src/dkist_processing_core/**/*.py")
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (
                node.name.endswith("Error") or node.name.endswith("Exception")
            ):
                found.add(node.name)
    assert found <= listed, f"exception classes not under the root's test: {sorted(found - listed)}"
