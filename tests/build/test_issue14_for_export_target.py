"""Issue 14, for the lead's _export_target.py: tests that must not run against today's code.

Today ``export-dags PACKAGE /`` walks the whole file system (``rglob`` for foreign files) and
creates its staging folder at the root (``/.staging-...``); the same happens for a system folder
such as ``/usr``. Running that here would walk and write outside the test, so these tests are
skipped until the fix lands; remove the skip marker then. Wanted: a target that is a file-system
root (``os.path.ismount`` or its own parent) or a system folder (``/``, ``/bin``, ``/boot``,
``/dev``, ``/etc``, ``/lib*``, ``/proc``, ``/root``, ``/run``, ``/sbin``, ``/sys``, ``/usr``,
``/var``, and the user's home folder itself) is refused before anything is created, with exit
status 1 and a message naming the target; and the "holds files this export does not write" check
looks at the target's entries without walking below the first foreign one (``os.scandir``, stop
at the first).
"""

from __future__ import annotations

import os
import time

import pytest
from helpers.build_cli import EXAMPLE_PACKAGE

LEAD = pytest.mark.skip(
    reason="issue 14: today's code would walk / and stage a folder there; enable with the lead's "
    "fix in _export_target.py"
)


@LEAD
@pytest.mark.parametrize("target", ["/", "/usr", "/etc", "/proc", "//", "/usr/.."])
def test_exporting_into_a_root_or_system_folder_is_refused_before_anything_is_written(cli, target):
    started = time.monotonic()
    result = cli("export-dags", EXAMPLE_PACKAGE, target, "--no-validate", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr_lines) == 1 and "refus" in result.stderr
    assert time.monotonic() - started < 30  # nothing walked
    assert not [name for name in os.listdir("/") if ".staging-" in name]
