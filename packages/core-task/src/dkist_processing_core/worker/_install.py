"""Make a task venv with uv (when it is on PATH) or pip, from the worker's ``python3``.

``DKIST_INSTALLER=auto|uv|pip``: uv when it is on PATH (``pip`` never uses it, ``uv`` requires it).
uv reads no pip configuration, so pip's environment is translated (``PIP_INDEX_URL`` ->
``--default-index``, ``PIP_EXTRA_INDEX_URL`` -> ``--index``, ``PIP_FIND_LINKS``, ``PIP_NO_INDEX``,
``PIP_CERT``) unless the matching ``UV_*`` setting is present; ``DKIST_PIP_TIMEOUT`` and
``DKIST_PIP_RETRIES`` apply to both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from dkist_processing_core.worker import DEFAULT_PIP_RETRIES
from dkist_processing_core.worker import DEFAULT_PIP_TIMEOUT
from dkist_processing_core.worker._protocol import WorkerError

__all__ = ["TRUE", "Installer", "distributions", "interpreter_facts"]

TRUE = {"1", "true", "yes", "on", "y"}


class Installer:
    """uv or pip, with the same index, timeout and retry settings, making venvs of ``python``."""

    def __init__(self, environ: dict[str, str], cwd: Path, python: str) -> None:
        wanted = (environ.get("DKIST_INSTALLER") or "auto").strip().lower()
        if wanted not in ("auto", "uv", "pip"):
            raise WorkerError(f"DKIST_INSTALLER must be auto, uv or pip, got {wanted!r}", 2)
        self.uv = shutil.which("uv", path=environ.get("PATH")) if wanted != "pip" else None
        if wanted == "uv" and self.uv is None:
            raise WorkerError("DKIST_INSTALLER=uv, but there is no uv on PATH", 2)
        self.name = "uv" if self.uv else "pip"
        self.environ, self.cwd, self.python = environ, cwd, python
        self.timeout = environ.get("DKIST_PIP_TIMEOUT") or str(DEFAULT_PIP_TIMEOUT)
        self.retries = environ.get("DKIST_PIP_RETRIES") or str(DEFAULT_PIP_RETRIES)

    def _run(self, command: list[str], what: str, env: dict[str, str] | None = None) -> None:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            cwd=self.cwd,
            env=env or self.environ,
            check=False,
        )
        if result.returncode < 0:
            raise WorkerError(f"{what} was killed by signal {-result.returncode}")
        if result.returncode:
            raise WorkerError(
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
        if not env.get("UV_NO_INDEX") and env.get("PIP_NO_INDEX", "").strip().lower() in TRUE:
            args.append("--no-index")
        return args, env

    def create(self, venv: Path, requirement: str, *, compile_bytecode: bool) -> None:
        """Make a venv at ``venv`` and install ``requirement`` into it with uv or pip."""
        python = str(venv / "bin" / "python")
        if self.uv:
            args, env = self._uv_environment()
            command = [self.uv, "venv", "--quiet", "--no-project", f"--python={self.python}"]
            self._run([*command, str(venv)], "uv venv", env)
            install = [self.uv, "pip", "install", f"--python={python}", "--no-progress", *args]
            if compile_bytecode:  # a cache entry: its own copies, not hard links into uv's cache
                install += ["--compile-bytecode", "--link-mode=copy"]
            self._run([*install, "--", requirement], "uv pip install", env)
            return
        self._run([self.python, "-m", "venv", "--without-pip", str(venv)], "python3 -m venv")
        pip = [self.python, "-m", "pip", f"--python={python}"]
        probe = subprocess.run(
            [*pip, "--version"], capture_output=True, cwd=self.cwd, env=self.environ, check=False
        )
        if probe.returncode:  # pip older than 22.3 or absent: pip inside the venv
            self._run([python, "-m", "ensurepip", "--default-pip"], "ensurepip")
            pip = [python, "-m", "pip"]
        install = [*pip, "install", "--no-input", "--disable-pip-version-check"]
        install += ["--progress-bar=off", f"--timeout={self.timeout}", f"--retries={self.retries}"]
        if not compile_bytecode:
            install.append("--no-compile")
        self._run([*install, "--", requirement], "pip install")


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
