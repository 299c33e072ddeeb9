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
