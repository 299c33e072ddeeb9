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

The cache itself is :mod:`.worker_cache`, whose text precedes this one in the program the DAG
file embeds (``worker_cache.py`` + ``worker_env.py``); imported as a module, this one imports it.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __name__ != "__main__":  # imported as a module; in the embedded program these come first
    from dkist_processing_core.export.worker_cache import _TRUE
    from dkist_processing_core.export.worker_cache import Cache
    from dkist_processing_core.export.worker_cache import SetupError
    from dkist_processing_core.export.worker_cache import _canonical
    from dkist_processing_core.export.worker_cache import cache_key
    from dkist_processing_core.export.worker_cache import distributions
    from dkist_processing_core.export.worker_cache import say


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


def runner_for(listing: list[str]) -> str:
    """``run_task`` if the task venv has dkist-processing-core-task, else ``contract`` (a 7.x core)."""
    names = {_canonical(line.partition("==")[0]) for line in listing}
    return "run_task" if "dkist-processing-core-task" in names else "contract"


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
