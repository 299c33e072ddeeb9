"""``worker gc``: evict entries of a worker's venv cache (``python -m dkist_processing_core.worker gc``).

The layout and the locking protocol are :mod:`._cache`'s. Per key folder, under its lock taken exclusively
and without waiting (a folder whose lock is busy, because a task is building or starting from it,
is left for the next run):

1. leftovers are removed at once: entries set aside as broken (``aside-*``), half-built or superseded
   entries (``env-*`` that ``current`` does not name) and stale symlink temporaries;
2. then published entries last used longer ago than ``max_age``;
3. then, least recently used first, published entries until the cache is at most ``max_size``.

An entry named in the hold file of a running task is never removed; neither is anything while a
task holds the key's lock. A removed entry is unpublished and renamed to ``trash-*`` under the lock
before it is deleted, so a deletion cut short leaves nothing that looks usable.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Protocol

from dkist_processing_core.worker import _cache as worker_cache
from dkist_processing_core.worker._protocol import WorkerError
from dkist_processing_core.worker._protocol import emit

__all__ = [
    "GcReport",
    "Say",
    "collect_garbage",
    "gc_command",
    "human_size",
    "parse_age",
    "parse_size",
]

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_AGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``20G``, ``500M``, ``1.5T``, ``1024`` (bytes; K/M/G/T are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"size must be a number with an optional unit K, M, G or T (e.g. 20G), got {text!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_age(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` (seconds without a unit)."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"age must be a number with an optional unit s, m, h, d or w (e.g. 7d), got {text!r}"
        )
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{value:.1f} TiB"


def _human_age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass
class _Entry:
    folder: Path
    path: Path
    size: int
    last_used: float


@dataclass
class GcReport:
    """What a collection found and did."""

    entries: int = 0
    size_before: int = 0
    removed: int = 0
    removed_size: int = 0
    in_use: int = 0
    busy: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def size_after(self) -> int:
        return self.size_before - self.removed_size


def _size(path: Path, seen: set[tuple[int, int]]) -> int:
    """Disk blocks of the files under ``path``, each inode once (uv hard-links from its own cache)."""
    total = 0
    for folder, folders, files in os.walk(path):
        for name in folders + files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


class Say(Protocol):
    """Where gc reports what it does with an entry (by default a ``gc`` event of the protocol)."""

    def __call__(self, action: str, entry: str, reason: str, size: int | None = None) -> None: ...


def _emit_gc(action: str, entry: str, reason: str, size: int | None = None) -> None:
    emit("gc", action=action, entry=entry, reason=reason, size=size)


class _Collector:
    def __init__(self, root: Path, dry_run: bool, say: Say) -> None:
        self.root, self.dry_run, self.say = root, dry_run, say
        self.report = GcReport()
        self.seen: set[tuple[int, int]] = set()
        self.verb = "would remove" if dry_run else "removed"

    def _remove(
        self, folder: Path, path: Path, label: str, why: str, size: int, *, unpublish: bool
    ) -> bool:
        """Under the key's lock: unpublish, rename to a trash name, delete; count and say it."""
        if not self.dry_run:
            try:
                if unpublish:
                    (folder / "current").unlink(missing_ok=True)
                trash = folder / f"trash-{path.name}"
                path.rename(trash)
                shutil.rmtree(trash)
            except OSError as error:
                self.report.errors.append(f"{path}: {error}")
                self.say("error", str(path), f"could not remove it: {error}")
                return False
        self.report.removed += 1
        self.report.removed_size += size
        self.say(self.verb, label, why, size)
        return True

    def scan(self) -> list[_Entry]:
        """Remove leftovers; return the published entries with their size and last use."""
        published = []
        held = worker_cache.held_envs(self.root, remove_stale=not self.dry_run)
        for folder in worker_cache.key_folders(self.root):
            with worker_cache.key_lock(folder) as fd:
                if not worker_cache.lock(fd, fcntl.LOCK_EX, None):
                    self.report.busy += 1
                    self.say("skipped", folder.name, "a task is building or starting from it")
                    continue
                current = worker_cache.published(folder)
                last_used = os.fstat(fd).st_mtime
                for child in sorted(folder.iterdir()):
                    name = child.name
                    if name in (current, "lock", "current"):
                        continue
                    if name.startswith(("current.tmp-", "trash-")):
                        if not self.dry_run:
                            shutil.rmtree(
                                child
                            ) if child.is_dir() and not child.is_symlink() else child.unlink()
                        continue
                    users = held.get(os.path.realpath(child))
                    if users:
                        self.say(
                            "kept", f"{folder.name}/{name}", f"in use by {users} running task(s)"
                        )
                        continue
                    size = _size(child, self.seen)
                    why = (
                        "set aside as broken"
                        if name.startswith("aside-")
                        else "not published (half-built or superseded)"
                    )
                    if self._remove(
                        folder, child, f"{folder.name}/{name}", why, size, unpublish=False
                    ):
                        self.report.size_before += size
                        self.report.entries += 1
                if current is not None and (folder / current).is_dir():
                    size = _size(folder / current, self.seen)
                    published.append(_Entry(folder, folder / current, size, last_used))
                    self.report.entries += 1
                    self.report.size_before += size
        return published

    def evict(self, entry: _Entry, why: str, now: float) -> bool:
        with worker_cache.key_lock(entry.folder) as fd:
            if not worker_cache.lock(fd, fcntl.LOCK_EX, None):
                self.say("kept", entry.folder.name, "a task is starting from it")
                return False
            age = _human_age(now - entry.last_used)
            users = worker_cache.held_envs(self.root).get(os.path.realpath(entry.path))
            if users:
                reason = f"in use by {users} running task(s) (last used {age} ago)"
                self.say("kept", entry.folder.name, reason, entry.size)
                return False
            reason = f"{why} (last used {age} ago)"
            return self._remove(
                entry.folder, entry.path, entry.folder.name, reason, entry.size, unpublish=True
            )


def collect_garbage(
    cache_dir: Path,
    *,
    max_size: int | None = None,
    max_age: float | None = None,
    dry_run: bool = False,
    say: Say = _emit_gc,
    now: float | None = None,
) -> GcReport:
    """Evict from the venv cache under ``cache_dir`` (the value of ``DKIST_VENV_CACHE_DIR``)."""
    root = cache_dir / worker_cache.LAYOUT
    if not root.is_dir():
        say("nothing", str(cache_dir), f"no venv cache ({worker_cache.LAYOUT}) yet")
        return GcReport()
    now = time.time() if now is None else now
    collector = _Collector(root, dry_run, say)
    entries = collector.scan()
    remaining = []
    for entry in sorted(entries, key=lambda item: item.last_used):
        too_old = max_age is not None and now - entry.last_used > max_age
        if not (
            too_old
            and collector.evict(entry, f"not used for longer than {_human_age(max_age or 0)}", now)
        ):
            remaining.append(entry)
    if max_size is not None:
        total = sum(entry.size for entry in remaining)
        for entry in list(remaining):  # least recently used first
            if total <= max_size:
                break
            if collector.evict(entry, f"the cache is over {human_size(max_size)}", now):
                total -= entry.size
                remaining.remove(entry)
        if total > max_size:
            reason = f"still {human_size(total)}, over {human_size(max_size)}: the rest is in use"
            say("over", str(cache_dir), reason, total)
    report = collector.report
    report.in_use = len([path for path in worker_cache.held_envs(root) if path])
    return report


def cache_folder(given: str | None) -> Path:
    """The cache folder of ``--cache-dir``, else ``DKIST_VENV_CACHE_DIR``; WorkerError status 2."""
    folder = given or os.environ.get("DKIST_VENV_CACHE_DIR")
    if not folder:
        raise WorkerError("no cache folder: pass --cache-dir DIR or set DKIST_VENV_CACHE_DIR", 2)
    if not os.path.isabs(folder):
        raise WorkerError(f"the cache folder must be an absolute path, got {folder!r}", 2)
    return Path(folder)


def gc_command(
    cache_dir: str | None, max_size: str | None, max_age: str | None, dry_run: bool
) -> int:
    """``worker gc`` with its options as given; prints ``gc`` events and one ``gc-summary``.

    Exit status 0, or 1 when an entry could not be removed; a bad option is WorkerError status 2.
    """
    folder = cache_folder(cache_dir)
    try:
        size = parse_size(max_size) if max_size is not None else None
        age = parse_age(max_age) if max_age is not None else None
    except ValueError as error:
        raise WorkerError(str(error), 2) from None
    report = collect_garbage(folder, max_size=size, max_age=age, dry_run=dry_run)
    summary = asdict(report) | {"errors": len(report.errors), "size_after": report.size_after}
    emit("gc-summary", **summary, dry_run=dry_run)
    return 1 if report.errors else 0
