"""A filesystem root or a system folder is refused as an export target before anything is written (issue 14).

Before the fix, ``export-dags PACKAGE /`` walked the whole file system looking for foreign files and
created its staging folder at the root (``/.staging-...``).
"""

from __future__ import annotations

import os
import time

import pytest
from helpers.build_cli import EXAMPLE_PACKAGE


@pytest.mark.parametrize("target", ["/", "/usr", "/etc", "/proc", "//", "/usr/.."])
def test_exporting_into_a_root_or_system_folder_is_refused_before_anything_is_written(cli, target):
    started = time.monotonic()
    result = cli("export-dags", EXAMPLE_PACKAGE, target, "--no-validate", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr_lines) == 1 and "refus" in result.stderr
    assert time.monotonic() - started < 30  # nothing walked
    assert not [name for name in os.listdir("/") if ".staging-" in name]
