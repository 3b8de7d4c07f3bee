"""The disk cap of a node (``[nodemanager] disk_gb``): what Cortex's files may take of the machine's
disk together, and what happens at the cap.  No I/O here: the users report and evict.

The users (``DiskUser``) are the file system's block replicas (``block_store.py``), the runtime
image cache (``container/image_cache.py``) and the localizer's shared caches
(``container/localizer.py``).  Each says how many bytes it holds and which of its entries could
go now (``Evictable``: unused cached images and localized PUBLIC/PRIVATE resources; never a
block replica: the NameNode decides where replicas live, and a replica may be the only one).

Before a write of ``n`` bytes that would take the total over the cap, ``DiskCap.reserve``:

1. if even evicting everything that can go would not make ``n`` bytes fit, refuses at once,
   evicting nothing (a write that cannot fit must not flush every user's caches on its way to
   failing): ``DiskOutOfSpace`` (Hadoop's
   ``DiskChecker$DiskOutOfSpaceException``), whose message names the cap, what each user holds,
   and the key to change (a WebHDFS client sees it as the ``RemoteException`` of its write);
2. otherwise evicts what can go, least recently used first across all users, until ``n`` bytes
   fit (refusing as above in the rare case that entries stopped being evictable meanwhile).

A write whose size is known only at its end (a block arriving in pieces) reserves the most it may
be and ``Reservation.settle`` gives back the rest once it is written; what is reserved counts as
used meanwhile, so two writes in flight cannot both take the last room.  Thread-safe: writes
reserve from worker threads, under one lock, and users' ``evict`` must be safe from any thread.
A cap of 0 means none: nothing is evicted or refused, usage is still counted.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from twisted.logger import Logger

from cortex_rm.fs.errors import FsError

log = Logger()

GB: Final = 10**9  # disk_gb counts decimal gigabytes, as disks are sold


class DiskOutOfSpace(FsError):
    """A write would take this node's files over its disk cap, and nothing could be evicted."""

    java_class = "org.apache.hadoop.util.DiskChecker$DiskOutOfSpaceException"
    http_status = 403  # (WebHDFS answers an IOException with 403)


@dataclass(frozen=True)
class Evictable:
    """An entry that could be removed now to make room."""

    key: str
    size: int
    #: When it was last used, in wall-clock seconds (``time.time``: the runtime images' marker mtimes,
    #: the localizer's clock): one timebase for every user, so the order holds across them.
    last_used: float


class DiskUser(Protocol):
    """Something that keeps files on the node's disk."""

    @property
    def disk_name(self) -> str:
        """What it is, for messages ("block replicas", "runtime images", ...)."""

    def used_bytes(self) -> int:
        """What its files take now (callable from any thread)."""

    def evictable(self) -> Sequence[Evictable]:
        """What of it could be removed now, in any order (empty: nothing)."""

    def evict(self, key: str) -> int:
        """Remove ``key`` if it is still unused; the bytes freed (0: it could not go)."""


class Reservation:
    """Room reserved for one write; ``settle`` with what the write took (or 0 if it failed)."""

    def __init__(self, cap: DiskCap, number: int) -> None:
        self._cap = cap
        self._number = number

    def settle(self) -> None:
        """The write is over: its bytes are now counted by its user (or gone), not reserved."""
        self._cap._settle(self._number)


class DiskCap:
    """The node's disk cap and its users (see the module docstring)."""

    def __init__(self, cap_bytes: int = 0, users: Sequence[DiskUser] = ()) -> None:
        self.cap_bytes = cap_bytes
        self.users: list[DiskUser] = list(users)
        self._reserved: dict[int, int] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def add_user(self, user: DiskUser) -> None:
        with self._lock:
            self.users.append(user)

    def set_cap(self, cap_bytes: int) -> None:
        """A new cap (the config changed); what is stored already stays, even above it: only new
        writes are held to it (and evict what they need)."""
        with self._lock:
            self.cap_bytes = cap_bytes

    def used(self) -> int:
        """What the users hold plus what writes in flight have reserved."""
        with self._lock:
            return self._used()

    def room(self) -> int | None:
        """What may still be written without evicting anything; None without a cap."""
        with self._lock:
            return None if not self.cap_bytes else max(0, self.cap_bytes - self._used())

    def reserve(self, what: str, nbytes: int) -> Reservation:
        """Room for ``nbytes`` more, evicting what must go first; ``DiskOutOfSpace`` when it
        cannot be had (``what``: the write, for the message)."""
        with self._lock:
            if self.cap_bytes:
                self._make_room(what, max(0, nbytes))
            number = next(self._numbers)
            self._reserved[number] = max(0, nbytes)
            return Reservation(self, number)

    def _settle(self, number: int) -> None:
        with self._lock:
            self._reserved.pop(number, None)

    def _used(self) -> int:
        return sum(u.used_bytes() for u in self.users) + sum(self._reserved.values())

    def _make_room(self, what: str, nbytes: int) -> None:
        need = self._used() + nbytes - self.cap_bytes
        if need <= 0:
            return
        candidates = sorted(
            ((e.last_used, n, e, user) for n, user in enumerate(self.users) for e in user.evictable()),
            key=lambda c: (c[0], c[1], c[2].key),
        )
        if sum(entry.size for _, _, entry, _ in candidates) < need:
            self._refuse(what, nbytes)  # (evicting everything would not do: keep the caches)
        for _, _, entry, user in candidates:
            if need <= 0:
                break
            freed = user.evict(entry.key)
            if freed:
                need -= freed
                log.info(
                    "disk cap: evicted {name} {key} ({size} bytes) to make room for {what}",
                    name=user.disk_name, key=entry.key, size=freed, what=what,
                )  # fmt: skip
        if need > 0:
            self._refuse(what, nbytes)

    def _refuse(self, what: str, nbytes: int) -> None:
        held = ", ".join(f"{u.disk_name} {u.used_bytes()}" for u in self.users)
        raise DiskOutOfSpace(
            f"{what}: {nbytes} bytes do not fit under this node's disk cap of {self.cap_bytes} bytes "
            f"([nodemanager] disk_gb = {self.cap_bytes / GB:g}; held now: {held} bytes"
            f"{', in flight ' + str(sum(self._reserved.values())) if self._reserved else ''}) and not enough "
            "can be evicted"
        )
