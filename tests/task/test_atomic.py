"""``_atomic.write_atomically``: a file is replaced at once, or not at all."""

from __future__ import annotations

import os
import stat

import pytest
from dkist_processing_core import _atomic


def test_text_and_bytes_become_the_file_with_its_mode_and_no_temporary_left(tmp_path):
    target = tmp_path / "dag.py"
    target.write_text("old")
    assert _atomic.write_atomically(target, "new é") == target
    assert target.read_bytes() == "new é".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    _atomic.write_atomically(target, b"\x00bytes", mode=0o600, durable=True)
    assert target.read_bytes() == b"\x00bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["dag.py"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "marker.json"
    target.write_text("old")

    def refuse(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(_atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        _atomic.write_atomically(target, "new", durable=True)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["marker.json"]
