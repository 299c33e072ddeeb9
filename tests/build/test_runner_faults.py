"""The local runner under faults and hostile input, as a real ``dkist-processing-core run`` process.

Real signals to the runner's PID (SIGKILL too), a real ``| head -1`` pipeline, a task line of
100 MiB, names that start with ``-``, a relative ``--log-dir``, a log folder on a real 2 MiB tmpfs,
a process left behind holding a task's output; what is left of a run is looked for with ``ps``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from dkist_processing_core.isb import FAILURE_ROUTING_KEY
from helpers.build_cli import EXAMPLE_PACKAGE
from helpers.build_cli import FAILING_PACKAGE
from helpers.build_cli import HOSTILE_PACKAGE
from helpers.build_cli import cli_command
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import delete_names
from helpers.rabbitmq import require_rabbitmq
from helpers.rabbitmq import unique_names
from helpers.small_disk import small_disk_command

SPAWNERS = ("SpawnerA", "SpawnerB")


def summary_states(stdout: str) -> dict[str, str]:
    start = stdout.index("Summary of ")
    states = {}
    for line in stdout[start:].splitlines()[1:]:
        if match := re.match(r"  (success|failed|skipped)\s+(\S+)\s+\S+( s)?(  \((.*)\))?$", line):
            states[match.group(2)] = f"{match.group(1)} {match.group(5) or ''}".strip()
    return states


def processes_with(marker: str) -> list[str]:
    """``ps`` lines of live processes whose command line holds ``marker``."""
    listing = subprocess.run(
        ["ps", "-e", "-ww", "-o", "pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line
        for line in listing.splitlines()
        if marker in line and not line.split()[1].startswith("Z")
    ]


def test_a_relative_log_dir_gives_the_failure_report_an_absolute_file_uri(cli, tmp_path):
    require_rabbitmq()
    names = replace(unique_names("build-relative"), routing_key=FAILURE_ROUTING_KEY)
    declare_queue(names)
    try:
        result = cli(
            "run",
            FAILING_PACKAGE,
            "--recipe-run-id",
            "51",
            "--log-dir",
            "logs",  # relative to the working folder
            ISB_EXCHANGE=names.exchange,
            ISB_PUBLISH_TIMEOUT="20",
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Failing_Demo_dev FAILED: 2 succeeded, 1 failed, 2 skipped" in result.stdout
        assert "[runner] failure report of Boom published on the interservice bus" in result.stdout
        (delivery,) = consume_all(names.queue, expected=1)
        log = cli.cwd / "logs" / "Boom.log"
        assert delivery.json()["logUrl"] == log.as_uri()
        assert "RuntimeError: Boom fails on purpose" in log.read_text()
        assert f"Task logs: {cli.cwd / 'logs'}" in result.stdout
        assert "Traceback" not in result.stderr
    finally:
        delete_names(names)


@pytest.mark.parametrize(
    ("signum", "status", "stubborn"),
    [(signal.SIGINT, 130, False), (signal.SIGHUP, 129, False), (signal.SIGTERM, 143, True)],
    ids=["SIGINT", "SIGHUP", "SIGTERM-stubborn-grandchild"],
)
def test_a_signal_to_the_runner_stops_every_process_of_every_task(
    cli, scratch, tmp_path, signum, status, stubborn
):
    marker = f"dkist-runner-test-{uuid.uuid4().hex}"
    env = {**cli.env, "BUILD_FIXTURE_MARKER": marker}
    if stubborn:
        env["BUILD_FIXTURE_STUBBORN"] = "1"
    command = [*cli_command(), "run", HOSTILE_PACKAGE, "Hostile_Spawning", "--recipe-run-id", "52"]
    command += ["--jobs", "2", "--log-dir", str(tmp_path / "logs"), "--no-failure-report"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # only for the clean-up below; the signal goes to the PID alone
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        give_up = time.monotonic() + 120
        while not all((scratch / f"{task}.ready").exists() for task in SPAWNERS):
            assert process.poll() is None and time.monotonic() < give_up, "".join(lines)
            time.sleep(0.1)
        assert len(processes_with(marker)) == 4  # a child and a grandchild per task

        process.send_signal(signum)
        stderr = process.stderr.read()
        process.wait(timeout=120)
        reader.join(10)
        survivors = processes_with(marker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for line in processes_with(marker):  # never leave them to the other tests
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        process.wait()
    stdout = "".join(lines)
    assert process.returncode == status, stdout + stderr
    assert not survivors, "left running:\n" + "\n".join(survivors)
    name = signal.Signals(signum).name
    assert f"[runner] interrupted: stopping the running tasks ({name})" in stdout
    states = summary_states(stdout)
    assert states["NeverRuns"].startswith("skipped")
    if stubborn:
        # SpawnerA's grandchild ignores the signal: it is killed after the grace period.
        assert states["SpawnerA"].startswith("failed") and "killed" in states["SpawnerA"]
        assert states["SpawnerB"].startswith("failed") and "interrupted" in states["SpawnerB"]
    else:
        # Everything ended on the forwarded signal: nothing had to wait for the grace period.
        assert all(
            "interrupted" in states[task] and "killed" not in states[task] for task in SPAWNERS
        )
    assert "Hostile_Spawning_dev interrupted: 0 succeeded, 2 failed, 1 skipped" in stdout
    assert f"stopped by {name}" in stdout
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("package", "workflow", "status"),
    [(EXAMPLE_PACKAGE, "My_Workflow", 0), (FAILING_PACKAGE, "Failing_Demo", 1)],
    ids=["succeeds", "fails"],
)
def test_run_piped_into_head_exits_with_the_status_of_the_run(
    cli, tmp_path, package, workflow, status
):
    command = [*cli_command(), "run", package, workflow, "--recipe-run-id", "53"]
    command += ["--log-dir", str(tmp_path / "logs"), "--no-failure-report"]
    result = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | head -1', "bash", *command],
        env=cli.env,
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == status, result.stdout + result.stderr
    assert result.stdout.startswith("[runner] running ") and result.stdout.count("\n") == 1
    assert "BrokenPipeError" not in result.stderr and "Exception ignored" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "dkist-processing-core: the summary was not printed: standard output is closed"
    ]


def test_a_100_mib_line_without_newline_costs_the_runner_little_memory(cli, tmp_path):
    # The runner's peak RSS, and its tasks' (the task writes 1 MiB at a time): max over children.
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    log_dir = tmp_path / "logs"
    command = [*cli_command(), "run", HOSTILE_PACKAGE, "Hostile_LongLine", "--recipe-run-id", "54"]
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command, "--log-dir", str(log_dir)],
        env=cli.env,
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    code, peak_kib = (int(value) for value in result.stdout.split())
    assert code == 0, result.stderr
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB for a 100 MiB line"
    log = (log_dir / "LongLine.log").read_bytes()
    assert b"x" * (100 << 20) + b"\nLongLine done\n" in log  # the log keeps every byte


def test_the_terminal_gets_a_clipped_long_line_and_the_log_all_of_it(cli, tmp_path):
    log_dir = tmp_path / "logs"
    result = cli(
        "run",
        HOSTILE_PACKAGE,
        "Hostile_LongLine",
        "--recipe-run-id",
        "55",
        "--log-dir",
        str(log_dir),
    )
    assert result.returncode == 0, result.stderr
    (clipped,) = [line for line in result.stdout.splitlines() if line.startswith("[LongLine] xxx")]
    assert len(clipped) < 70_000
    assert clipped.endswith(f"... ({(100 << 20) - 65536} more bytes in {log_dir / 'LongLine.log'})")
    assert "[LongLine] LongLine done" in result.stdout


def test_a_workflow_name_and_version_starting_with_a_dash_reach_the_task(cli, tmp_path):
    result = cli(
        "run",
        "build_fixture_hostile.workflows.dashed",
        "--recipe-run-id",
        "56",
        "--log-dir",
        str(tmp_path / "logs"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[Dashed] Dashed ran as -dash_-name -1.0" in result.stdout


def processes_with_variable(marker: str) -> list[str]:
    """Live processes with ``marker`` in their environment (every process a run starts has it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker.encode() in environ and "\nState:\tZ" not in status:
            found.append(f"{pid} {command[:200]}")
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_to_the_airflow_engine_stops_every_process_it_started(cli, tmp_path, signum):
    # SIGTERM: the runner stops its child's group; SIGKILL: the child's guard does (issue 22 item 9;
    # without the guard this passed too: the Airflow child ended within seconds anyway, most likely
    # on writing to its closed output, which a quiet local task never does).
    marker = f"DKIST_RUNNER_TEST_{uuid.uuid4().hex}"
    command = [*cli_command(), "run", EXAMPLE_PACKAGE, "l0_to_l1_example", "--recipe-run-id", "57"]
    process = subprocess.Popen(
        [*command, "--engine", "airflow"],
        env={**cli.env, marker: "1", "BUILD_VERSION": "1.0.0", "DKIST_EXAMPLE_TASK_SLEEP": "600"},
        cwd=cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # only for the clean-up below; the signal goes to the PID alone
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        give_up = time.monotonic() + 600
        # Wait for the first task's worker program, started by Airflow's dag.test() in the child.
        while not any(
            "-m dkist_processing_core.worker run" in p for p in processes_with_variable(marker)
        ):
            assert process.poll() is None and time.monotonic() < give_up, "".join(lines)
            time.sleep(0.2)

        process.send_signal(signum)
        stderr = process.stderr.read()
        process.wait(timeout=120)
        # SIGTERM: nothing is left when the runner exits; SIGKILL: the guard needs a moment.
        give_up = time.monotonic() + (10 if signum == signal.SIGKILL else 0)
        while processes_with_variable(marker) and time.monotonic() < give_up:
            time.sleep(0.1)
        survivors = processes_with_variable(marker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for line in processes_with_variable(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        process.wait()
    reader.join(10)
    # A SIGKILLed runner cannot remove its temporary folder: the test does.
    for folder in re.findall(r"^\[runner\] exported \S+ to (\S+)/dags;", "".join(lines), re.M):
        shutil.rmtree(folder, ignore_errors=True)
    assert process.returncode == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
    assert not survivors, "left running:\n" + "\n".join(survivors)
    if signum == signal.SIGTERM:
        assert "dkist-processing-core: interrupted" in stderr, "".join(lines) + stderr
    assert "Traceback" not in stderr


def kill_what_is_left(process: subprocess.Popen[str], marker: str) -> None:
    """Never leave a run to the other tests: the test's group, then every process with ``marker``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for line in processes_with_variable(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def run_to_the_end(
    command: list[str], env: dict[str, str], cwd: Path, marker: str, timeout: float
) -> tuple[int, str, str]:
    """Run ``command`` (every process it starts gets ``marker`` in its environment); fail the test
    if it has not ended after ``timeout`` seconds, showing the end of its output."""
    process = subprocess.Popen(
        command,
        env={**env, marker: "1"},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # only for the clean-up
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_what_is_left(process, marker)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(
            f"the run had not ended after {timeout:g} s:\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    finally:
        kill_what_is_left(process, marker)
        process.wait()
    return process.returncode, stdout, stderr


# ---------------------------------------------------------------- a full log folder (issue 22 item 1)

# Copies the files of $2 into the log folder $1, runs the rest of the arguments and copies the
# folder out to $3 (the log folder is a tmpfs that only this command sees, gone with it).
_WITH_LOGS_COPIED_OUT = """
logs=$1 before=$2 after=$3
shift 3
cp -a "$before/." "$logs/"
"$@"
status=$?
cp -a "$logs/." "$after/"
exit $status
"""


def test_a_full_log_folder_truncates_the_log_with_a_line_saying_so_and_the_run_ends(cli, tmp_path):
    logs, before, after = tmp_path / "logs", tmp_path / "before", tmp_path / "after"
    for folder in (logs, before, after):
        folder.mkdir()
    (before / "earlier.log").write_text("the log of an earlier run\n")
    run = [*cli_command(), "run", HOSTILE_PACKAGE, "Hostile_Flood", "--recipe-run-id", "58"]
    run += ["--log-dir", str(logs), "--no-failure-report"]
    copying = ["sh", "-c", _WITH_LOGS_COPIED_OUT, "sh", str(logs), str(before), str(after), *run]
    command = small_disk_command(logs, "2m", copying)  # fails the test where it cannot mount
    marker = f"DKIST_RUNNER_TEST_{uuid.uuid4().hex}"
    status, stdout, stderr = run_to_the_end(command, cli.env, cli.cwd, marker, timeout=180)

    assert status == 0, stdout[-3000:] + stderr
    # Nothing the task printed is lost: the terminal shows every line.
    flood = [line for line in stdout.splitlines() if line.startswith("[Flood] flood line ")]
    assert len(flood) == 40_000 and flood[-1].startswith("[Flood] flood line 00039999 ")
    assert "[Flood] Flood done" in stdout and "[AfterFlood] AfterFlood ran" in stdout
    states = summary_states(stdout)
    assert states["Flood"].startswith("success") and "log truncated" in states["Flood"]
    assert states["AfterFlood"].startswith("success")
    assert "Hostile_Flood_dev succeeded: 2 succeeded, 0 failed" in stdout
    assert re.search(r"\[runner\] cannot write the log of Flood .*No space left on device", stdout)
    # The log has what fitted, in order, and ends with a line that says it was truncated.
    log = (after / "Flood.log").read_text()
    lines = log.splitlines()
    assert lines[0].startswith("--- Flood attempt 1 ")
    kept = [line for line in lines if line.startswith("flood line ")]
    assert kept == [f"flood line {number:08d} {'x' * 79}" for number in range(len(kept))]
    assert 5_000 < len(kept) < 21_000  # about 2 MiB of 100-byte lines
    assert lines[-1].startswith("--- log truncated by the runner: ")
    assert "No space left on device" in lines[-1]
    # Nothing else in the folder is lost.
    assert (after / "earlier.log").read_text() == "the log of an earlier run\n"
    assert "Traceback" not in stderr


# ------------------------------------ a process left behind holding a task's output (issue 22 item 4)


def summary_durations(stdout: str) -> dict[str, float]:
    start = stdout.index("Summary of ")
    found = re.findall(r"^  \w+\s+(\S+)\s+([\d.]+) s", stdout[start:], re.MULTILINE)
    return {task: float(seconds) for task, seconds in found}


@pytest.mark.parametrize("escape", [False, True], ids=["in-its-group", "outside-its-group"])
def test_a_task_that_leaves_a_process_holding_its_output_is_reported_when_it_ends(
    cli, tmp_path, escape
):
    # Leaver returns after 0.5 s; the process it leaves behind would hold its output for 120 s.
    marker = f"dkist-runner-test-{uuid.uuid4().hex}"
    env = {**cli.env, "BUILD_FIXTURE_MARKER": marker}
    if escape:
        env["BUILD_FIXTURE_ESCAPE"] = "1"
    command = [*cli_command(), "run", HOSTILE_PACKAGE, "Hostile_Leaving", "--recipe-run-id", "59"]
    command += ["--log-dir", str(tmp_path / "logs"), "--no-failure-report"]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # only for the clean-up
    )
    try:
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the run had not ended after 60 s: it waits for the process left behind")
        took = time.monotonic() - started
        left = processes_with(marker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for line in processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, stdout + stderr
    assert "[Leaver] leftover up" in stdout  # what it wrote while the task ran is kept
    assert "[AfterLeaver] AfterLeaver ran" in stdout
    states = summary_states(stdout)
    assert states["AfterLeaver"] == "success"
    assert summary_durations(stdout)["Leaver"] < 10, stdout
    assert took < 50, f"the run took {took:.0f} s"
    log = (tmp_path / "logs" / "Leaver.log").read_text()
    assert "leftover up" in log
    if escape:
        # Outside the task's process group the runner cannot end it; it stops reading after a bound.
        assert len(left) == 1, left
        assert states["Leaver"].startswith("success") and "output cut" in states["Leaver"]
        assert "--- output no longer read by the runner: " in log
    else:
        assert not left, "left running:\n" + "\n".join(left)  # ended with the task's group
        assert states["Leaver"] == "success"
    assert "Traceback" not in stderr


# ------------------------------------------------ SIGKILL of the runner (issue 22 item 9)


def test_sigkill_of_the_runner_takes_every_process_of_its_tasks_with_it(cli, scratch, tmp_path):
    marker = f"dkist-runner-test-{uuid.uuid4().hex}"
    env = {**cli.env, "BUILD_FIXTURE_MARKER": marker, "BUILD_FIXTURE_STUBBORN": "1"}
    env["BUILD_FIXTURE_TICKS"] = "1"  # every grandchild writes to a file every 50 ms
    command = [*cli_command(), "run", HOSTILE_PACKAGE, "Hostile_Spawning", "--recipe-run-id", "60"]
    command += ["--jobs", "2", "--log-dir", str(tmp_path / "logs"), "--no-failure-report"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # only for the clean-up below; SIGKILL goes to the PID alone
    )
    ticks = scratch / "ticks"
    try:
        give_up = time.monotonic() + 120
        while not (
            all((scratch / f"{task}.ready").exists() for task in SPAWNERS)
            and len(list(ticks.glob("*"))) == 2
        ):
            assert process.poll() is None and time.monotonic() < give_up, "the tasks did not start"
            time.sleep(0.1)
        assert len(processes_with(marker)) == 4  # a child and a grandchild per task

        process.kill()
        process.wait(timeout=30)
        give_up = time.monotonic() + 10
        while processes_with_variable(marker) and time.monotonic() < give_up:
            time.sleep(0.1)
        survivors = processes_with_variable(marker)
        sizes = {path: path.stat().st_size for path in ticks.iterdir()}
        time.sleep(1.0)
        grown = [path.name for path, size in sizes.items() if path.stat().st_size != size]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for line in processes_with_variable(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        process.wait()
    # Every process of every task died with the runner (within 10 s), and none is still writing.
    assert not survivors, "left running:\n" + "\n".join(survivors)
    assert not grown, f"still writing after the runner died: {grown}"
