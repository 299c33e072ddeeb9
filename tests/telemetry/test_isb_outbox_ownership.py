"""Whose outbox (issue 22, item 10): only this user's own entries are published with its credentials.

An outbox folder that other users can write to let them plant entries, which the next drain then
published with our ISB credentials. Now an entry is published only if it is a plain file owned by
this user with a single link (our writer always makes exactly that); any other entry is left
untouched where it is, with one ERROR line naming its owner, and never sent. A folder that is not ours, or
that others can write to, gets a WARNING naming the folder, its owner and mode, and the fix; our
own reports are still kept there and delivered ("nothing lost"). A folder the outbox creates is
``0700`` and its entries ``0600``. Tests run as root; "another user" is a file chowned to a uid
of no one.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from dkist_processing_core.isb import flush_outbox
from dkist_processing_core.isb import publish
from dkist_processing_core.isb_outbox import Outbox
from helpers.hostile_outbox import entry_name
from helpers.hostile_outbox import good_envelope
from helpers.hostile_outbox import write_envelope
from helpers.rabbitmq import consume_all
from helpers.rabbitmq import declare_queue
from helpers.rabbitmq import isb_target

OTHER_UID = 4242  # no such user; as root we can hand files to it

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def plant(folder, order: int = 0, **body) -> object:
    """A valid entry, as another user would write it, sorting before everything of ours."""
    path = folder / entry_name(order)
    write_envelope(path, good_envelope({"planted": True, **body}))
    os.chown(path, OTHER_UID, OTHER_UID)
    return path


def test_an_entry_owned_by_another_user_is_never_published(names, tmp_path, caplog):
    declare_queue(names)
    outbox_dir = tmp_path / "outbox"
    target = isb_target(names, outbox_dir)
    ours = Outbox(outbox_dir).put({"format": 1, "message_id": "ours", "body": {"ours": True}})
    planted = plant(outbox_dir)
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    result = flush_outbox(target)

    delivered = [d.json() for d in consume_all(names.queue, expected=1, timeout=3)]
    assert delivered == [{"ours": True}]
    assert result.delivered == 1 and result.remaining == 1
    assert "never sends" in result.error
    assert not ours.exists()
    assert planted.stat().st_uid == OTHER_UID  # left where it was, untouched
    assert json.loads(planted.read_text())["body"]["planted"] is True
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 1 and f"user {OTHER_UID}" in refusals[0], refusals
    assert result.duration < target.publish_timeout  # not waited for as if another drainer held it


def test_a_publish_never_sends_a_planted_entry_on_the_way(names, tmp_path):
    declare_queue(names)
    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir(mode=0o700)
    plant(outbox_dir)

    result = publish({"conversationId": "mine"}, isb_target(names, outbox_dir))

    assert result.delivered and result.drained == 0
    assert [d.json() for d in consume_all(names.queue, expected=1, timeout=3)] == [
        {"conversationId": "mine"}
    ]


def test_a_hard_link_with_an_entry_name_is_not_published(names, tmp_path):
    # Our own file (a valid envelope elsewhere) linked into the outbox: owned by us, but not an
    # entry our writer made (they always have one link).
    declare_queue(names)
    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.json"
    write_envelope(elsewhere, good_envelope({"linked": True}))
    linked = outbox_dir / entry_name(0)
    os.link(elsewhere, linked)

    result = flush_outbox(isb_target(names, outbox_dir))

    assert result.delivered == 0 and result.remaining == 1
    assert consume_all(names.queue, timeout=0.5) == []
    assert linked.exists() and elsewhere.stat().st_nlink == 2  # both untouched


@pytest.mark.parametrize(
    ("mode", "owner", "why"),
    [
        (0o777, None, "writable by other users"),
        (0o775, None, "writable by other users"),
        (0o700, OTHER_UID, f"belongs to user {OTHER_UID}"),
    ],
    ids=["world-writable", "group-writable", "another-owner"],
)
def test_an_unsafe_folder_is_named_in_a_warning_and_our_report_still_arrives(
    names, tmp_path, caplog, mode, owner, why
):
    declare_queue(names)
    outbox_dir = tmp_path / "shared-outbox"
    outbox_dir.mkdir()
    os.chmod(outbox_dir, mode)
    if owner is not None:
        os.chown(outbox_dir, owner, owner)
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    result = publish({"conversationId": "mine"}, isb_target(names, outbox_dir))

    assert result.delivered
    assert [d.json() for d in consume_all(names.queue, expected=1, timeout=3)] == [
        {"conversationId": "mine"}
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (warning,) = [text for text in warnings if str(outbox_dir) in text]
    assert why in warning and "ISB_OUTBOX_DIR" in warning


def test_our_own_folder_raises_no_warning(names, tmp_path, caplog):
    declare_queue(names)
    caplog.set_level(logging.INFO, logger="dkist_processing_core.isb")

    assert publish({"conversationId": "mine"}, isb_target(names, tmp_path / "new")).delivered

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_new_outbox_folder_is_0700_and_its_entries_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        path = Outbox(tmp_path / "a" / "outbox").put({"format": 1, "body": {}})
    finally:
        os.umask(previous)

    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_stale_temporary_file_of_another_user_is_not_recovered(tmp_path):
    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir(mode=0o700)
    temp = outbox_dir / f".tmp-{entry_name(0)}"
    write_envelope(temp, good_envelope())
    os.chown(temp, OTHER_UID, OTHER_UID)
    an_hour_ago = time.time() - 3600
    os.utime(temp, (an_hour_ago, an_hour_ago))
    outbox = Outbox(outbox_dir)

    assert outbox.recover_stale_temporaries() == 0
    assert outbox.pending() == [] and temp.exists()
