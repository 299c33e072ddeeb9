#!/usr/bin/env bash
# Import-layer gate for .ci/run: telemetry <- task <- workflow <- build, and the task runtime never
# imports airflow or the notebook stack. See scripts/lint_imports.py for why it is not plain lint-imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON=python; elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/lint_imports.py "$@"
