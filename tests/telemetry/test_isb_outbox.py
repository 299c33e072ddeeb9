"""The durable outbox on its own: atomic files, arrival order, claims across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from dkist_processing_core.isb_outbox import ENVELOPE_FORMAT
from dkist_processing_core.isb_outbox import Outbox
from dkist_processing_core.isb_outbox import OutboxError


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
