"""The worker program: one task of a pipeline on an Airflow worker, and the worker's venv cache.

Every task of an exported DAG runs the same short command, :data:`WORKER_COMMAND`: the
interpreter that runs Airflow (the DAG file puts its ``sys.executable`` into
``DKIST_WORKER_PYTHON``) runs ``python -m dkist_processing_core.worker run``. The program is part
of core-task, which the Airflow side installs for it (it also brings core-telemetry, whose failure
callback the DAG file imports), and imports nothing beyond the standard library, core-task's
own small modules and ``packaging.version`` (core-task's dependency, Airflow's too) to read the
requirement's PEP 440 version once the recipe run id is checked.

Steps (:mod:`._steps`): **prepare** (the recipe run id is checked first: exit 2 before anything is
printed, installed or run), **set up** (the task's venv from ``python3`` on PATH, uv or pip,
throw-away or from the per-version cache of :mod:`._cache`), **run** (the task in that venv, its
exit status is the worker's); and, from cron, **gc** (:mod:`._gc`:
``python -m dkist_processing_core.worker gc --max-size 20G --max-age 7d``).

Inputs are environment variables only, never text spliced into a command:

- from the DAG file: ``RECIPE_RUN_ID`` (rendered from ``dag_run.conf``), ``DKIST_TASK`` (the
  task class's dotted path), ``DKIST_REQUIREMENT`` (``dist[frozen,...]==version``: what to
  install; the version is the workflow's), ``DKIST_WORKER_PYTHON``, and ``DKIST_PIP_TIMEOUT`` /
  ``DKIST_PIP_RETRIES`` where the build machine's differ from the defaults;
- from Airflow (every BashOperator gets them): ``AIRFLOW_CTX_DAG_ID``, which is
  ``{workflow name}_{version}``, so the workflow's name is not repeated in every task, and
  ``AIRFLOW_CTX_DAG_RUN_ID`` / ``AIRFLOW_CTX_TRY_NUMBER`` for the log;
- worker settings: ``DKIST_INSTALLER`` (auto, uv, pip), ``DKIST_VENV_CACHE_DIR`` (the cache; off
  when unset), pip's and uv's own variables (index, find-links, certificates).

Outputs: one line per event on standard output (:mod:`._protocol`,
``dkist-processing-core worker: <event> <JSON>``; :func:`read_events` parses a log): ``start``,
``nomad``, ``note``, ``packages``, ``setup``, ``exit``, ``error`` and, for gc, ``gc`` and
``gc-summary``. The task process gets the checked ``RECIPE_RUN_ID`` and the ``DKIST_ENV_SETUP_*``
variables that :mod:`dkist_processing_core.environment_setup` records in its trace. Exit status:
the task's; 2 for a bad invocation; the installer's when the setup failed; 128 + N when signal N
stopped the worker before the task started.
"""

from __future__ import annotations

from dkist_processing_core.worker._protocol import EVENT_PREFIX
from dkist_processing_core.worker._protocol import read_events

__all__ = [
    "DEFAULT_PIP_RETRIES",
    "DEFAULT_PIP_TIMEOUT",
    "EVENT_PREFIX",
    "WORKER_COMMAND",
    "read_events",
]

#: The ``bash_command`` of every exported task: constant, short (it is stored and shown for every
#: task instance), values arrive as environment variables beside it.
WORKER_COMMAND = 'exec "${DKIST_WORKER_PYTHON:?}" -P -m dkist_processing_core.worker run'
#: What the worker uses when the DAG file does not set DKIST_PIP_TIMEOUT / DKIST_PIP_RETRIES (it
#: sets them only when the build machine's PIP_TIMEOUT / PIP_RETRIES differ).
DEFAULT_PIP_TIMEOUT = 15
DEFAULT_PIP_RETRIES = 5
