"""Task runtime defects of issue 14: the task error in the one-line message, int64 ids, the file limit.

- A subclass ``__exit__`` that raises after the task failed replaced the task's own error in the
  one-line message (``task X failed: ...``); the line must name the task's error (the ``__exit__``
  error may follow, e.g. "; then __exit__ raised ValueError: ...").
- A recipe run id >= 2**63 is accepted and then breaks the OpenTelemetry attribute (int64); refuse
  it where it enters (``recipe_run_id.parse_recipe_run_id``, tested in test_recipe_run_id.py).
- SPEC section 3: the soft RLIMIT_NOFILE is raised to MAX_FILE_DESCRIPTORS when it is lower and
  **never lowered**; ``apply_file_descriptor_limit`` sets it to the value whatever it was (the task
  log says "soft limit of open files set to 1024 (was 20000 ...)").
"""

from __future__ import annotations

from helpers.task_modules import clean_environment
from helpers.task_modules import run_python
from helpers.task_modules import run_task_process
from helpers.task_modules import unique_module_name
from helpers.task_modules import write_module

TASKS = """
from dkist_processing_core import TaskBase


class ExitBreaks(TaskBase):
    def run(self):
        raise RuntimeError("calibration diverged")

    def __exit__(self, *exc_info):
        super().__exit__(*exc_info)
        raise ValueError("cleanup broke too")
"""


def test_an_exit_that_raises_after_a_failure_does_not_hide_the_task_error(tmp_path):
    module = unique_module_name("exit_tasks")
    write_module(tmp_path, module, TASKS)
    result = run_task_process(module, "ExitBreaks", clean_environment(tmp_path, RECIPE_RUN_ID="3"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    (line,) = [text for text in lines if text.startswith("dkist-processing-core: task")]
    assert "RuntimeError: calibration diverged" in line


def test_the_soft_file_descriptor_limit_is_never_lowered(tmp_path):
    code = """
        import resource
        from dkist_processing_core.task import apply_file_descriptor_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 256
        assert soft > wanted, (soft, hard)
        apply_file_descriptor_limit(wanted)
        print(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    """
    result = run_python(code, clean_environment())
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split()
    assert after == before
