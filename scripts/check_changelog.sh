#!/usr/bin/env bash
# Changelog gate for .ci/run: every fragment in changelog/ is named <PR>.<type>[.<counter>].rst
# (towncrier silently skips other names) and `towncrier build --draft` renders them.
# Pass --compare-with main on a branch to also require a new fragment (`towncrier check`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON=python; elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/changelog.py check "$@"
