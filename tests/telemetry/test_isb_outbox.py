"""The durable outbox on its own: atomic files, arrival order, claims across processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from dkist_processing_core.isb_outbox import ENVELOPE_FORMAT
from dkist_processing_core.isb_outbox import InvalidMessageError
from dkist_processing_core.isb_outbox import Outbox
from dkist_processing_core.isb_outbox import OutboxError
from dkist_processing_core.isb_outbox import check_envelope
from helpers.hostile_outbox import HOSTILE_KINDS
from helpers.hostile_outbox import entry_name
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st


def envelope(n: int) -> dict:
    return {"format": ENVELOPE_FORMAT, "message_id": f"m{n}", "body": {"n": n}}


def test_put_writes_complete_files_in_arrival_order(tmp_path):
    outbox = Outbox(tmp_path / "box")

    paths = [outbox.put(envelope(n)) for n in range(20)]

    assert outbox.pending() == paths  # names sort in arrival order
    assert [json.loads(p.read_text())["body"]["n"] for p in paths] == list(range(20))
    assert sorted(os.listdir(outbox.directory)) == sorted(p.name for p in paths)  # no temp files


def test_a_claimed_file_cannot_be_claimed_twice_and_done_deletes_it(tmp_path):
    outbox = Outbox(tmp_path)
    path = outbox.put(envelope(1))

    with outbox.claim(path) as first:
        assert first is not None and first.envelope["body"] == {"n": 1}
        with Outbox(tmp_path).claim(path) as second:
            assert second is None
        first.done()

    assert not path.exists()
    with outbox.claim(path) as gone:
        assert gone is None


def test_a_claim_held_by_another_process_is_respected_and_released_when_it_dies(tmp_path):
    outbox = Outbox(tmp_path)
    path = outbox.put(envelope(1))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True); time.sleep(60)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with outbox.claim(path) as claimed:
            assert claimed is None
    finally:
        holder.kill()
        holder.wait()
    with outbox.claim(path) as claimed:
        assert claimed is not None  # the claim died with its process: nothing stranded


def test_an_unreadable_file_is_set_aside_not_deleted(tmp_path):
    outbox = Outbox(tmp_path)
    good = outbox.put(envelope(1))
    bad = tmp_path / good.name.replace(good.name[:20], "0" * 20)
    bad.write_text("{not json")

    with outbox.claim(bad) as claimed:
        assert claimed is None

    assert outbox.pending() == [good]
    assert (tmp_path / "rejected" / bad.name).read_text() == "{not json"


def test_complete_temporary_file_of_a_dead_writer_is_recovered(tmp_path):
    outbox = Outbox(tmp_path)
    temp = tmp_path / ".tmp-00000000000000000001-1-0123456789abcdef0123456789abcdef.json"
    temp.write_text(json.dumps(envelope(7)))
    broken = tmp_path / ".tmp-broken.json"
    broken.write_text('{"format": 1, "bo')
    old = time.time() - 3600
    for path in (temp, broken):
        os.utime(path, (old, old))

    assert outbox.recover_stale_temporaries() == 1

    (recovered,) = outbox.pending()
    assert json.loads(recovered.read_text())["body"] == {"n": 7}
    assert broken.exists()  # incomplete: left for inspection, never deleted


def test_recent_temporary_files_are_left_to_their_writer(tmp_path):
    outbox = Outbox(tmp_path)
    (tmp_path / ".tmp-in-progress.json").write_text(json.dumps(envelope(1)))
    assert outbox.recover_stale_temporaries() == 0
    assert outbox.pending() == []


def test_unwritable_outbox_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutboxError, match="ISB_OUTBOX_DIR"):
        Outbox(blocker / "box").put(envelope(1))


def test_missing_outbox_is_empty(tmp_path):
    assert Outbox(tmp_path / "never-created").pending() == []
    assert len(Outbox(tmp_path / "never-created")) == 0


# ------------------------------------------------------------------ hostile entries (issue 14)
@pytest.mark.parametrize("kind", list(HOSTILE_KINDS))
def test_a_hostile_entry_is_moved_aside_with_a_reason_and_the_others_stay(tmp_path, kind, caplog):
    outbox = Outbox(tmp_path / "box")
    before = outbox.put(envelope(1))
    bad = outbox.directory / entry_name(int(before.name[:20]) + 1)
    HOSTILE_KINDS[kind](bad)
    after = outbox.put(envelope(2))
    assert outbox.pending() == [before, bad, after]
    caplog.set_level(logging.ERROR, logger="dkist_processing_core.isb")

    claimed = []
    for path in outbox.pending():
        with outbox.claim(path) as message:
            if message is not None:
                claimed.append(message.envelope["body"]["n"])
                message.done()

    assert claimed == [1, 2]  # the good ones on either side were not held back
    assert outbox.pending() == []
    moved = outbox.directory / "rejected" / bad.name
    assert os.path.lexists(moved), f"{kind} not moved aside"
    (line,) = [r.getMessage() for r in caplog.records if bad.name in r.getMessage()]
    assert str(bad) in line and str(moved) in line  # where it was and where it went
    assert "because" in line  # and why


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"message_id": "m" * 256}, "message_id"),
        ({"message_id": "☀" * 86}, "message_id"),
        ({"message_id": 7}, "message_id"),
        ({"created_ns": "now"}, "created_ns"),
        ({"created_ns": -1}, "created_ns"),
        ({"created_ns": 2**64}, "created_ns"),
        ({"body": ["not", "an", "object"]}, "body"),
        ({"body": {"x": float("nan")}}, "body"),
        ({"body": {"x": "\ud800"}}, "body"),
        ({"body": {"x": "y" * (1 << 20)}}, "body"),
        ({"format": 2}, "format"),
    ],
)
def test_put_refuses_an_envelope_no_broker_can_accept(tmp_path, fields, named):
    outbox = Outbox(tmp_path / "box")
    bad = {**envelope(1), **fields}
    with pytest.raises(InvalidMessageError, match=named):
        outbox.put(bad)
    assert not outbox.directory.exists() or os.listdir(outbox.directory) == []


def test_every_envelope_put_accepts_can_be_encoded_by_pika():
    import pika

    @given(
        message_id=st.text(min_size=1, max_size=300),
        created_ns=st.integers(min_value=-(2**64), max_value=2**65),
        body=st.dictionaries(
            st.text(max_size=20),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
            max_size=5,
        ),
    )
    @settings(max_examples=300, deadline=None)
    def check(message_id, created_ns, body):
        candidate = {"format": 1, "message_id": message_id, "created_ns": created_ns, "body": body}
        try:
            checked = check_envelope(candidate)
        except InvalidMessageError:
            return
        properties = pika.BasicProperties(
            message_id=checked["message_id"], timestamp=checked["created_ns"] // 1_000_000_000
        )
        properties.encode()
        json.dumps(checked["body"], allow_nan=False).encode("utf-8")

    check()


def test_a_stale_fifo_among_temporaries_does_not_hang_recovery(tmp_path):
    outbox = Outbox(tmp_path)
    fifo = tmp_path / ".tmp-00000000000000000001-1-0123456789abcdef0123456789abcdef.json"
    os.mkfifo(fifo)
    old = time.time() - 3600
    os.utime(fifo, (old, old))
    worker = threading.Thread(target=outbox.recover_stale_temporaries, daemon=True)
    worker.start()
    worker.join(5)
    hung = worker.is_alive()
    if hung:  # release the reader the old code left blocked in open()
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
    assert not hung, "recovering temporaries blocked on a FIFO"
    assert outbox.pending() == []


def test_a_stale_temporary_with_a_pre_1970_time_is_recovered_under_a_visible_name(tmp_path):
    outbox = Outbox(tmp_path)
    temp = tmp_path / ".tmp-from-a-clock-gone-wrong.json"
    temp.write_text(json.dumps(envelope(3)))
    os.utime(temp, (-86400, -86400))

    assert outbox.recover_stale_temporaries() == 1

    (recovered,) = outbox.pending()
    assert json.loads(recovered.read_text())["body"] == {"n": 3}
