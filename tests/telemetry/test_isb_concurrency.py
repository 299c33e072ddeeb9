"""Many failure callbacks in threads and processes share one outbox: count in = count out."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from dkist_processing_core.config import RetryConfig
from dkist_processing_core.failure_callback import chat_ops_notification
from dkist_processing_core.isb import flush_outbox
from dkist_processing_core.isb import publish
from dkist_processing_core.isb_outbox import Outbox
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import isb_target
from helpers.tcp_proxy import TcpProxy

BOUND = 2.0
SLACK = 3.0

# A separate process: N threads call the failure callback (or flush) on the given target and
# print what they did as JSON. Parameters arrive as one JSON argument.
CHILD = r"""
import json, sys, threading
from pathlib import Path
from dkist_processing_core.failure_callback import chat_ops_notification
from dkist_processing_core.config import RetryConfig
from dkist_processing_core.isb import IsbTarget, flush_outbox

p = json.loads(sys.argv[1])
target = IsbTarget(
    port=p["port"], exchange=p["exchange"], queue=p["queue"], routing_key=p["routing_key"],
    outbox_dir=Path(p["outbox"]), publish_timeout=p["bound"],
    retry=RetryConfig(retry_delay=0.05, retry_jitter=(0.0, 0.05), retry_max_delay=0.5),
)
out = [None] * p["threads"]

def work(i):
    if p["action"] == "flush":
        out[i] = flush_outbox(target).delivered
    else:
        result = chat_ops_notification(
            {"run_id": f"run-{i}"}, workflow_name="wf", workflow_version="v", task_name=f"T{i}",
            target=target,
        )
        out[i] = [result.message_id, result.delivered]

threads = [threading.Thread(target=work, args=(i,)) for i in range(p["threads"])]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
"""


def start_child(target, action: str, threads: int) -> subprocess.Popen:
    params = {
        "port": target.port,
        "exchange": target.exchange,
        "queue": target.queue,
        "routing_key": target.routing_key,
        "outbox": str(target.outbox_dir),
        "bound": target.publish_timeout,
        "threads": threads,
        "action": action,
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child_output(child: subprocess.Popen) -> list:
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def callback(target, i: int):
    return chat_ops_notification(
        {"run_id": f"run-{i}"},
        workflow_name="wf",
        workflow_version="v",
        task_name=f"T{i}",
        target=target,
    )


def test_threads_and_processes_against_a_stalled_broker_lose_nothing(names, tmp_path):
    with TcpProxy() as proxy:
        target = isb_target(names, tmp_path / "outbox", port=proxy.port, publish_timeout=BOUND)
        proxy.stall()

        children = [start_child(target, "report", threads=6) for _ in range(3)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            local = list(pool.map(lambda i: callback(target, i), range(12)))
        remote = [tuple(item) for child in children for item in child_output(child)]

        produced = {result.message_id for result in local} | {mid for mid, _ in remote}
        assert len(produced) == 12 + 18
        assert not any(result.delivered for result in local) and not any(ok for _, ok in remote)
        assert all(result.duration <= BOUND + SLACK for result in local)
        files = Outbox(target.outbox_dir).pending()
        stored = {json.loads(path.read_text())["body"]["conversationId"] for path in files}
        assert len(files) == len(produced) and stored == produced

        proxy.heal()
        # Drain from several threads and processes at once: claims keep them apart.
        flushers = [start_child(target, "flush", threads=2) for _ in range(2)]
        with ThreadPoolExecutor(max_workers=3) as pool:
            local_flushed = list(
                pool.map(lambda _: flush_outbox(target, timeout=30).delivered, range(3))
            )
        flushed = sum(local_flushed) + sum(sum(child_output(child)) for child in flushers)

    received = [
        d.json()["conversationId"] for d in consume_all(names.queue, expected=len(produced))
    ]
    assert set(received) == produced
    # Every file was claimed and deleted by exactly one drainer.
    assert flushed == len(produced) == len(received)
    assert Outbox(target.outbox_dir).pending() == []


def test_publishers_and_flushers_racing_on_a_healthy_broker(names, tmp_path):
    with TcpProxy() as proxy:
        # A backlog written while the broker refused connections.
        proxy.refuse()
        refused = isb_target(
            names, tmp_path / "outbox", port=proxy.port, retry=RetryConfig(retry_tries=1)
        )
        backlog = {
            publish({"conversationId": uuid.uuid4().hex, "n": n}, refused).message_id
            for n in range(40)
        }
        assert len(Outbox(refused.outbox_dir)) == 40
    target = isb_target(names, tmp_path / "outbox", publish_timeout=20.0)

    children = [start_child(target, "report", threads=5) for _ in range(3)]
    barrier = threading.Barrier(4)

    def local(i: int):
        barrier.wait()
        return flush_outbox(target).delivered if i % 2 else callback(target, i).message_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        local_results = list(pool.map(local, range(4)))
    remote = [tuple(item) for child in children for item in child_output(child)]

    produced = (
        backlog | {mid for mid, _ in remote} | {r for r in local_results if isinstance(r, str)}
    )
    assert len(produced) == 40 + 15 + 2
    assert all(ok for _, ok in remote)
    received = [
        d.json()["conversationId"] for d in consume_all(names.queue, expected=len(produced))
    ]
    assert set(received) == produced
    assert len(received) == len(produced), "a claimed file must be sent by one drainer only"
    assert Outbox(target.outbox_dir).pending() == []
