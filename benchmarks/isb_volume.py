"""Outbox volume against the real RabbitMQ: concurrent flushers, and a large backlog drained.

Run by hand (needs RabbitMQ on 127.0.0.1:5672, guest/guest)::

    python benchmarks/isb_volume.py                          # 4 flushers x 8,001 entries; 5,000 backlog
    python benchmarks/isb_volume.py --entries 2000 --flushers 3 --backlog 1000
    python benchmarks/isb_volume.py --json out.json

Part 1 writes ``--entries`` entries into one outbox, starts ``--flushers`` processes that each
run ``flush_outbox`` on it at the same moment, then takes every message off the benchmark's own
queue: entries lost (never arrived), duplicated (arrived more than once), and whether the
flushers' own counts add up. Part 2 writes ``--backlog`` entries and drains them with one
``flush_outbox`` in a fresh process: wall time and that process's peak RSS (``os.wait4``).

Entries are written the way ``Outbox.put`` names and fills them, without its per-entry fsync
(the benchmark measures draining, not writing).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from _timing import run_measured  # noqa: E402
from helpers.hostile_outbox import entry_name  # noqa: E402
from helpers.hostile_outbox import good_envelope  # noqa: E402
from helpers.hostile_outbox import write_envelope  # noqa: E402
from helpers.rabbitmq import IsbNames  # noqa: E402
from helpers.rabbitmq import consume_all  # noqa: E402
from helpers.rabbitmq import declare_queue  # noqa: E402
from helpers.rabbitmq import delete_names  # noqa: E402
from helpers.rabbitmq import unique_names  # noqa: E402

# One flusher: a fresh process that drains the outbox and prints what it delivered.
FLUSHER = r"""
import json, sys
from pathlib import Path
from dkist_processing_core.config import RetryConfig
from dkist_processing_core.isb import IsbTarget, flush_outbox

p = json.loads(sys.argv[1])
target = IsbTarget(
    exchange=p["exchange"], queue=p["queue"], routing_key=p["routing_key"],
    outbox_dir=Path(p["outbox"]), publish_timeout=600.0,
    retry=RetryConfig(retry_delay=0.05, retry_jitter=(0.0, 0.05), retry_max_delay=0.5),
)
print("ready", flush=True)
sys.stdin.readline()  # all flushers start together
result = flush_outbox(target, timeout=p["timeout"])
print(json.dumps({"delivered": result.delivered, "remaining": result.remaining}))
"""


def fill(outbox: Path, count: int) -> set[str]:
    outbox.mkdir(mode=0o700, parents=True)
    ids = set()
    for order in range(count):
        envelope = good_envelope({"n": order})
        write_envelope(outbox / entry_name(order), envelope)
        ids.add(envelope["message_id"])
    return ids


def _params(names: IsbNames, outbox: Path, timeout: float) -> str:
    return json.dumps(
        {
            "exchange": names.exchange,
            "queue": names.queue,
            "routing_key": names.routing_key,
            "outbox": str(outbox),
            "timeout": timeout,
        }
    )


def concurrent_flushers(entries: int, flushers: int, workdir: Path) -> dict[str, Any]:
    import subprocess

    names = unique_names("bench-flushers")
    declare_queue(names)
    try:
        outbox = workdir / "concurrent"
        produced = fill(outbox, entries)
        children = [
            subprocess.Popen(
                [sys.executable, "-c", FLUSHER, _params(names, outbox, 600.0)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(flushers)
        ]
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [
            json.loads(child.communicate(timeout=900)[0].splitlines()[-1]) for child in children
        ]
        seconds = time.perf_counter() - started
        received = collections.Counter(
            d.json()["conversationId"]
            for d in consume_all(names.queue, expected=entries, timeout=60)
        )
    finally:
        delete_names(names)
    return {
        "entries": entries,
        "flushers": flushers,
        "seconds": round(seconds, 2),
        "delivered_per_flusher": [r["delivered"] for r in results],
        "delivered_sum": sum(r["delivered"] for r in results),
        "received": sum(received.values()),
        "lost": len(produced - set(received)),
        "duplicated": sum(n - 1 for n in received.values() if n > 1),
        "left_in_outbox": len(list(outbox.glob("*.json"))),
    }


def backlog_drain(backlog: int, workdir: Path) -> dict[str, Any]:
    names = unique_names("bench-backlog")
    declare_queue(names)
    try:
        outbox = workdir / "backlog"
        produced = fill(outbox, backlog)
        drain = FLUSHER.replace("sys.stdin.readline()  # all flushers start together\n", "")
        run = run_measured(
            [sys.executable, "-c", drain, _params(names, outbox, 900.0)], timeout=1200
        )
        if run.returncode != 0:
            raise RuntimeError(f"the drain failed:\n{run.stderr[-3000:]}")
        received = {
            d.json()["conversationId"]
            for d in consume_all(names.queue, expected=backlog, timeout=60)
        }
    finally:
        delete_names(names)
    return {
        "backlog": backlog,
        "seconds": round(run.seconds, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "lost": len(produced - received),
        "left_in_outbox": len(list(outbox.glob("*.json"))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=8001)
    parser.add_argument("--flushers", type=int, default=4)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dkist-isb-volume-") as folder:
        results = {
            "concurrent_flushers": concurrent_flushers(args.entries, args.flushers, Path(folder)),
            "backlog_drain": backlog_drain(args.backlog, Path(folder)),
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = all(part["lost"] == 0 and part["left_in_outbox"] == 0 for part in results.values())
    return 0 if ok and results["concurrent_flushers"]["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
