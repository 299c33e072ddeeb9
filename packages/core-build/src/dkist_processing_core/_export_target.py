"""Write a set of files into a target folder all at once, or not at all.

The files are first written into a staging folder next to the target (same parent, hence the same
file system), checked there, and only then moved in with ``os.rename``/``os.replace``. A failure
before the move leaves the target as it was; the staging folder and any parent folders created
for the target are removed again. Files in the target that the export does not write are never
touched and never in the way: the export writes beside them, as the previous product did (a file
of the same name is replaced). A filesystem root or a system folder is refused as a target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from dkist_processing_core.errors import DKISTProcessingCoreError

__all__ = ["ExportTargetError", "staged_export"]

# Folders an export must never write into (nor stage a folder next to): system locations.
_SYSTEM_FOLDERS = frozenset(
    Path(f"/{name}")
    for name in "bin boot dev etc lib lib32 lib64 proc root run sbin sys usr var home tmp opt srv "
    "mnt media".split()
)


class ExportTargetError(DKISTProcessingCoreError, ValueError):
    """The export target cannot be used (not a folder, a filesystem root or a system folder)."""


def _commit(staging: Path, target: Path) -> None:
    """Move the files of ``staging`` into ``target``."""
    if not target.exists():
        os.rename(staging, target)
        return
    for relative in sorted(
        path.relative_to(staging) for path in staging.rglob("*") if not path.is_dir()
    ):
        destination = target / relative
        if destination.is_dir():
            raise ExportTargetError(
                f"{destination} is a folder; the export would write a file there"
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, destination)


def _check_target(target: Path) -> None:
    resolved = target.resolve()
    if (
        resolved.parent == resolved
        or resolved in _SYSTEM_FOLDERS
        or resolved == Path.home().resolve()
    ):
        raise ExportTargetError(
            f"refusing to export into {target}: it is a filesystem root, a system folder or the "
            "home folder; export into a folder of its own (e.g. ./dags)"
        )
    if target.exists() and not target.is_dir():
        raise ExportTargetError(
            f"{target} exists and is not a folder; choose a folder to export into"
        )
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise ExportTargetError(f"{parent} is not a folder, so {target} cannot be created")


def _create_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, outermost first."""
    missing = [path for path in [*reversed(folder.parents), folder] if not path.exists()]
    for parent in missing:
        parent.mkdir(exist_ok=True)
    return missing


@contextlib.contextmanager
def staged_export(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the staging folder for the caller to fill.

    On a normal exit of the ``with`` block the staged files are moved into ``target``; on an
    exception nothing reaches the target and everything created along the way is removed.
    """
    target_path = Path(target).absolute()
    _check_target(target_path)
    created_parents = _create_folder(target_path.parent)
    staging = target_path.parent / f".{target_path.name}.staging-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0o700
        yield staging
        _commit(staging, target_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created_parents):  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
