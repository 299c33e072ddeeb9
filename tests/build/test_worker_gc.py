"""``dkist-processing-core worker gc``: eviction from a worker's venv cache built by the real worker.

Entries are built by the worker program run as an exported task runs it (uv, the example pipeline
from a local wheelhouse); a running task that holds an entry is a real task process that waits for
a file. What gc did is read from its events (``gc`` per entry, one ``gc-summary``), which the
core-build CLI and ``python -m dkist_processing_core.worker gc`` print alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dkist_processing_core.worker import _cache as worker_cache
from dkist_processing_core.worker import read_events
from helpers.worker_script import EXAMPLE_REQUIREMENT
from helpers.worker_script import cache_outcomes
from helpers.worker_script import run_script
from helpers.worker_script import script_env
from helpers.worker_script import start_script

DAY = 86400


def _env(tmp_path: Path, wheelhouse: Path, version: str = "1.0.0", **more: str) -> dict[str, str]:
    values = dict(
        DKIST_REQUIREMENT=EXAMPLE_REQUIREMENT.format(version=version),
        DKIST_TASK="dkist_processing_example.tasks.MyTask1",
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


def _actions(output: str) -> list[tuple[str, str, str]]:
    """(action, entry, reason) of every ``gc`` event, in order."""
    return [
        (str(fields["action"]), str(fields["entry"]), str(fields["reason"]))
        for event, fields in read_events(output)
        if event == "gc"
    ]


def _summary(output: str) -> dict[str, object]:
    (summary,) = [fields for event, fields in read_events(output) if event == "gc-summary"]
    return summary


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
    assert _actions(result.stdout) == [
        ("nothing", str(tmp_path / "cache"), "no venv cache (venvs-v1) yet")
    ]
    assert _summary(result.stdout) == {
        "entries": 0,
        "size_before": 0,
        "removed": 0,
        "removed_size": 0,
        "size_after": 0,
        "in_use": 0,
        "busy": 0,
        "errors": 0,
        "dry_run": False,
    }


def test_max_age_and_max_size_evict_least_recently_used_first(cli, tmp_path, example_wheelhouse):
    old = _build(tmp_path, example_wheelhouse, "1.0.0")
    new = _build(tmp_path, example_wheelhouse, "2.0.0")
    _age(old, 10)
    _age(new, 1)

    dry = _gc(cli, tmp_path, "--max-age", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    ((action, entry, reason),) = _actions(dry.stdout)
    assert (action, entry) == ("would remove", old.name)
    assert reason.startswith("not used for longer than 7.0 days (last used ")
    assert _summary(dry.stdout)["dry_run"] is True
    assert (old / "current").exists()  # nothing removed
    # the worker program's own gc (what a worker's cron runs) says the same
    module = subprocess.run(
        [sys.executable, "-P", "-m", "dkist_processing_core.worker", "gc"]
        + ["--cache-dir", str(tmp_path / "cache"), "--max-age", "7d", "--dry-run"],
        env=cli.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert module.returncode == 0, module.stdout + module.stderr
    assert list(read_events(module.stdout)) == list(read_events(dry.stdout))

    aged = _gc(cli, tmp_path, "--max-age", "7d")
    assert aged.returncode == 0, aged.stderr
    assert [(action, entry) for action, entry, _ in _actions(aged.stdout)] == [
        ("removed", old.name)
    ]  # and nothing about the new entry
    assert not (old / "current").exists() and not list(old.glob("env-*"))
    assert (new / "current").exists()
    summary = _summary(aged.stdout)
    assert (summary["entries"], summary["removed"], summary["dry_run"]) == (2, 1, False)
    assert summary["size_after"] == summary["size_before"] - summary["removed_size"] > 0

    # the evicted version is simply built again by its next task
    rebuilt = run_script(_env(tmp_path, example_wheelhouse, "1.0.0"))
    assert cache_outcomes(rebuilt.stdout) == ["built"]
    _age(old, 3)
    _age(new, 2)
    sized = _gc(cli, tmp_path, "--max-size", "1K")
    assert sized.returncode == 0, sized.stderr
    removed = [(entry, reason) for action, entry, reason in _actions(sized.stdout)]
    assert [entry for entry, _ in removed] == [old.name, new.name]  # least recently used first
    assert all(reason.startswith("the cache is over 1.0 KiB") for _, reason in removed)
    assert {action for action, _, _ in _actions(sized.stdout)} == {"removed"}


def test_broken_and_half_built_leftovers_go_first(cli, tmp_path, example_wheelhouse):
    folder = _build(tmp_path, example_wheelhouse, "1.0.0")
    current = folder / os.readlink(folder / "current")
    (current / worker_cache.MARKER).unlink()  # the next task sets it aside and rebuilds
    assert cache_outcomes(run_script(_env(tmp_path, example_wheelhouse)).stdout) == ["rebuilt"]
    (aside,) = folder.glob("aside-*")
    half = folder / "env-0123456789ab"
    (half / "lib").mkdir(parents=True)  # a build that died before its marker

    result = _gc(cli, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(_actions(result.stdout)) == sorted(
        [
            ("removed", f"{folder.name}/{aside.name}", "set aside as broken"),
            ("removed", f"{folder.name}/{half.name}", "not published (half-built or superseded)"),
        ]
    )
    assert not aside.exists() and not half.exists()
    assert (folder / "current").exists()
    assert cache_outcomes(run_script(_env(tmp_path, example_wheelhouse)).stdout) == ["hit"]


def _held_not_removed(output: str, folder: Path, cache_dir: Path) -> None:
    """gc kept the entry a running task holds, removed nothing, and says the rest is in use."""
    actions = _actions(output)
    kept = [reason for action, entry, reason in actions if (action, entry) == ("kept", folder.name)]
    assert kept and all(reason.startswith("in use by 1 running task(s)") for reason in kept), (
        actions
    )
    (over,) = [(entry, reason) for action, entry, reason in actions if action == "over"]
    assert over[0] == str(cache_dir) and over[1].endswith("over 0 B: the rest is in use")
    assert {action for action, _, _ in actions} == {"kept", "over"}, actions
    summary = _summary(output)
    assert (summary["in_use"], summary["removed"]) == (1, 0)


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
        DKIST_TASK="waiting_task.Waiting",
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
        _held_not_removed(held.stdout, folder, tmp_path / "cache")
        assert (folder / "current").exists()
        # the same cache under another spelling of its path (a symlink): still in use
        alias = tmp_path / "alias"
        alias.symlink_to(tmp_path / "cache")
        aliased = cli(
            "worker", "gc", "--cache-dir", str(alias), "--max-size", "0", "--max-age", "0s"
        )
        assert aliased.returncode == 0, aliased.stderr
        _held_not_removed(aliased.stdout, folder, alias)
        assert (folder / "current").exists()
    finally:
        release.touch()
        output, _ = task.communicate(timeout=60)
    assert task.returncode == 0, output[-4000:]
    assert cache_outcomes(output) == ["hit"]

    freed = _gc(cli, tmp_path, "--max-size", "0")
    assert freed.returncode == 0, freed.stderr
    assert [(action, entry) for action, entry, _ in _actions(freed.stdout)] == [
        ("removed", folder.name)
    ]
    assert not list(folder.glob("env-*"))
