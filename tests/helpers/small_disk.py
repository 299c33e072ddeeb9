"""A small file system for disk-full faults: a tmpfs mounted in a private mount namespace.

:func:`small_disk_command` wraps a command so that a folder is a fresh tmpfs of the given size while
it runs, seen by that command and its children only (``unshare --mount``): nothing to unmount and
nothing left behind if the test dies. It needs root (CAP_SYS_ADMIN) and util-linux's ``unshare``;
where they are missing, :func:`require_small_disks` fails the test and says so (never a skip).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

__all__ = ["require_small_disks", "small_disk_command"]

_MOUNT_AND_RUN = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'


def small_disk_command(folder: Path, size: str, command: list[str]) -> list[str]:
    """``command`` run with ``folder`` a tmpfs of ``size`` (e.g. ``"6m"``), in its own mount namespace."""
    require_small_disks()
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", _MOUNT_AND_RUN, "sh"] + [
        size,
        str(folder),
        *command,
    ]


@functools.cache
def require_small_disks() -> None:
    """Fail (never skip) when this machine cannot mount a tmpfs in a private mount namespace."""
    probe = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    probe += ["mount -t tmpfs -o size=1m tmpfs /mnt && df /mnt >/dev/null"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise AssertionError(
            "disk-full tests need util-linux's `unshare` (apt-get install util-linux)"
        ) from None
    assert result.returncode == 0, (
        "disk-full tests mount a small tmpfs in a private mount namespace, which needs root "
        f"(CAP_SYS_ADMIN) and `unshare`; here it failed: {result.stderr.strip()}"
    )
