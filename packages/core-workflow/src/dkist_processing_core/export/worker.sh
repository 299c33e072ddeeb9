#!/usr/bin/env bash
# The script of every exported BashOperator: one task of a pipeline on an Airflow worker.
#
# Every value arrives as an environment variable and is only ever expanded in quotes:
# RECIPE_RUN_ID (rendered from dag_run.conf), DKIST_REQUIREMENT, DKIST_TASK_MODULE,
# DKIST_TASK_CLASS, DKIST_WORKFLOW_NAME, DKIST_WORKFLOW_VERSION, DKIST_PIP_TIMEOUT,
# DKIST_PIP_RETRIES, and DKIST_WORKER_PY: the text of worker_cache.py + worker_env.py, which the worker's python3
# runs to check the recipe run id and to make the task's venv (uv or pip, throw-away or from the
# cache in DKIST_VENV_CACHE_DIR). The DAG file embeds this file and that one byte for byte; Airflow
# renders both with Jinja, so neither may contain Jinja markers.
set -euo pipefail
worker_py="${DKIST_WORKER_PY:?the DAG file passes the helper program in DKIST_WORKER_PY}"
unset DKIST_WORKER_PY

# The recipe run id is checked (exit 2) before anything is printed, installed or run.
prepared="$(python3 -I -c "$worker_py" prepare)"
{ read -r RECIPE_RUN_ID; read -r hold_file || true; } <<<"$prepared"
export RECIPE_RUN_ID
scratch=""
# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
  if [[ -n "$scratch" ]]; then rm -rf -- "$scratch"; fi
  if [[ -n "$hold_file" ]]; then rm -f -- "$hold_file"; fi
}
trap cleanup EXIT

printf 'dkist-processing-core: task %s of workflow %s version %s, recipe run %s\n' "$DKIST_TASK_CLASS" "$DKIST_WORKFLOW_NAME" "$DKIST_WORKFLOW_VERSION" "$RECIPE_RUN_ID"
for name in NOMAD_ALLOC_ID NOMAD_ALLOC_NAME NOMAD_GROUP_NAME NOMAD_JOB_NAME NOMAD_DC; do
  printf '%s=%s\n' "$name" "${!name:-}"
done

# A cached venv stays in use while this file is open: the flock taken on it lasts as long as this
# script or the task holds the descriptor.
hold_fd=""
if [[ -n "$hold_file" ]]; then
  exec {hold_fd}<>"$hold_file"
fi
scratch="$(mktemp -d)"
environment="$(python3 -I -c "$worker_py" setup --scratch="$scratch" --hold-fd="$hold_fd")"
{
  read -r python_bin
  read -r runner
  read -r DKIST_ENV_SETUP_INSTALLER
  read -r DKIST_ENV_SETUP_CACHE
  read -r DKIST_ENV_SETUP_START_NS
  read -r DKIST_ENV_SETUP_END_NS
} <<<"$environment"
export DKIST_ENV_SETUP_INSTALLER DKIST_ENV_SETUP_CACHE DKIST_ENV_SETUP_START_NS DKIST_ENV_SETUP_END_NS
case "$DKIST_ENV_SETUP_CACHE" in
  hit | built | rebuilt) export PYTHONDONTWRITEBYTECODE=1 ;; # a cached venv is never written to
esac
cat /proc/self/limits

set +e
if [[ "$runner" == run_task ]]; then
  "$python_bin" -m dkist_processing_core.run_task --module="$DKIST_TASK_MODULE" --task="$DKIST_TASK_CLASS" --workflow-name="$DKIST_WORKFLOW_NAME" --workflow-version="$DKIST_WORKFLOW_VERSION"
else
  "$python_bin" -c "$worker_py" contract
fi
status=$?
set -e
printf 'dkist-processing-core: task %s exited with status %s\n' "$DKIST_TASK_CLASS" "$status"
exit "$status"
