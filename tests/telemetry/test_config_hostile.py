"""Hostile values in every variable of the settings class (issue 22): refused or inert, never worse.

``helpers.hostile_config`` holds the table (huge, deeply nested, control characters, bytes that are
not UTF-8, wrong types, secrets in odd places) and the classifier; each pair must end ``refused``
(one line naming the variable, no secret) or ``inert`` (accepted, and everything that reads the
value works, no secret shown). A hypothesis test adds random text per variable.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from dkist_processing_core.config import ConfigurationError
from dkist_processing_core.config import DKISTProcessingCoreConfiguration
from helpers.hostile_config import HOSTILE_VALUES
from helpers.hostile_config import VARIABLES
from helpers.hostile_config import classify
from helpers.task_modules import clean_environment
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st


@pytest.mark.parametrize("variable", VARIABLES)
def test_every_hostile_value_is_refused_or_inert(variable):
    outcomes = {name: classify(variable, value) for name, value in HOSTILE_VALUES.items()}

    misbehaved = {name: o.detail for name, o in outcomes.items() if o.kind == "misbehaved"}
    assert misbehaved == {}


# Text an environment variable can hold: no NUL, no lone surrogates (os.environ refuses both).
ENV_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variable=st.sampled_from(VARIABLES), value=ENV_TEXT | st.binary(max_size=100))
def test_random_values_are_refused_or_inert(variable, value):
    if isinstance(value, bytes) and b"\x00" in value:
        value = value.replace(b"\x00", b"")
    outcome = classify(variable, value)

    assert outcome.kind != "misbehaved", outcome.detail


@pytest.mark.parametrize("value", ["debug", "Info", "10", " INFO", "INFO "])
def test_loguru_level_is_refused_where_loguru_itself_would_fail_at_import(monkeypatch, value):
    # The reason: loguru reads LOGURU_LEVEL when it is imported and knows only the names as
    # written, so every process that imports it (a task, the failure callback) would fail.
    imported = subprocess.run(
        [sys.executable, "-c", "import loguru"],
        env=clean_environment(LOGURU_LEVEL=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 1 and "does not exist" in imported.stderr
    monkeypatch.setenv("LOGURU_LEVEL", value)

    with pytest.raises(ConfigurationError, match="LOGURU_LEVEL.*in capitals"):
        DKISTProcessingCoreConfiguration()
