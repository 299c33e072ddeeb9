"""Failure reports on the interservice bus: nothing lost across a broker restart, bounded callbacks.

Run by hand (it stops and starts the local RabbitMQ application, which disturbs anything else
using the broker at that moment; keep the outage short)::

    python benchmarks/isb_restart.py                    # 1,000 reports, 3 s outage, stall figures
    python benchmarks/isb_restart.py --no-restart       # only the stalled-broker figures
    python benchmarks/isb_restart.py --json out.json

Part 1 sends ``--reports`` failure reports through ``chat_ops_notification`` from ``--workers``
threads (many Airflow workers failing at once) while ``rabbitmqctl stop_app`` / ``start_app``
restarts the broker when 30 % are done. Reports the broker did not confirm within the callback's
bound wait in the outbox; ``flush_outbox`` then sends them. The figure: distinct reports that
arrived on a queue of the benchmark's own, out of ``--reports`` (must be all).

Part 2 puts a TCP proxy that accepts and then stalls (``tests/helpers/tcp_proxy.py``) in front
of the broker and measures the worst callback duration, for the production bound (30 s, the
``ISB_PUBLISH_TIMEOUT`` default) and a short one, with ``--stall-callbacks`` callbacks at once,
both when the broker stalls at connect and when it stalls in the middle of the publish.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from dkist_processing_core.config import RetryConfig  # noqa: E402
from dkist_processing_core.failure_callback import chat_ops_notification  # noqa: E402
from dkist_processing_core.isb import IsbTarget  # noqa: E402
from dkist_processing_core.isb import PublishResult  # noqa: E402
from dkist_processing_core.isb import flush_outbox  # noqa: E402
from dkist_processing_core.isb_outbox import Outbox  # noqa: E402
from helpers.rabbitmq import consume_all  # noqa: E402
from helpers.rabbitmq import delete_names  # noqa: E402
from helpers.rabbitmq import unique_names  # noqa: E402
from helpers.tcp_proxy import TcpProxy  # noqa: E402

RETRY = RetryConfig(
    retry_delay=0.2, retry_backoff=2.0, retry_jitter=(0.0, 0.2), retry_max_delay=2.0
)


class _TaskInstance:
    def __init__(self, i: int) -> None:
        self.log_url = f"http://airflow.example/dags/bench/runs/run-{i}/tasks/T?try_number=1"


def _report(target: IsbTarget, i: int) -> tuple[PublishResult | None, float]:
    started = time.monotonic()
    result = chat_ops_notification(
        {"run_id": f"bench-run-{i}", "task_instance": _TaskInstance(i)},
        workflow_name="Bench_Workflow",
        workflow_version="v1",
        task_name=f"Task{i % 20}",
        target=target,
    )
    return result, time.monotonic() - started


def _rabbitmqctl(*args: str) -> float:
    started = time.monotonic()
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)
    return time.monotonic() - started


def _durations(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p99_s": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3),
        "max_s": round(ordered[-1], 3),
    }


def restart_run(
    reports: int, workers: int, bound: float, outage: float, restart: bool
) -> dict[str, Any]:
    names = unique_names("bench")
    outbox_dir = Path(tempfile.mkdtemp(prefix="isb-bench-outbox-"))
    target = IsbTarget(
        exchange=names.exchange,
        queue=names.queue,
        routing_key=names.routing_key,
        outbox_dir=outbox_dir,
        publish_timeout=bound,
        retry=RETRY,
    )
    done = 0
    done_lock = threading.Lock()
    restart_log: dict[str, float] = {}
    started = time.monotonic()

    def restarter() -> None:
        while True:
            with done_lock:
                if done >= reports * 0.3:
                    break
            time.sleep(0.01)
        restart_log["stop_at_report"] = done
        restart_log["stop_app_s"] = round(_rabbitmqctl("stop_app"), 2)
        time.sleep(outage)
        restart_log["start_app_s"] = round(_rabbitmqctl("start_app"), 2)
        restart_log["outage_s"] = round(
            restart_log["stop_app_s"] + outage + restart_log["start_app_s"], 2
        )

    def one(i: int) -> tuple[PublishResult | None, float]:
        nonlocal done
        outcome = _report(target, i)
        with done_lock:
            done += 1
        return outcome

    # The first report declares the queue, so reports sent during the outage have a home.
    first = _report(target, -1)
    assert first[0] is not None and first[0].delivered, "broker not reachable before the run"
    restart_thread = threading.Thread(target=restarter, daemon=True) if restart else None
    if restart_thread:
        restart_thread.start()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(one, range(reports)))
    if restart_thread:
        restart_thread.join()
    send_seconds = time.monotonic() - started

    produced = {first[0].message_id} | {r.message_id for r, _ in outcomes if r is not None}
    direct = sum(1 for r, _ in outcomes if r is not None and r.delivered)
    kept = len(Outbox(outbox_dir))
    flush = flush_outbox(target, timeout=120)
    received = [
        d.json()["conversationId"]
        for d in consume_all(names.queue, expected=len(produced), timeout=30)
    ]
    delete_names(names)
    arrived = set(received) & produced
    return {
        "reports": reports,
        "workers": workers,
        "bound_s": bound,
        "restart": restart_log,
        "callback_exceptions": sum(1 for r, _ in outcomes if r is None),
        "delivered_by_callback": direct,
        "kept_in_outbox": kept,
        "flushed": flush.delivered,
        "flush_remaining": flush.remaining,
        "distinct_delivered": len(arrived) - 1,  # without the warm-up report
        "missing": len(produced - arrived),
        "duplicates": len(received) - len(set(received)),
        "callback_duration": _durations([d for _, d in outcomes]),
        "send_seconds": round(send_seconds, 1),
    }


def stall_run(bound: float, callbacks: int, where: str) -> dict[str, Any]:
    names = unique_names("bench")
    outbox_dir = Path(tempfile.mkdtemp(prefix="isb-bench-stall-"))
    with TcpProxy(record=True) as proxy:
        target = IsbTarget(
            port=proxy.port,
            exchange=names.exchange,
            queue=names.queue,
            routing_key=names.routing_key,
            outbox_dir=outbox_dir,
            publish_timeout=bound,
            retry=RETRY,
        )
        calibration, _ = _report(target, -1)
        assert calibration is not None and calibration.delivered
        offset = bytes(proxy.recorded[-1]).find(b'{"conversationId"')
        if where == "connect":
            proxy.stall()
        else:
            proxy.stall(after_bytes=offset + 10, direction="upstream")
        with ThreadPoolExecutor(max_workers=callbacks) as pool:
            outcomes = list(pool.map(lambda i: _report(target, i), range(callbacks)))
        proxy.heal()
        kept = len(Outbox(outbox_dir))
        flushed = flush_outbox(target, timeout=60).delivered
    received = {
        d.json()["conversationId"] for d in consume_all(names.queue, expected=callbacks + 1)
    }
    delete_names(names)
    produced = {r.message_id for r, _ in outcomes if r is not None}
    return {
        "stall": where,
        "bound_s": bound,
        "callbacks": callbacks,
        "kept_in_outbox": kept,
        "flushed": flushed,
        "delivered_after_heal": len(produced & received),
        **_durations([d for _, d in outcomes]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--bound", type=float, default=5.0, help="callback bound in part 1 (s)")
    parser.add_argument(
        "--outage", type=float, default=3.0, help="seconds between stop_app and start_app"
    )
    parser.add_argument("--no-restart", action="store_true", help="skip part 1")
    parser.add_argument("--stall-callbacks", type=int, default=10)
    parser.add_argument("--stall-bounds", default="30,3", help="comma-separated bounds for part 2")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # an outage makes pika very talkative

    results: dict[str, Any] = {}
    if not args.no_restart:
        print(f"part 1: {args.reports} reports, broker restarted after 30 % ...", flush=True)
        results["restart"] = restart_run(args.reports, args.workers, args.bound, args.outage, True)
        print(json.dumps(results["restart"], indent=2), flush=True)
    results["stalled"] = []
    for bound in (float(b) for b in args.stall_bounds.split(",") if b):
        for where in ("connect", "mid-publish"):
            print(f"part 2: broker stalled at {where}, bound {bound} s ...", flush=True)
            row = stall_run(bound, args.stall_callbacks, where)
            results["stalled"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    restart = results.get("restart")
    return 0 if restart is None or restart["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
