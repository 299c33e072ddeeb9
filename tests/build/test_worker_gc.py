"""``dkist-processing-core worker gc``: eviction from a worker's venv cache built by the real script.

Entries are built by the exported worker script (uv, the example pipeline from a local
wheelhouse); a running task that holds an entry is a real task process that waits for a file.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from dkist_processing_core.export import worker_cache
from helpers.worker_script import EXAMPLE_REQUIREMENT
from helpers.worker_script import cache_outcomes
from helpers.worker_script import run_script
from helpers.worker_script import script_env
from helpers.worker_script import start_script

DAY = 86400


def _env(tmp_path: Path, wheelhouse: Path, version: str = "1.0.0", **more: str) -> dict[str, str]:
    values = dict(
        DKIST_REQUIREMENT=EXAMPLE_REQUIREMENT.format(version=version),
        DKIST_TASK_MODULE="dkist_processing_example.tasks",
        DKIST_TASK_CLASS="MyTask1",
        DKIST_VENV_CACHE_DIR=str(tmp_path / "cache"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheelhouse),
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
    )
    values.update(more)
    return script_env(tmp_path, "uv", **values)


def _build(tmp_path: Path, wheelhouse: Path, version: str) -> Path:
    result = run_script(_env(tmp_path, wheelhouse, version))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (folder,) = (tmp_path / "cache" / worker_cache.LAYOUT).glob(
        f"dkist-processing-example-{version}-*"
    )
    return folder


def _age(folder: Path, days: float) -> None:
    """Make the entry's last use ``days`` ago (the mtime of its lock file)."""
    stamp = time.time() - days * DAY
    os.utime(folder / "lock", (stamp, stamp))


def _gc(cli, tmp_path: Path, *arguments: str):
    return cli("worker", "gc", "--cache-dir", str(tmp_path / "cache"), *arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--cache-dir", "/nonexistent", "--max-size", "lots"],
            "size must be a number with an optional unit",
        ),
        (
            ["--cache-dir", "/nonexistent", "--max-age", "7 days"],
            "age must be a number with an optional unit",
        ),
        (["--cache-dir", "relative/cache"], "the cache folder must be an absolute path"),
        ([], "no cache folder: pass --cache-dir DIR or set DKIST_VENV_CACHE_DIR"),
    ],
)
def test_usage_errors_exit_2(cli, arguments, message):
    result = cli("worker", "gc", *arguments)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_worker_without_a_cache_has_nothing_to_collect(cli, tmp_path):
    result = _gc(cli, tmp_path, "--max-age", "1d")
    assert result.returncode == 0, result.stderr
    assert "has no venv cache (venvs-v1) yet" in result.stdout


def test_max_age_and_max_size_evict_least_recently_used_first(cli, tmp_path, example_wheelhouse):
    old = _build(tmp_path, example_wheelhouse, "1.0.0")
    new = _build(tmp_path, example_wheelhouse, "2.0.0")
    _age(old, 10)
    _age(new, 1)

    dry = _gc(cli, tmp_path, "--max-age", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        f"would remove {old.name} (" in dry.stdout
        and "not used for longer than 7.0 days" in dry.stdout
    )
    assert (old / "current").exists()  # nothing removed

    aged = _gc(cli, tmp_path, "--max-age", "7d")
    assert aged.returncode == 0, aged.stderr
    assert f"removed {old.name} (" in aged.stdout and new.name not in aged.stdout
    assert not (old / "current").exists() and not list(old.glob("env-*"))
    assert (new / "current").exists()
    assert "worker gc: 2 entries" in aged.stdout and "removed 1 (" in aged.stdout

    # the evicted version is simply built again by its next task
    rebuilt = run_script(_env(tmp_path, example_wheelhouse, "1.0.0"))
    assert cache_outcomes(rebuilt.stdout + rebuilt.stderr) == ["built"]
    _age(old, 3)
    _age(new, 2)
    sized = _gc(cli, tmp_path, "--max-size", "1K")
    assert sized.returncode == 0, sized.stderr
    lines = [line for line in sized.stdout.splitlines() if line.startswith("removed")]
    assert [line.split()[1] for line in lines] == [old.name, new.name]  # least recently used first
    assert all("the cache is over 1.0 KiB" in line for line in lines)


def test_broken_and_half_built_leftovers_go_first(cli, tmp_path, example_wheelhouse):
    folder = _build(tmp_path, example_wheelhouse, "1.0.0")
    current = folder / os.readlink(folder / "current")
    (current / worker_cache.MARKER).unlink()  # the next task sets it aside and rebuilds
    assert cache_outcomes(run_script(_env(tmp_path, example_wheelhouse)).stderr) == ["rebuilt"]
    (aside,) = folder.glob("aside-*")
    half = folder / "env-0123456789ab"
    (half / "lib").mkdir(parents=True)  # a build that died before its marker

    result = _gc(cli, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        f"removed {folder.name}/{aside.name}" in result.stdout
        and "set aside as broken" in result.stdout
    )
    assert f"removed {folder.name}/{half.name}" in result.stdout
    assert not aside.exists() and not half.exists()
    assert (folder / "current").exists()
    assert cache_outcomes(run_script(_env(tmp_path, example_wheelhouse)).stderr) == ["hit"]


def test_an_entry_in_use_is_never_removed(cli, tmp_path, example_wheelhouse):
    folder = _build(tmp_path, example_wheelhouse, "1.0.0")
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "waiting_task.py").write_text(
        textwrap.dedent(
            """\
            import os
            import time

            from dkist_processing_core import TaskBase


            class Waiting(TaskBase):
                def run(self):
                    open(os.environ["WAIT_STARTED"], "w").close()
                    while not os.path.exists(os.environ["WAIT_RELEASE"]):
                        time.sleep(0.05)
            """
        )
    )
    started, release = tmp_path / "started", tmp_path / "release"
    env = _env(
        tmp_path,
        example_wheelhouse,
        DKIST_TASK_MODULE="waiting_task",
        DKIST_TASK_CLASS="Waiting",
        PYTHONPATH=str(modules),
        WAIT_STARTED=str(started),
        WAIT_RELEASE=str(release),
    )
    task = start_script(env)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and task.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), (
            task.stdout.read() if task.poll() is not None else "task did not start"
        )
        _age(folder, 30)
        held = _gc(cli, tmp_path, "--max-size", "0", "--max-age", "0s")
        assert held.returncode == 0, held.stderr
        assert (
            f"kept {folder.name} (" in held.stdout and "in use by 1 running task(s)" in held.stdout
        )
        assert "1 in use" in held.stdout
        assert (folder / "current").exists()
        # the same cache under another spelling of its path (a symlink): still in use
        alias = tmp_path / "alias"
        alias.symlink_to(tmp_path / "cache")
        aliased = cli(
            "worker", "gc", "--cache-dir", str(alias), "--max-size", "0", "--max-age", "0s"
        )
        assert aliased.returncode == 0, aliased.stderr
        assert "in use by 1 running task(s)" in aliased.stdout
        assert (folder / "current").exists()
    finally:
        release.touch()
        output, _ = task.communicate(timeout=60)
    assert task.returncode == 0, output[-4000:]
    assert cache_outcomes(output) == ["hit"]

    freed = _gc(cli, tmp_path, "--max-size", "0")
    assert freed.returncode == 0, freed.stderr
    assert f"removed {folder.name} (" in freed.stdout
    assert not list(folder.glob("env-*"))
