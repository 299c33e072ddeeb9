"""The worker's per-version venv cache: layout, key, content check, locking, building.

Cache (``DKIST_VENV_CACHE_DIR``, off when unset): ``<dir>/venvs-v1/<key>/`` per requirement, Python
and platform, public release versions only. A venv is not relocatable, so it is built where it will
stay (``env-<random>/``), byte-compiled, digested (:mod:`._digest`: the quick stat digest every
start checks, the content digest ``verify`` checks) into the completion marker, and published by
renaming the symlink ``current`` over the old one. Readers take the key's ``lock`` shared, builders,
``gc`` and ``verify`` exclusive; a task records the entry it uses in its hold file (``holds/``)
while holding an exclusive flock on it, which the task process keeps for its lifetime. An entry
whose marker or digest does not match is never used: it is unpublished, set aside (``aside-*``,
unless a running task still holds it) and rebuilt. A build that fails is removed at once; when it
failed because the cache's disk is full, :class:`CacheFullError` tells the caller to fall back to a
throw-away venv.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dkist_processing_core._atomic import fsync_folder
from dkist_processing_core._atomic import write_atomically
from dkist_processing_core._pinned import canonical_name
from dkist_processing_core._pinned import is_public_release
from dkist_processing_core._pinned import parse_pinned
from dkist_processing_core.errors import DKISTProcessingCoreError
from dkist_processing_core.worker._digest import content_digest
from dkist_processing_core.worker._digest import stat_digest
from dkist_processing_core.worker._install import Installer
from dkist_processing_core.worker._install import distributions
from dkist_processing_core.worker._install import interpreter_facts
from dkist_processing_core.worker._protocol import WorkerError
from dkist_processing_core.worker._protocol import note

LAYOUT = "venvs-v1"
MARKER = ".dkist-venv-cache.json"
MARKER_FORMAT = 3  # 2: with the content digest that verify checks; 3: .pyc by name at start
MARKER_LIMIT = 64 * 1024 * 1024  # a marker lists the entry's distributions and file digests
HOLD_GRACE_SECONDS = 3600.0
_NOT_KEYS = ("holds", "interpreters")
_ENV_NAME = re.compile(r"env-[0-9a-f]{12}")


def cache_key(requirement: str, interpreter: dict[str, object]) -> dict[str, object] | None:
    """What identifies a cached venv, or None when the requirement may change under its version.

    ``interpreter`` is :func:`interpreter_facts` of the venv's base interpreter.
    """
    pinned = parse_pinned(requirement)
    if pinned is None or not is_public_release(pinned.version):
        return None
    return {
        "distribution": canonical_name(pinned.name),
        "extras": sorted({canonical_name(extra) for extra in pinned.extras}),
        "version": pinned.version.lower(),
        "python": interpreter["python"],
        "interpreter": interpreter["interpreter"],
        "platform": interpreter["platform"],
    }


def cacheable(requirement: str) -> bool:
    """Whether ``requirement`` names a public release (the only kind the cache keeps)."""
    pinned = parse_pinned(requirement)
    return pinned is not None and is_public_release(pinned.version)


def key_name(key: dict[str, object]) -> str:
    """Folder name of a cache key: readable (distribution, version, Python) and unique (a digest)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    python = str(key["python"]).split("-")[1].split(".")
    version = re.sub(r"[^A-Za-z0-9._-]", "_", str(key["version"]))
    return f"{key['distribution']}-{version}-py{python[0]}{python[1]}-{digest}"


def held_envs(root: Path, *, remove_stale: bool = False) -> dict[str, int]:
    """Entry folder (real path) -> number of running tasks holding it (hold files whose flock is taken).

    Only regular files are holds: anything else in ``holds/`` (a FIFO, a symbolic link, a device)
    is never opened, so it cannot block; ``remove_stale`` (gc) removes it, and hold files of dead
    tasks older than :data:`HOLD_GRACE_SECONDS`.
    """
    held: dict[str, int] = {}
    holds = root / "holds"
    try:
        names = os.listdir(holds)
    except (FileNotFoundError, NotADirectoryError):
        return held
    for name in names:
        path = holds / name
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                if remove_stale and not path.is_dir():
                    path.unlink()
                continue
            # O_NONBLOCK | O_NOFOLLOW: never block and never follow, even if the file was swapped
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # gone, swapped for a symbolic link, or unreadable: not a hold of ours
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                target = os.path.realpath(text) if text else text
                held[target] = held.get(target, 0) + 1
                continue
            if remove_stale and time.time() - info.st_mtime > HOLD_GRACE_SECONDS:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return held


def _read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError for anything else.

    Opened without following a symbolic link and without blocking (a FIFO put in its place).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise OSError(f"{path} is not a regular file of at most {limit} bytes")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def key_folders(root: Path) -> list[Path]:
    """The key folders under the cache's ``root`` (not ``holds/`` or ``interpreters/``), sorted."""
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in _NOT_KEYS]


@contextmanager
def key_lock(folder: Path) -> Iterator[int]:
    """The key folder's lock file, open (created if needed) and not inherited by children."""
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def lock(fd: int, kind: int, waiting: str | None) -> bool:
    """flock ``kind``; when another process has it, note ``waiting`` once and wait (False if None)."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        if waiting is None:
            return False
        note(waiting)
        fcntl.flock(fd, kind)
    return True


def published(folder: Path) -> str | None:
    """The name the key folder's ``current`` points to, None when nothing is published."""
    try:
        return os.readlink(folder / "current")
    except OSError:
        return None


def read_entry(folder: Path, key: dict[str, object] | None) -> tuple[Path, dict[str, object]] | str:
    """The published entry of a key folder and its marker, or why it must not be used.

    ``key`` None (``verify``): any key the marker names is taken.
    """
    try:
        target = os.readlink(folder / "current")
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "its 'current' is not a symlink (foreign)"
    if not _ENV_NAME.fullmatch(target):
        return f"'current' points to {target!r} (foreign)"
    entry = folder / target
    try:
        marker = json.loads(_read_regular_file(entry / MARKER, MARKER_LIMIT))
    except FileNotFoundError:
        return "it has no completion marker (half-built)"
    except (OSError, ValueError) as error:
        return f"its completion marker is unreadable ({error})"
    if (
        not isinstance(marker, dict)
        or marker.get("format") != MARKER_FORMAT
        or (key is not None and marker.get("key") != key)
    ):
        return "its marker names another requirement or interpreter (foreign)"
    try:
        digest, _files = stat_digest(entry, MARKER)
    except OSError as error:
        return f"its files cannot be read ({error})"
    if digest != marker.get("digest"):
        return "its files changed since it was built (corrupted or tampered with)"
    return entry, marker


#: A build that fails with less than this left on the cache's disk failed for want of space.
FULL_BELOW_BYTES = 64 * 1024 * 1024


class CacheFullError(DKISTProcessingCoreError, OSError):
    """Building an entry failed because the cache's disk is full (the task falls back)."""


class Cache:
    """The cache folder ``<DKIST_VENV_CACHE_DIR>/venvs-v1``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> Cache | None:
        """The cache of ``DKIST_VENV_CACHE_DIR``, None when unset; exit status 2 for a bad path."""
        value = environ.get("DKIST_VENV_CACHE_DIR", "")
        if not value:
            return None
        if not os.path.isabs(value) or re.search(r"[\x00-\x1f\x7f]", value):
            raise WorkerError(f"DKIST_VENV_CACHE_DIR must be an absolute path, got {value!r}", 2)
        return cls(Path(value) / LAYOUT)

    def open(self) -> None:
        """Create the folder; refuse one that another user could write to (they could plant a venv)."""
        (self.root / "holds").mkdir(parents=True, exist_ok=True)
        stat = self.root.stat()
        if stat.st_uid != os.geteuid() or stat.st_mode & 0o022:
            raise OSError(f"{self.root} must belong to this user and not be writable by others")

    def interpreter(self, python: str) -> dict[str, object]:
        """:func:`interpreter_facts` of ``python``, kept per interpreter file (it costs a process).

        Kept under ``interpreters/`` by the real path and the file's identity, so a replaced or
        upgraded interpreter is asked again.
        """
        real = os.path.realpath(python)
        info = os.stat(real)
        identity = f"{real}\0{info.st_dev}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}"
        kept = self.root / "interpreters" / hashlib.sha256(identity.encode()).hexdigest()[:24]
        try:
            facts = json.loads(_read_regular_file(kept, 64 * 1024))
            if isinstance(facts, dict) and facts.get("interpreter"):
                return facts
        except (OSError, ValueError):
            pass
        facts = interpreter_facts(python)
        kept.parent.mkdir(exist_ok=True)
        write_atomically(kept, json.dumps(facts))
        return facts

    def new_hold(self) -> str:
        """A new hold file for this task (the script keeps it open and locked while the task runs)."""
        self.open()
        handle, path = tempfile.mkstemp(prefix=f"{os.getpid()}-", dir=self.root / "holds")
        os.close(handle)
        return path

    def acquire(
        self, key: dict[str, object], requirement: str, installer: Installer, hold: int
    ) -> tuple[Path, dict[str, object], str]:
        """The entry for ``key`` (built if needed), recorded in the hold; returns entry, marker, outcome."""
        self.open()
        fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
        folder = self.root / key_name(key)
        folder.mkdir(exist_ok=True)
        waiting = f"waiting for another task that is building {folder.name}"
        with key_lock(folder) as fd:
            lock(fd, fcntl.LOCK_SH, waiting)
            found = read_entry(folder, key)
            if isinstance(found, str):
                fcntl.flock(fd, fcntl.LOCK_UN)
                lock(fd, fcntl.LOCK_EX, waiting)
                found = read_entry(folder, key)
            outcome = "hit"
            if isinstance(found, str):
                outcome = "built" if found == "missing" else "rebuilt"
                if found != "missing":
                    note(f"the cached environment {folder.name} is not used: {found}")
                found = self._build(folder, key, requirement, installer, found != "missing")
            entry, marker = found
            os.pwrite(hold, str(entry).encode(), 0)
            os.utime(fd)  # last use, for gc
            return entry, marker, outcome

    def _build(
        self,
        folder: Path,
        key: dict[str, object],
        requirement: str,
        installer: Installer,
        broken: bool,
    ) -> tuple[Path, dict[str, object]]:
        held = held_envs(self.root)
        if broken:
            unpublish(folder, held)
        for child in folder.iterdir():  # half-built or superseded entries that no task holds
            if _ENV_NAME.fullmatch(child.name) and os.path.realpath(child) not in held:
                shutil.rmtree(child, ignore_errors=True)
            elif child.name.startswith("current.tmp-"):
                child.unlink(missing_ok=True)
        entry = folder / f"env-{secrets.token_hex(6)}"
        note(f"building the cached environment {folder.name} with {installer.name}")
        started = time.monotonic()
        try:
            installer.create(entry, requirement, compile_bytecode=True)
            digest, files = stat_digest(entry, MARKER)
            marker = {
                "format": MARKER_FORMAT,
                "key": key,
                "requirement": requirement,
                "digest": digest,
                "content": content_digest(entry, MARKER),
                "files": files,
                "installer": installer.name,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - started, 3),
                "distributions": distributions(entry),
            }
            write_atomically(entry / MARKER, json.dumps(marker, indent=1), durable=True)
            link = folder / f"current.tmp-{secrets.token_hex(4)}"
            os.symlink(entry.name, link)
            os.replace(link, folder / "current")
            fsync_folder(folder)
            return entry, marker
        except BaseException as error:
            try:  # before the half-built entry frees its space
                available = shutil.disk_usage(folder).free
            except OSError:
                available = 0
            shutil.rmtree(entry, ignore_errors=True)
            if isinstance(error, (WorkerError, OSError)) and available < FULL_BELOW_BYTES:
                raise CacheFullError(
                    f"the cache's disk is full ({available // 1024} KiB left in {self.root}): "
                    f"{error}"
                ) from None
            raise


def unpublish(folder: Path, held: dict[str, int]) -> None:
    """Under the key's exclusive lock: remove ``current``; set its entry aside unless a task holds it."""
    name = published(folder)
    target = None if name is None else folder / name
    (folder / "current").unlink(missing_ok=True)
    if (
        target is not None
        and target.is_dir()
        and os.path.realpath(target) not in held
        and _ENV_NAME.fullmatch(target.name)
    ):
        aside = folder / f"aside-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        target.rename(aside)
        note(f"set aside as {aside}")
