"""The worker's per-version venv cache: layout, key, content check, locking, building.

Cache (``DKIST_VENV_CACHE_DIR``, off when unset): ``<dir>/venvs-v1/<key>/`` per requirement, Python
and platform, public release versions only. A venv is not relocatable, so it is built where it will
stay (``env-<random>/``), byte-compiled, digested (relative path, size and mtime of every file) into
the completion marker, and published by renaming the symlink ``current`` over the old one. Readers
take the key's ``lock`` shared, builders and ``gc`` exclusive; a task records the entry it uses in
its hold file (``holds/``) while holding an exclusive flock on it, which the script's open file
keeps for the task's lifetime. An entry whose marker or digest does not match is never used: it is
unpublished, set aside (``aside-*``, unless a running task still holds it) and rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Protocol

from dkist_processing_core.worker._protocol import WorkerError
from dkist_processing_core.worker._protocol import note

LAYOUT = "venvs-v1"
MARKER = ".dkist-venv-cache.json"
MARKER_FORMAT = 1
HOLD_GRACE_SECONDS = 3600.0
OUTCOMES = ("off", "uncacheable", "hit", "built", "rebuilt", "error")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
#: What a task installs: ``dist[extra,...]==version``.
REQUIREMENT = re.compile(rf"({_NAME})(?:\[({_NAME}(?:,{_NAME})*)\])?==([A-Za-z0-9.!+_-]+)")
# PEP 440 public release: no local part (+x) and no development release (.devN).
_PUBLIC_RELEASE = re.compile(
    r"(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?"
    r"(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"env-[0-9a-f]{12}")
_TRUE = {"1", "true", "yes", "on", "y"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


#: Printed by the task venv's base interpreter: what of it a cached venv depends on.
_INTERPRETER_FACTS = (
    "import json, os, sys, sysconfig; print(json.dumps({"
    "'python': '%s-%s%s' % (sys.implementation.name, '.'.join(map(str, sys.version_info[:3])), sys.abiflags), "
    "'interpreter': os.path.realpath(getattr(sys, '_base_executable', '') or sys.executable), "
    "'platform': sysconfig.get_platform()}))"
)


def interpreter_facts(python: str) -> dict[str, object]:
    """Implementation, version and ABI, real path and platform of the interpreter ``python``."""
    result = subprocess.run(
        [python, "-I", "-S", "-c", _INTERPRETER_FACTS], capture_output=True, text=True, check=False
    )
    try:
        facts = json.loads(result.stdout)
    except ValueError:
        facts = None
    if result.returncode or not isinstance(facts, dict):
        raise OSError(f"{python} did not describe itself: {result.stderr.strip()[-300:]}")
    return facts


def cache_key(requirement: str, interpreter: dict[str, object]) -> dict[str, object] | None:
    """What identifies a cached venv, or None when the requirement may change under its version.

    ``interpreter`` is :func:`interpreter_facts` of the venv's base interpreter.
    """
    match = REQUIREMENT.fullmatch(requirement)
    if match is None or not _PUBLIC_RELEASE.fullmatch(match.group(3)):
        return None
    extras = sorted({_canonical(extra) for extra in (match.group(2) or "").split(",") if extra})
    return {
        "distribution": _canonical(match.group(1)),
        "extras": extras,
        "version": match.group(3).lower(),
        "python": interpreter["python"],
        "interpreter": interpreter["interpreter"],
        "platform": interpreter["platform"],
    }


def cacheable(requirement: str) -> bool:
    """Whether ``requirement`` names a public release (the only kind the cache keeps)."""
    match = REQUIREMENT.fullmatch(requirement)
    return match is not None and _PUBLIC_RELEASE.fullmatch(match.group(3)) is not None


def key_name(key: dict[str, object]) -> str:
    """Folder name of a cache key: readable (distribution, version, Python) and unique (a digest)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    python = str(key["python"]).split("-")[1].split(".")
    version = re.sub(r"[^A-Za-z0-9._-]", "_", str(key["version"]))
    return f"{key['distribution']}-{version}-py{python[0]}{python[1]}-{digest}"


def tree_digest(root: Path) -> tuple[str, int]:
    """sha256 over relative path, size and mtime of every file (link targets, folders); file count."""
    hasher = hashlib.sha256()
    files = 0
    pending = [b""]
    while pending:
        relative = pending.pop()
        with os.scandir(
            os.path.join(os.fsencode(root), relative) if relative else os.fsencode(root)
        ) as it:
            entries = sorted(it, key=lambda entry: entry.name)
        for entry in entries:
            path = relative + b"/" + entry.name if relative else entry.name
            if path == MARKER.encode():
                continue
            if entry.is_symlink():
                hasher.update(b"L " + path + b" " + os.readlink(entry.path) + b"\n")
            elif entry.is_dir(follow_symlinks=False):
                hasher.update(b"D " + path + b"\n")
                pending.append(path)
            else:
                stat = entry.stat(follow_symlinks=False)
                hasher.update(b"F %s %d %d\n" % (path, stat.st_size, stat.st_mtime_ns))
                files += 1
    return hasher.hexdigest(), files


def held_envs(root: Path, *, remove_stale: bool = False) -> dict[str, int]:
    """Entry folder (real path) -> number of running tasks holding it (hold files whose flock is taken)."""
    held: dict[str, int] = {}
    holds = root / "holds"
    if not holds.is_dir():
        return held
    for path in holds.iterdir():
        try:
            with open(path, "rb") as stream:
                try:
                    fcntl.flock(stream, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    target = stream.read().decode(errors="replace").strip()
                    target = os.path.realpath(target) if target else target
                    held[target] = held.get(target, 0) + 1
                    continue
            if remove_stale and time.time() - path.stat().st_mtime > HOLD_GRACE_SECONDS:
                path.unlink()
        except FileNotFoundError:
            continue
    return held


def open_lock(path: Path) -> int:
    """Open (creating it) the lock file ``path``; the descriptor is not inherited by children."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def lock(fd: int, exclusive: bool, what: str) -> None:
    """flock, saying once that the task waits when another process has it."""
    kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        note(f"waiting for another task that is building {what}")
        fcntl.flock(fd, kind)


def read_entry(folder: Path, key: dict[str, object]) -> tuple[Path, dict[str, object]] | str:
    """The published entry of a key folder and its marker, or why it must not be used."""
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
        marker = json.loads((entry / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "it has no completion marker (half-built)"
    except (OSError, ValueError) as error:
        return f"its completion marker is unreadable ({error})"
    if (
        not isinstance(marker, dict)
        or marker.get("format") != MARKER_FORMAT
        or marker.get("key") != key
    ):
        return "its marker names another requirement or interpreter (foreign)"
    try:
        digest, _files = tree_digest(entry)
    except OSError as error:
        return f"its files cannot be read ({error})"
    if digest != marker.get("digest"):
        return "its files changed since it was built (corrupted or tampered with)"
    return entry, marker


def distributions(venv: Path) -> list[str]:
    """``name==version`` of every distribution in the venv (what ``pip list --format=freeze`` says)."""
    from importlib.metadata import distributions as found

    paths = [str(path) for path in sorted(venv.glob("lib/python*/site-packages"))]
    listed = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in found(path=paths)
        if dist.metadata["Name"]
    }
    return sorted(listed, key=str.lower)


class Installs(Protocol):
    """What the cache needs of an installer (:class:`~dkist_processing_core.worker._install.Installer`)."""

    name: str

    def create(self, venv: Path, requirement: str, *, compile_bytecode: bool) -> None:
        """Make a venv at ``venv`` with ``requirement`` installed."""


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

    def new_hold(self) -> str:
        """A new hold file for this task (the script keeps it open and locked while the task runs)."""
        self.open()
        handle, path = tempfile.mkstemp(prefix=f"{os.getpid()}-", dir=self.root / "holds")
        os.close(handle)
        return path

    def acquire(
        self, key: dict[str, object], requirement: str, installer: Installs, hold: int
    ) -> tuple[Path, dict[str, object], str]:
        """The entry for ``key`` (built if needed), recorded in the hold; returns entry, marker, outcome."""
        self.open()
        fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
        folder = self.root / key_name(key)
        folder.mkdir(exist_ok=True)
        fd = open_lock(folder / "lock")
        try:
            lock(fd, False, folder.name)
            found = read_entry(folder, key)
            if isinstance(found, str):
                fcntl.flock(fd, fcntl.LOCK_UN)
                lock(fd, True, folder.name)
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
        finally:
            os.close(fd)

    def _build(
        self,
        folder: Path,
        key: dict[str, object],
        requirement: str,
        installer: Installs,
        broken: bool,
    ) -> tuple[Path, dict[str, object]]:
        held = held_envs(self.root)
        current = folder / "current"
        if broken:
            target = folder / os.readlink(current) if current.is_symlink() else None
            current.unlink(missing_ok=True)
            if (
                target is not None
                and target.is_dir()
                and os.path.realpath(target) not in held
                and _ENV_NAME.fullmatch(target.name)
            ):
                aside = folder / f"aside-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
                target.rename(aside)
                note(f"set aside as {aside}")
        for child in folder.iterdir():  # half-built or superseded entries that no task holds
            if _ENV_NAME.fullmatch(child.name) and os.path.realpath(child) not in held:
                shutil.rmtree(child, ignore_errors=True)
            elif child.name.startswith("current.tmp-"):
                child.unlink(missing_ok=True)
        entry = folder / f"env-{secrets.token_hex(6)}"
        note(f"building the cached environment {folder.name} with {installer.name}")
        started = time.monotonic()
        installer.create(entry, requirement, compile_bytecode=True)
        listing = distributions(entry)
        digest, files = tree_digest(entry)
        marker = {
            "format": MARKER_FORMAT,
            "key": key,
            "requirement": requirement,
            "digest": digest,
            "files": files,
            "installer": installer.name,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.monotonic() - started, 3),
            "distributions": listing,
        }
        _write_durably(entry / MARKER, json.dumps(marker, indent=1).encode())
        link = folder / f"current.tmp-{secrets.token_hex(4)}"
        os.symlink(entry.name, link)
        os.replace(link, current)
        _fsync_folder(folder)
        return entry, marker


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
