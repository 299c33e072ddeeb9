"""The per-version venv cache of the worker program, with real installs from a local wheelhouse.

Each test runs the exported command (``bash -c WORKER_COMMAND``) the way an Airflow worker runs a
BashOperator: python3 is this interpreter, uv is on PATH or not, the pipeline is the example at 1.0.0/2.0.0
from ``example_wheelhouse`` (offline). The Airflow-level runs are in ``test_dag_run.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dkist_processing_core.worker import WORKER_COMMAND
from dkist_processing_core.worker import _cache as worker_cache
from dkist_processing_core.worker import read_events
from dkist_processing_core.worker._digest import stat_digest
from dkist_processing_core.worker._install import interpreter_facts
from helpers.small_disk import small_disk_command
from helpers.worker_script import EXAMPLE_REQUIREMENT
from helpers.worker_script import cache_outcomes
from helpers.worker_script import installers_used
from helpers.worker_script import run_script
from helpers.worker_script import script_env
from helpers.worker_script import start_script


def _env(
    tmp_path: Path, wheelhouse: Path, installer: str, version: str = "1.0.0", **more: str
) -> dict[str, str]:
    values = dict(
        DKIST_REQUIREMENT=EXAMPLE_REQUIREMENT.format(version=version),
        DKIST_TASK="dkist_processing_example.tasks.MyTask1",
        DKIST_VENV_CACHE_DIR=str(tmp_path / "cache"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheelhouse),
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
    )
    values.update(more)
    return script_env(tmp_path, installer, **values)


def _root(tmp_path: Path) -> Path:
    return tmp_path / "cache" / worker_cache.LAYOUT


def _entries(tmp_path: Path) -> dict[str, list[str]]:
    """Key folder -> its env-*/aside-* folders."""
    root = _root(tmp_path)
    return {
        folder.name: sorted(
            child.name for child in folder.iterdir() if child.name.startswith(("env-", "aside-"))
        )
        for folder in worker_cache.key_folders(root)
    }


def _current(tmp_path: Path) -> Path:
    (folder,) = worker_cache.key_folders(_root(tmp_path))
    return folder / os.readlink(folder / "current")


def _ok(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Running MyTask1" in output
    assert [fields for event, fields in read_events(output) if event == "exit"] == [
        {"task": "MyTask1", "status": 0, "seconds": pytest.approx(0, abs=600)}
    ]
    return output


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_tasks_of_one_version_build_once_and_never_write_to_the_entry(
    tmp_path, example_wheelhouse, installer
):
    env = _env(tmp_path, example_wheelhouse, installer)
    first = _ok(run_script(env))
    assert cache_outcomes(first) == ["built"] and installers_used(first) == [installer]
    assert first.count("building the cached environment") == 1
    entry = _current(tmp_path)
    marker = json.loads((entry / worker_cache.MARKER).read_text())
    assert marker["installer"] == installer
    assert "dkist-processing-example==1.0.0" in marker["distributions"]
    assert list(entry.rglob("*.pyc")), "the entry is byte-compiled when it is built"
    before = stat_digest(entry, worker_cache.MARKER)

    for _ in range(2):
        again = _ok(run_script(env))
        assert cache_outcomes(again) == ["hit"] and installers_used(again) == ["none"]
        assert "building the cached environment" not in again
        assert "dkist-processing-example==1.0.0" in again  # the listing comes from the marker
    assert (
        stat_digest(entry, worker_cache.MARKER) == before
    )  # PYTHONDONTWRITEBYTECODE: nothing written
    assert _entries(tmp_path) == {entry.parent.name: [entry.name]}
    assert list((tmp_path / "tmp").iterdir()) == []  # scratch folders removed
    assert list((_root(tmp_path) / "holds").iterdir()) == []  # hold files removed


def test_a_second_version_gets_its_own_entry(tmp_path, example_wheelhouse):
    for version in ("1.0.0", "2.0.0", "1.0.0"):
        _ok(run_script(_env(tmp_path, example_wheelhouse, "uv", version)))
    entries = _entries(tmp_path)
    assert len(entries) == 2 and all(len(envs) == 1 for envs in entries.values()), entries
    assert sorted(name.split("-py")[0] for name in entries) == [
        "dkist-processing-example-1.0.0",
        "dkist-processing-example-2.0.0",
    ]


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_eight_tasks_started_at_once_all_succeed_and_build_once(
    tmp_path, example_wheelhouse, installer
):
    env = _env(tmp_path, example_wheelhouse, installer)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: run_script(env), range(8)))
    outputs = [_ok(result) for result in results]
    outcomes = sorted(outcome for output in outputs for outcome in cache_outcomes(output))
    assert outcomes == ["built"] + ["hit"] * 7, outcomes
    assert sum(output.count("building the cached environment") for output in outputs) == 1
    assert len(next(iter(_entries(tmp_path).values()))) == 1


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            try:
                command = (
                    (Path("/proc") / str(child) / "cmdline")
                    .read_bytes()
                    .replace(b"\0", b" ")
                    .decode()
                )
            except OSError:
                continue
            found.append((child, command))
            pending.append(child)
    return found


def _kill_all(pids: list[int]) -> None:
    """Freeze every process first, then kill them: none sees another die and reacts."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


@pytest.mark.parametrize("killed", ["installer", "task"])
def test_a_build_killed_half_way_is_never_used_and_the_next_task_rebuilds(
    tmp_path, example_wheelhouse, killed
):
    """The installer killed half-way (pip, and the pip that ``pip --python`` starts in the new
    venv): the task fails saying so and removes the half-built entry. The whole task killed (as
    Airflow kills a task's processes): the entry stays half-built, never published, and the next
    task removes it and builds its own."""
    env = _env(tmp_path, example_wheelhouse, "pip")
    process = start_script(env)
    deadline = time.monotonic() + 120
    half = None
    while half is None and process.poll() is None and time.monotonic() < deadline:
        below = _descendants(process.pid)
        installing = [pid for pid, command in below if "pip" in command and " install " in command]
        entry = next(_root(tmp_path).glob("*/env-*"), None)
        if installing and entry is not None and list(entry.glob("lib/python*/site-packages/*")):
            _kill_all(installing if killed == "installer" else [process.pid, *dict(below)])
            half = entry
        time.sleep(0.02)
    output, _ = process.communicate(timeout=120)
    assert half is not None, f"never saw pip installing:\n{output[-4000:]}"
    assert process.returncode != 0
    assert "Running MyTask1" not in output
    assert not (half.parent / "current").exists(), "a half-built entry must never be published"
    if killed == "installer":
        assert "pip install was killed by signal 9" in output
        assert not half.exists(), "the worker removes what its installer left half-built"
    else:
        assert half.is_dir() and not (half / worker_cache.MARKER).exists()

    again = _ok(run_script(env))
    assert cache_outcomes(again) == ["built"]
    assert not half.exists(), "the half-built folder is removed by the next build"
    assert _current(tmp_path) != half


@pytest.mark.parametrize("damage", ["tampered", "half-built", "foreign"])
def test_a_damaged_entry_is_set_aside_and_rebuilt_never_used(tmp_path, example_wheelhouse, damage):
    env = _env(tmp_path, example_wheelhouse, "uv")
    _ok(run_script(env))
    entry = _current(tmp_path)
    imported = tmp_path / "tampered-code-ran"
    if damage == "tampered":
        (module,) = entry.glob("lib/python*/site-packages/dkist_processing_example/tasks.py")
        with module.open("a") as stream:
            stream.write(f"\nopen({str(imported)!r}, 'w').close()\n")
        reason = "its files changed since it was built"
    elif damage == "half-built":
        (entry / worker_cache.MARKER).unlink()
        reason = "it has no completion marker (half-built)"
    else:
        marker = json.loads((entry / worker_cache.MARKER).read_text())
        marker["key"]["version"] = "9.9.9"
        (entry / worker_cache.MARKER).write_text(json.dumps(marker))
        reason = "its marker names another requirement or interpreter (foreign)"

    output = _ok(run_script(env))
    assert cache_outcomes(output) == ["rebuilt"]
    assert reason in output
    assert not imported.exists(), "code of a tampered entry must never run"
    assert not entry.exists()
    (aside,) = entry.parent.glob("aside-*")
    assert f"set aside as {aside}" in output
    assert _current(tmp_path) != entry
    assert cache_outcomes(_ok(run_script(env))) == ["hit"]


@pytest.mark.parametrize(
    ("version", "cached"),
    [
        ("1.0.0", True),
        ("2.1rc1", True),
        ("1.0.post2", True),
        ("1!2.0", True),
        ("dev", False),
        ("1.0.0.dev3", False),
        ("1.0.0+local", False),
        ("1.0.0-dev", False),
        ("latest", False),
    ],
)
def test_only_public_release_versions_are_cached(version, cached):
    interpreter = interpreter_facts(sys.executable)
    key = worker_cache.cache_key(f"dkist-processing-x[frozen,GPU]=={version}", interpreter)
    assert (key is not None) == cached
    if key is not None:
        assert key["extras"] == ["frozen", "gpu"]
        assert key["distribution"] == "dkist-processing-x"


def test_a_dev_version_installs_into_a_throw_away_venv(tmp_path, example_wheelhouse):
    env = _env(tmp_path, example_wheelhouse, "uv", "1.0.0.dev0")
    result = run_script(env)
    output = result.stdout + result.stderr
    assert "is not cached: only public release versions are" in output
    assert result.returncode != 0  # the wheelhouse has no such version
    assert list((_root(tmp_path)).glob("*/env-*")) == [] if _root(tmp_path).exists() else True
    assert list((tmp_path / "tmp").iterdir()) == []


def _worker(tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 120):
    """``python -m dkist_processing_core.worker ARGS`` with the cache of ``_env``."""
    return subprocess.run(
        [sys.executable, "-m", "dkist_processing_core.worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_change_that_keeps_size_and_mtime_is_found_by_verify_and_never_served_again(
    tmp_path, example_wheelhouse
):
    """Issue 22 item 3: a start checks sizes and times only; verify reads every byte."""
    env = _env(tmp_path, example_wheelhouse, "uv")
    _ok(run_script(env))
    entry = _current(tmp_path)
    (module,) = entry.glob("lib/python*/site-packages/dkist_processing_example/tasks.py")
    before = module.stat()
    text = module.read_bytes()
    damaged = text.replace(b"Running", b"Runnin!", 1)  # one byte: as a bad disk block would
    assert damaged != text and len(damaged) == len(text)
    module.write_bytes(damaged)
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))

    clean = _worker(tmp_path, env, "verify", "--cache-dir", str(tmp_path / "cache"))
    events = list(read_events(clean.stdout))
    assert clean.returncode == 1, clean.stdout + clean.stderr
    (verdict,) = [fields for event, fields in events if event == "verify"]
    assert verdict["outcome"] == "damaged"
    assert any(
        path.endswith("dkist_processing_example/tasks.py") for path in verdict["damaged_files"]
    )
    assert ("verify-summary", {"checked": 1, "damaged": 1}) == (
        events[-1][0],
        {key: events[-1][1][key] for key in ("checked", "damaged")},
    )
    assert not entry.exists() and list(entry.parent.glob("aside-*")), "set aside, never served"

    again = _ok(run_script(env))
    assert cache_outcomes(again) == ["built"] and _current(tmp_path) != entry
    healthy = _worker(tmp_path, env, "verify", "--cache-dir", str(tmp_path / "cache"))
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert [f["outcome"] for e, f in read_events(healthy.stdout) if e == "verify"] == ["ok"]


def test_a_fifo_in_holds_blocks_neither_a_build_nor_gc(tmp_path, example_wheelhouse):
    """Issue 22 item 8: nothing in holds/ that is not a regular file is ever opened."""
    env = _env(tmp_path, example_wheelhouse, "uv")
    holds = _root(tmp_path) / "holds"
    holds.mkdir(parents=True)
    os.mkfifo(holds / "planted-fifo")
    (holds / "planted-link").symlink_to(holds / "planted-fifo")
    output = _ok(run_script(env, timeout=120))  # used to block on the FIFO for ever
    assert cache_outcomes(output) == ["built"]
    assert cache_outcomes(_ok(run_script(env, timeout=120))) == ["hit"]
    gc = _worker(tmp_path, env, "gc", "--cache-dir", str(tmp_path / "cache"), "--max-age", "7d")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert sorted(path.name for path in holds.iterdir()) == [], "gc removes what is not a hold"


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_full_cache_disk_falls_back_to_a_throw_away_venv_and_leaves_nothing(
    tmp_path, example_wheelhouse, installer
):
    """Issue 22 item 7: the task runs anyway; no half-built entry or temporary file stays behind."""
    env = _env(tmp_path, example_wheelhouse, installer, DKIST_TEST_COMMAND=WORKER_COMMAND)
    cache = tmp_path / "cache"
    cache.mkdir()
    # The task's command, then (still inside the namespace that sees the small disk) what is left.
    then_list = (
        'bash -c "$DKIST_TEST_COMMAND"; s=$?; find "$0" -mindepth 1 -printf "LEFT %P\\n"; exit $s'
    )
    result = subprocess.run(
        small_disk_command(cache, "6m", ["bash", "-c", then_list, str(cache)]),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = _ok(result)
    assert cache_outcomes(output) == ["error"], output[-4000:]
    notes = [f["message"] for e, f in read_events(output) if e == "note"]
    assert any("the cache's disk is full" in note for note in notes), notes
    (setup,) = [f for e, f in read_events(output) if e == "setup"]
    assert not str(setup["venv"]).startswith(str(cache)), "a throw-away venv outside the cache"
    left = sorted(
        line.removeprefix("LEFT ")
        for line in result.stdout.splitlines()
        if line.startswith("LEFT ")
    )
    fixed = ["venvs-v1/holds", "venvs-v1/interpreters"]
    facts = [name for name in left if name.startswith("venvs-v1/interpreters/")]
    keys = [name for name in left if name.count("/") == 1 and name not in fixed]
    expected = ["venvs-v1", *fixed, *facts, *keys, *(f"{key}/lock" for key in keys)]
    assert len(keys) == 1 and len(facts) == 1, f"left on the full disk: {left}"
    assert left == sorted(expected), f"left on the full disk: {left}"
    assert list((tmp_path / "tmp").iterdir()) == []  # scratch removed
