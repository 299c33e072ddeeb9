"""configure_logging: loguru at LOGURU_LEVEL, stdlib logging routed into it, idempotent, no work at import."""

from __future__ import annotations

import logging

import pytest
from dkist_processing_core.logging import InterceptHandler
from dkist_processing_core.logging import configure_logging
from dkist_processing_core.logging import reset_logging
from helpers.task_modules import clean_environment
from helpers.task_modules import run_python
from helpers.task_modules import write_module
from loguru import logger


def test_importing_does_not_set_up_logging():
    result = run_python(
        """
        import logging, sys
        import dkist_processing_core.logging
        assert "loguru" not in sys.modules, "loguru imported at import time"
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        print("clean")
        """,
        clean_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_level_from_loguru_level_applies_to_loguru_and_stdlib():
    result = run_python(
        """
        import logging
        from loguru import logger
        from dkist_processing_core.logging import configure_logging
        configure_logging()
        logging.getLogger("client.library").info("stdlib-info-hidden")
        logging.getLogger("client.library").warning("stdlib-warning-shown")
        logger.info("loguru-info-hidden")
        logger.warning("loguru-warning-shown")
        """,
        clean_environment(LOGURU_LEVEL="WARNING"),
    )
    assert result.returncode == 0, result.stderr
    assert "hidden" not in result.stderr
    assert result.stderr.count("stdlib-warning-shown") == 1
    assert result.stderr.count("loguru-warning-shown") == 1


def test_repeated_calls_add_no_second_sink():
    result = run_python(
        """
        import logging
        from dkist_processing_core.logging import configure_logging
        for _ in range(3):
            configure_logging()
        logging.getLogger("x").warning("exactly-once")
        print(sum(type(h).__name__ == "InterceptHandler" for h in logging.getLogger().handlers))
        """,
        clean_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("exactly-once") == 1
    assert result.stdout.strip() == "1"


def test_configure_after_reset_writes_each_line_once():
    result = run_python(
        """
        from dkist_processing_core.logging import configure_logging, reset_logging
        from loguru import logger
        configure_logging("INFO")
        reset_logging()  # puts loguru's default sink back, under a new id
        configure_logging("INFO")
        logger.info("exactly-once")
        reset_logging()
        configure_logging("INFO")
        logger.info("still-once")
        """,
        clean_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("exactly-once") == 1
    assert result.stderr.count("still-once") == 1


def test_a_new_level_replaces_the_sink():
    result = run_python(
        """
        from loguru import logger
        from dkist_processing_core.logging import configure_logging
        configure_logging("INFO")
        logger.debug("debug-before")
        configure_logging("debug")
        logger.debug("debug-after")
        logger.info("info-once")
        """,
        clean_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert "debug-before" not in result.stderr
    assert result.stderr.count("debug-after") == 1
    assert result.stderr.count("info-once") == 1


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("loud")


def _emit_through_stdlib() -> None:
    logging.getLogger("some.client").warning("routed %s", "message")


def test_stdlib_records_reach_loguru_with_their_caller(core_env):
    messages: list[str] = []
    configure_logging("INFO")
    sink = logger.add(messages.append, format="{level}|{function}|{message}", level="INFO")
    try:
        _emit_through_stdlib()
    finally:
        logger.remove(sink)
    assert messages == ["WARNING|_emit_through_stdlib|routed message\n"]


def test_tracebacks_do_not_show_local_values(tmp_path):
    # loguru's "diagnose" would print the value of every variable in the traceback (secrets too).
    # The code must be in a file: loguru annotates only lines whose source it can read.
    write_module(
        tmp_path,
        "leaky",
        """
        import logging
        from dkist_processing_core.logging import configure_logging
        configure_logging()

        def connect(token):
            return 1 / (len(token) - len(token))

        try:
            connect("hunter2-" + "local")
        except ZeroDivisionError:
            logging.getLogger("client").exception("it failed")
        """,
    )
    result = run_python("import leaky", clean_environment(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "it failed" in result.stderr and "ZeroDivisionError" in result.stderr
    assert "hunter2-local" not in result.stderr


def test_reset_logging_restores_the_root_logger(core_env):
    root = logging.getLogger()
    level_before, handlers_before = root.level, list(root.handlers)
    configure_logging("ERROR")
    assert any(isinstance(handler, InterceptHandler) for handler in root.handlers)
    assert root.level == logging.ERROR
    reset_logging()
    assert root.level == level_before
    assert root.handlers == handlers_before


# dkist_service_configuration.logging (the previous product's logging, imported by 28 modules of the
# client pipelines) does exactly this at import. The real module is exercised in tests/clients; here
# a copy of its two statements shows the rule without its 48 dependencies.
PREVIOUS_LOGGING = """
import inspect, logging
from sys import stderr
from loguru import logger

logger.remove()
logger.add(stderr, level="INFO")


class InterceptHandler(logging.Handler):
    def emit(self, record):
        logger.opt(depth=6, exception=record.exc_info).log(record.levelname, record.getMessage())


logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
"""

LOG_BOTH_WAYS = """
import logging
from loguru import logger
from dkist_processing_core import TaskBase

class Noop(TaskBase):
    def run(self):
        logger.info("loguru-line")
        logging.getLogger("client.module").info("stdlib-line")

FIRST
with Noop(recipe_run_id=1, workflow_name="W", workflow_version="1") as task:
    task()
SECOND
"""


@pytest.mark.parametrize(
    "order",
    ["previous-logging-first", "previous-logging-after-the-task-starts"],
)
def test_no_duplicate_lines_next_to_the_previous_products_logging(tmp_path, order):
    (tmp_path / "dkist_service_configuration").mkdir()
    (tmp_path / "dkist_service_configuration" / "__init__.py").write_text("")
    write_module(tmp_path / "dkist_service_configuration", "logging", PREVIOUS_LOGGING)
    importing = "import dkist_service_configuration.logging"
    first, second = (importing, "") if order == "previous-logging-first" else ("", "")
    code = LOG_BOTH_WAYS.replace("FIRST", first).replace("SECOND", second)
    if order != "previous-logging-first":
        # imported while the task is being set up (what TaskBase subclasses of the clients do)
        code = code.replace("    def run(self):\n", f"    def run(self):\n        {importing}\n")
    result = run_python(code, clean_environment(tmp_path))
    assert result.returncode == 0, result.stderr
    for line in ("loguru-line", "stdlib-line", "W.Noop complete"):
        assert result.stderr.count(line) == 1, result.stderr
