"""Python 3.13 venvs and wheelhouses of the real DKIST client pipelines, cached between runs.

The clients (dkist-processing-test, -ops) depend on dkist-processing-common 14.8.0, which pins
``dkist-processing-core==7.5.0`` exactly, so no resolver will put our 8.x in their environment.
The venvs are therefore built from a committed, fully resolved list
(``tests/clients/pins-py313.txt``: the clients, their dependencies and test tools, without
dkist-processing-core) installed with ``uv pip install --no-deps``, plus either
``dkist-processing-core==7.5.0`` ("old") or this checkout's five wheels ("new"), also
``--no-deps``. That is how the pin is overridden: nothing checks it at install time, and
``uv pip check`` afterwards names exactly that pin (expected).

Everything lives under ``~/.cache/dkist-processing-core-tests/`` (``DKIST_CLIENT_TEST_CACHE``
overrides), in folders named by a hash of what went into them (pins, interpreter version,
requirements, wheel hashes), built once under a file lock (:func:`helpers.release.build_once`)
so pytest-xdist workers and concurrent runs share them. uv installs from its own cache
(``--offline`` first), so a warm venv costs seconds; a cold one needs the package index once.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

from helpers.release import REPO_ROOT
from helpers.release import build_once
from helpers.release import run
from helpers.wheelhouse import download

__all__ = [
    "CACHE_ROOT",
    "OLD_CORE",
    "PINS",
    "digest",
    "pinned_venv",
    "pip_download",
    "prune_stale",
    "python313",
    "rewrite_requirement",
    "uv_binary",
]

CACHE_ROOT = Path(
    os.environ.get("DKIST_CLIENT_TEST_CACHE", "~/.cache/dkist-processing-core-tests")
).expanduser()
PINS = REPO_ROOT / "tests" / "clients" / "pins-py313.txt"
OLD_CORE = "dkist-processing-core==7.5.0"
# A "new" venv not used for this long is removed (each change of the product makes a new one).
_STALE_AFTER_S = 2 * 24 * 3600


def python313() -> Path:
    """The Python 3.13 interpreter the clients require (``DKIST_CLIENT_PYTHON`` overrides)."""
    candidates = [os.environ.get("DKIST_CLIENT_PYTHON", "")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(str(p) for p in Path(root).glob("versions/3.13*/bin/python3.13"))
    candidates.append(shutil.which("python3.13") or "")
    for candidate in filter(None, candidates):
        if Path(candidate).is_file():
            return Path(candidate)
    raise AssertionError(
        "Python 3.13 not found: the DKIST client pipelines require Python >= 3.13. Install it "
        "(`pyenv install 3.13`, or apt-get install python3.13) or point DKIST_CLIENT_PYTHON at it."
    )


def uv_binary() -> Path:
    """The uv executable of the test environment (``pip install uv``; in requirements-test.txt)."""
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found:
            return Path(found)
        raise AssertionError(
            f"uv not found: run `{sys.executable} -m pip install uv` "
            "(it is listed in requirements-test.txt)"
        ) from None
    return Path(find_uv_bin())


def digest(*parts: str | bytes | Path) -> str:
    """Short sha256 of strings, bytes and file contents, in order."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.read_bytes() if isinstance(part, Path) else part
        hasher.update(data.encode() if isinstance(data, str) else data)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _python_version(python: Path) -> str:
    return run([python, "-c", "import sys; print(sys.version)"]).stdout.strip()


def _uv_install(python: Path, arguments: list[str]) -> None:
    """``uv pip install`` from uv's cache if it can, else from the package index."""
    base = [uv_binary(), "pip", "install", "--quiet", "--python", python, "--no-deps", *arguments]
    if run([*base, "--offline"]).returncode == 0:
        return
    result = run(base)
    assert result.returncode == 0, (
        "uv pip install for a client venv failed (a cold cache needs the package index once):\n"
        f"{result.stdout}{result.stderr}"
    )


def prune_stale(root: Path, prefix: str, keep: Path) -> None:
    """Remove ``root``'s ``PREFIX-*`` folders other than ``keep`` not used for two days."""
    for done in root.glob(f"{prefix}-*.done"):
        folder = done.with_suffix("")
        if folder != keep and time.time() - done.stat().st_mtime > _STALE_AFTER_S:
            shutil.rmtree(folder, ignore_errors=True)
            done.unlink(missing_ok=True)


def pinned_venv(kind: str, extras: list[str | Path], *, pins: Path = PINS) -> Path:
    """The interpreter of a cached venv: ``pins`` + ``extras`` (a requirement or wheel files), no deps.

    ``kind`` names the cache folder ("old", "new"); wheel files count by content in the key.
    """
    python = python313()
    key = digest(pins, _python_version(python), *extras)
    root = CACHE_ROOT / "venvs"

    def produce(folder: Path) -> None:
        result = run([uv_binary(), "venv", "--quiet", "--python", python, folder / "venv"])
        assert result.returncode == 0, f"uv venv failed:\n{result.stdout}{result.stderr}"
        _uv_install(folder / "venv" / "bin" / "python", ["-r", str(pins), *map(str, extras)])

    folder = build_once(root, f"{kind}-{key}", produce)
    os.utime(root / f"{kind}-{key}.done")
    prune_stale(root, kind, folder)
    return folder / "venv" / "bin" / "python"


def pip_download(name: str, arguments: list[str], key_parts: Iterable[str | bytes | Path]) -> Path:
    """A cached wheelhouse: ``pip download --only-binary=:all: ARGUMENTS`` with Python 3.13's pip.

    Cached by ``name``, the interpreter and ``key_parts`` (not ``arguments``, which may hold
    paths of this checkout). Uses this machine's pip configuration (index, mirrors) once per key.
    """
    python = python313()
    key = digest(_python_version(python), *key_parts)

    def produce(folder: Path) -> None:
        download(folder, arguments, python)

    return build_once(CACHE_ROOT / "wheelhouses", f"{name}-{key}", produce)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def rewrite_requirement(wheel: Path, outdir: Path, old: str, new: str) -> Path:
    """A copy of ``wheel`` in ``outdir`` whose ``Requires-Dist: OLD`` line reads ``Requires-Dist: NEW``.

    The RECORD entry of METADATA is updated, so the copy is a valid wheel with the same name.
    """
    target = outdir / wheel.name
    with (
        zipfile.ZipFile(wheel) as source,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        names = source.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        metadata = source.read(metadata_name).decode()
        line = f"Requires-Dist: {old}\n"
        assert line in metadata, f"{wheel.name} has no line {line!r}"
        metadata = metadata.replace(line, f"Requires-Dist: {new}\n").encode()
        rows = list(csv.reader(io.StringIO(source.read(record_name).decode())))
        for row in rows:
            if row and row[0] == metadata_name:
                row[1:] = [_record_hash(metadata), str(len(metadata))]
        record = io.StringIO()
        csv.writer(record, lineterminator="\n").writerows(rows)
        for info in source.infolist():
            data = {metadata_name: metadata, record_name: record.getvalue().encode()}.get(
                info.filename
            )
            out.writestr(info, data if data is not None else source.read(info.filename))
    return target
