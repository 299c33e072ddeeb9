"""``worker verify``: check every cached venv byte for byte; a damaged one is never served again.

Every task start checks an entry's marker and its stat digest (:mod:`._digest`), which cannot see a
change that keeps a file's size and modification time: a damaged disk block, or a deliberate edit.
``verify`` (from cron, e.g. daily) reads every byte: per key folder, under the key's lock taken
shared (tasks keep starting from it meanwhile), the published entry's marker and stat digest, its
content digest against the one recorded at build time, and the installers' RECORD hashes (which
name the damaged files). A damaged entry is then unpublished under the exclusive lock and set aside
(``aside-*``; left in place while a running task holds it), so the next task rebuilds it.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

from dkist_processing_core.worker._cache import LAYOUT
from dkist_processing_core.worker._cache import MARKER
from dkist_processing_core.worker._cache import held_envs
from dkist_processing_core.worker._cache import key_folders
from dkist_processing_core.worker._cache import key_lock
from dkist_processing_core.worker._cache import published
from dkist_processing_core.worker._cache import read_entry
from dkist_processing_core.worker._cache import unpublish
from dkist_processing_core.worker._digest import content_digest
from dkist_processing_core.worker._digest import record_mismatches
from dkist_processing_core.worker._protocol import emit

__all__ = ["verify_cache"]

_SHOWN = 20  # damaged files named per entry


def _check(folder: Path) -> tuple[str, list[str]]:
    """``(why the published entry is damaged, or "", damaged files)``."""
    found = read_entry(folder, None)
    if isinstance(found, str):
        return found, []
    entry, marker = found
    try:
        bad_files = record_mismatches(entry)
        digest = content_digest(entry, MARKER)
    except OSError as error:
        return f"its files cannot be read ({error})", []
    if digest != marker.get("content"):
        return (
            "the content of its files changed since it was built (damaged or tampered with)",
            bad_files,
        )
    if bad_files:
        return "files differ from their installer's RECORD", bad_files
    return "", []


def verify_cache(cache_dir: Path) -> int:
    """Check every published entry under ``cache_dir``; the number of damaged entries found."""
    root = cache_dir / LAYOUT
    started = time.monotonic()
    checked = damaged = 0
    for folder in key_folders(root):
        with key_lock(folder) as fd:
            fcntl.flock(fd, fcntl.LOCK_SH)
            entry = published(folder)
            if entry is None:
                continue
            checked += 1
            why, bad_files = _check(folder)
            if not why:
                emit("verify", entry=f"{folder.name}/{entry}", outcome="ok")
                continue
            damaged += 1
            fcntl.flock(fd, fcntl.LOCK_EX)  # no task starts from it while it is unpublished
            if published(folder) == entry:  # not rebuilt meanwhile
                unpublish(folder, held_envs(root))
            emit(
                "verify",
                entry=f"{folder.name}/{entry}",
                outcome="damaged",
                reason=why,
                damaged_files=bad_files[:_SHOWN],
                more_damaged_files=max(0, len(bad_files) - _SHOWN),
            )
    seconds = round(time.monotonic() - started, 3)
    emit("verify-summary", checked=checked, damaged=damaged, seconds=seconds)
    return damaged
