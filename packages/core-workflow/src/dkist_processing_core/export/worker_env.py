"""The task environment of the worker script (``worker.sh``): uv or pip, and a per-version venv cache.

Run by the Airflow worker's ``python3`` (standard library only) from the text that every DAG file
embeds; ``dkist-processing-core worker gc`` imports it for the cache layout. Commands:

- ``prepare``: check ``RECIPE_RUN_ID`` (exit 2 before anything else) and print it; when the cache
  applies, also create a hold file that the script keeps open for the task's lifetime.
- ``setup``: make the task's venv and print, one per line: its python, ``run_task``/``contract``,
  the installer that ran, the cache outcome, setup start and end (ns since the epoch).
- ``contract``: run the task the way every core runs it (for task venvs without core-task).

Installer: ``uv`` when it is on PATH (``DKIST_INSTALLER=pip`` forces pip, ``=uv`` requires uv), with
pip's index settings translated (``PIP_INDEX_URL`` ...) unless the ``UV_*`` ones are set.

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
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

LAYOUT = "venvs-v1"
MARKER = ".dkist-venv-cache.json"
MARKER_FORMAT = 1
HOLD_GRACE_SECONDS = 3600.0
OUTCOMES = ("off", "uncacheable", "hit", "built", "rebuilt", "error")
_PREFIX = "dkist-processing-core:"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(rf"({_NAME})(?:\[({_NAME}(?:,{_NAME})*)\])?==([A-Za-z0-9.!+_-]+)")
# PEP 440 public release: no local part (+x) and no development release (.devN).
_PUBLIC_RELEASE = re.compile(
    r"(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?"
    r"(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"env-[0-9a-f]{12}")
_TRUE = {"1", "true", "yes", "on", "y"}


class SetupError(Exception):
    """The environment cannot be made; ``status`` is the script's exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def say(message: str) -> None:
    """Print one line of the setup to the task log (stderr), prefixed like the script's own."""
    print(f"{_PREFIX} {message}", file=sys.stderr, flush=True)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def recipe_run_id(given: str) -> int:
    """``int()`` of the text, or of a whole-number float (``"42.0"``); exit 2 otherwise."""
    raw = given.strip()
    try:
        value = int(raw, 10)
    except ValueError:
        try:
            number = float(raw)
        except ValueError:
            number = 0.5
        value = int(number) if number.is_integer() else -1
    if not 0 <= value < 2**63:
        raise SetupError(
            f"recipe run id must be a non-negative integer, got {given!r}; "
            "trigger the DAG with the conf key recipe_run_id",
            2,
        )
    return value


def cache_key(requirement: str) -> dict[str, object] | None:
    """What identifies a cached venv, or None when the requirement may change under its version."""
    match = _REQUIREMENT.fullmatch(requirement)
    if match is None or not _PUBLIC_RELEASE.fullmatch(match.group(3)):
        return None
    extras = sorted({_canonical(extra) for extra in (match.group(2) or "").split(",") if extra})
    base = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    return {
        "distribution": _canonical(match.group(1)),
        "extras": extras,
        "version": match.group(3).lower(),
        "python": f"{sys.implementation.name}-{'.'.join(map(str, sys.version_info[:3]))}{sys.abiflags}",
        "interpreter": base,
        "platform": sysconfig.get_platform(),
    }


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
        say(f"waiting for another task that is building {what}")
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


class Installer:
    """uv or pip, with the same index, timeout and retry settings."""

    def __init__(self, environ: dict[str, str], cwd: Path) -> None:
        wanted = (environ.get("DKIST_INSTALLER") or "auto").strip().lower()
        if wanted not in ("auto", "uv", "pip"):
            raise SetupError(f"DKIST_INSTALLER must be auto, uv or pip, got {wanted!r}", 2)
        self.uv = shutil.which("uv", path=environ.get("PATH")) if wanted != "pip" else None
        if wanted == "uv" and self.uv is None:
            raise SetupError("DKIST_INSTALLER=uv, but there is no uv on PATH", 2)
        self.name = "uv" if self.uv else "pip"
        self.environ, self.cwd = environ, cwd
        self.timeout = environ.get("DKIST_PIP_TIMEOUT") or "15"
        self.retries = environ.get("DKIST_PIP_RETRIES") or "5"

    def _run(self, command: list[str], what: str, env: dict[str, str] | None = None) -> None:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            cwd=self.cwd,
            env=env or self.environ,
        )
        if result.returncode < 0:
            raise SetupError(f"{what} was killed by signal {-result.returncode}")
        if result.returncode:
            raise SetupError(
                f"{what} failed with exit status {result.returncode}", result.returncode
            )

    def _uv_environment(self) -> tuple[list[str], dict[str, str]]:
        env, args = dict(self.environ), []
        env.setdefault("UV_HTTP_TIMEOUT", self.timeout)
        env.setdefault("UV_HTTP_RETRIES", self.retries)
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")
        if "PIP_CERT" in env and "SSL_CERT_FILE" not in env:
            env["SSL_CERT_FILE"] = env["PIP_CERT"]
        if not (env.get("UV_DEFAULT_INDEX") or env.get("UV_INDEX_URL")) and env.get(
            "PIP_INDEX_URL"
        ):
            args.append(f"--default-index={env['PIP_INDEX_URL']}")
        if not (env.get("UV_INDEX") or env.get("UV_EXTRA_INDEX_URL")) and env.get(
            "PIP_EXTRA_INDEX_URL"
        ):
            args += [f"--index={url}" for url in env["PIP_EXTRA_INDEX_URL"].split()]
            env.setdefault("UV_INDEX_STRATEGY", "unsafe-best-match")  # pip's rule across indexes
        if not env.get("UV_FIND_LINKS") and env.get("PIP_FIND_LINKS"):
            args += [f"--find-links={link}" for link in env["PIP_FIND_LINKS"].split()]
        if not env.get("UV_NO_INDEX") and env.get("PIP_NO_INDEX", "").strip().lower() in _TRUE:
            args.append("--no-index")
        return args, env

    def create(self, venv: Path, requirement: str, *, compile_bytecode: bool) -> None:
        """Make a venv at ``venv`` and install ``requirement`` into it with uv or pip."""
        python = str(venv / "bin" / "python")
        if self.uv:
            args, env = self._uv_environment()
            command = [
                self.uv,
                "venv",
                "--quiet",
                "--no-project",
                f"--python={sys.executable}",
                str(venv),
            ]
            self._run(command, "uv venv", env)
            install = [self.uv, "pip", "install", f"--python={python}", "--no-progress", *args]
            if compile_bytecode:  # a cache entry: its own copies, not hard links into uv's cache
                install += ["--compile-bytecode", "--link-mode=copy"]
            self._run([*install, "--", requirement], "uv pip install", env)
            return
        self._run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "python3 -m venv")
        pip = [sys.executable, "-m", "pip", f"--python={python}"]
        probe = subprocess.run(
            [*pip, "--version"], capture_output=True, cwd=self.cwd, env=self.environ
        )
        if probe.returncode:  # pip older than 22.3 or absent: pip inside the venv
            self._run([python, "-m", "ensurepip", "--default-pip"], "ensurepip")
            pip = [python, "-m", "pip"]
        install = [
            *pip,
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "--progress-bar=off",
        ]
        install += [f"--timeout={self.timeout}", f"--retries={self.retries}"]
        if not compile_bytecode:
            install.append("--no-compile")
        self._run([*install, "--", requirement], "pip install")


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


def runner_for(listing: list[str]) -> str:
    """``run_task`` if the task venv has dkist-processing-core-task, else ``contract`` (a 7.x core)."""
    names = {_canonical(line.partition("==")[0]) for line in listing}
    return "run_task" if "dkist-processing-core-task" in names else "contract"


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
            raise SetupError(f"DKIST_VENV_CACHE_DIR must be an absolute path, got {value!r}", 2)
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
        self, key: dict[str, object], requirement: str, installer: Installer, hold: int
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
                    say(f"the cached environment {folder.name} is not used: {found}")
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
        installer: Installer,
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
                say(f"set aside as {aside}")
        for child in folder.iterdir():  # half-built or superseded entries that no task holds
            if _ENV_NAME.fullmatch(child.name) and os.path.realpath(child) not in held:
                shutil.rmtree(child, ignore_errors=True)
            elif child.name.startswith("current.tmp-"):
                child.unlink(missing_ok=True)
        entry = folder / f"env-{secrets.token_hex(6)}"
        say(f"building the cached environment {folder.name} with {installer.name}")
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


def prepare(environ: dict[str, str]) -> list[str]:
    """Command ``prepare``: the checked recipe run id and a hold file (empty without a cache)."""
    value = recipe_run_id(environ.get("RECIPE_RUN_ID", ""))
    cache = Cache.from_environment(environ)
    hold = ""
    if cache is not None and cache_key(environ.get("DKIST_REQUIREMENT", "")) is not None:
        try:
            hold = cache.new_hold()
        except OSError as error:
            say(f"the venv cache is not used: {error}")
    return [str(value), hold]


def setup(environ: dict[str, str], scratch: Path, hold_fd: str) -> list[str]:
    """Command ``setup``: make or reuse the task venv; the lines the script reads (python, runner, ...)."""
    started = time.time_ns()
    requirement = environ.get("DKIST_REQUIREMENT", "")
    installer = Installer(environ, scratch)
    cache = Cache.from_environment(environ)
    key = cache_key(requirement) if cache is not None else None
    outcome = "off" if cache is None else "uncacheable" if key is None else "error"
    used = installer.name
    listing: list[str] = []
    if cache is not None and key is None:
        say(
            f"{requirement!r} is not cached: only public release versions are (never dev or +local)"
        )
    venv = scratch / "venv"
    if cache is not None and key is not None and hold_fd.isdigit():
        try:
            venv, marker, outcome = cache.acquire(key, requirement, installer, int(hold_fd))
            recorded = marker.get("distributions")
            listing = [str(item) for item in recorded] if isinstance(recorded, list) else []
            used = "none" if outcome == "hit" else installer.name
        except OSError as error:
            say(f"the venv cache is not used: {type(error).__name__}: {error}")
    if outcome in ("off", "uncacheable", "error"):
        installer.create(venv, requirement, compile_bytecode=False)
        listing = distributions(venv)
    ended = time.time_ns()
    print("\n".join(listing), file=sys.stderr, flush=True)
    say(
        f"environment ready in {(ended - started) / 1e9:.2f} s: installer {used}, cache {outcome}, {venv}"
    )
    return [
        str(venv / "bin" / "python"),
        runner_for(listing),
        used,
        outcome,
        str(started),
        str(ended),
    ]


def contract(environ: dict[str, str]) -> None:
    """``with Task(...) as task: task()``: the statement every core's worker ran."""
    from importlib import import_module

    task_class = getattr(import_module(environ["DKIST_TASK_MODULE"]), environ["DKIST_TASK_CLASS"])
    with task_class(
        recipe_run_id=int(environ["RECIPE_RUN_ID"]),
        workflow_name=environ["DKIST_WORKFLOW_NAME"],
        workflow_version=environ["DKIST_WORKFLOW_VERSION"],
    ) as task:
        task()


def main(argv: list[str]) -> int:
    """Run one command of the helper (``prepare``, ``setup``, ``contract``); return the exit status."""
    environ = dict(os.environ)
    command = argv[0] if argv else ""
    options = dict(arg[2:].partition("=")[::2] for arg in argv[1:] if arg.startswith("--"))
    try:
        if command == "prepare":
            lines = prepare(environ)
        elif command == "setup":
            lines = setup(environ, Path(options["scratch"]), options.get("hold-fd", ""))
        elif command == "contract":
            say(
                "the task environment has no dkist-processing-core-task; running the task the way every core runs it"
            )
            contract(environ)
            return 0
        else:
            say(f"unknown command {command!r} (prepare, setup, contract)")
            return 2
    except SetupError as error:
        say(str(error))
        return error.status
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
