"""A NodeManager's hold on its range of host ids while it runs.

Two live nodes on one host must never share ids: their containers would be one
user to the kernel, and their network policies (one nftables table per node,
named by its range: ``net_policy.table_name``) would judge each other's
packets.  So a node takes its range's lease at start: a write lock on the whole of
``<LEASE_DIR>/<base>_<count>.lock``, held by an open descriptor until the process
ends, however it ends (the kernel drops the lock of a killed process too).  The
locks are open-file-description locks (``ofd_locks.py``), so others can ask who
holds one without taking it -- a probe never makes a starting node's lock fail --
and closing another descriptor of the file does not drop it.  A
second node with the same range, or a range that meets a leased one, is refused
with the holder's pid.  ``local-cluster`` picks the ranges of its nodes among the
free ones, so local clusters running at once on one host stay apart; and a node
may delete any table of a range that nobody holds (a node killed before it could
remove its own).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path
from typing import Final

from cortex_rm.container import ofd_locks
from cortex_rm.container.id_ranges import IdRange, IdRangeError

#: Where the lock files are (``/run``: a tmpfs, so a reboot forgets them with the holders).
LEASE_DIR: Final = Path("/run/cortex-rm/id-ranges")
_NAME: Final = re.compile(r"([0-9]{1,10})_([0-9]{1,10})\.lock")


def lease_path(ids: IdRange, directory: Path = LEASE_DIR) -> Path:
    return directory / f"{ids.base}_{ids.count}.lock"


def is_free(ids: IdRange, directory: Path = LEASE_DIR) -> bool:
    """Whether no live process holds ``ids`` or a range meeting it."""
    return ofd_locks.holder(lease_path(ids, directory)) is None and _overlapping_holder(ids, directory) is None


def _overlapping_holder(ids: IdRange, directory: Path) -> tuple[str, int] | None:
    try:
        names = [p.name for p in directory.iterdir()]
    except FileNotFoundError:
        return None
    for name in names:
        m = _NAME.fullmatch(name)
        if m is None or (int(m[1]), int(m[2])) == (ids.base, ids.count) or not ids.overlaps(int(m[1]), int(m[2])):
            continue
        pid = ofd_locks.holder(directory / name)
        if pid is not None:
            return f"{m[1]}:{m[2]}", pid
    return None


class RangeLease:
    """The lease a running node holds on its range (see the module docstring)."""

    def __init__(self, ids: IdRange, fd: int) -> None:
        self.ids = ids
        self._fd: int | None = fd

    @classmethod
    def take(cls, ids: IdRange, directory: Path = LEASE_DIR) -> RangeLease:
        """Hold ``ids``; IdRangeError naming the holder when a live process holds it or a range meeting it."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # root's alone: nobody else may open a lease and hold it
        other = _overlapping_holder(ids, directory)
        if other is not None:
            raise IdRangeError(
                f"container_id_range {ids.text()} meets {other[0]}, held by another NodeManager on this host"
                f" (pid {other[1]}): give this node a range of its own ([nodemanager] container_id_range)"
            )
        try:
            fd = ofd_locks.take(lease_path(ids, directory))
        except ofd_locks.LockHeldError as e:
            raise IdRangeError(
                f"container_id_range {ids.text()} is held by another NodeManager on this host (pid {e.holder or '?'}):"
                " give this node a range of its own ([nodemanager] container_id_range)"
            ) from None
        except OSError as e:
            raise IdRangeError(f"cannot lock {lease_path(ids, directory)}: {e}") from None
        return cls(ids, fd)

    def release(self) -> None:
        """Let the range go (at stop; the file stays, unlocked)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def table_range(name: str) -> IdRange | None:
    """The range a node's table is named by (``cortex_<base>_<count>``), or None for another name."""
    m = re.fullmatch(r"cortex_([0-9]{1,10})_([0-9]{1,10})", name)
    if m is None:
        return None
    try:
        return IdRange.parse(f"{m[1]}:{m[2]}")
    except IdRangeError:
        return None


def left_behind(table: str, directory: Path = LEASE_DIR) -> bool:
    """Whether ``table`` is a node's (named by its id range) that no live node of this host holds,
    or one named by a node's address (``cortex_<a>_<b>_<c>_<d>_<port>``, before tables were
    named by range: only a node older than this one makes those)."""
    old = re.fullmatch(r"cortex_([0-9]{1,3})_([0-9]{1,3})_([0-9]{1,3})_([0-9]{1,3})_([0-9]{1,5})", table)
    if old is not None:  # left only if nothing listens on that node's address any more
        return not _listened_on(".".join(old.groups()[:4]), int(old[5]))
    ids = table_range(table)
    return ids is not None and is_free(ids, directory)


def _listened_on(host: str, port: int) -> bool:
    """Whether a socket of this network namespace holds ``host:port`` (our bind is refused)."""
    probe = socket.socket()
    try:
        probe.bind((host, port))
    except OSError as e:
        return e.errno == errno.EADDRINUSE
    finally:
        probe.close()
    return False
