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

Eviction is in two steps, so that nobody waits for a deletion but the write that needs the room:
under the cap's lock the victims are chosen and ``claim``ed (each user takes the entry out of use
and out of its ``used_bytes`` at once, in memory: nobody else picks it or is handed it), and the
write's bytes are reserved; then, outside the lock, on the reserving thread, the victims' files are
deleted before ``reserve`` returns.  ``used``/``room`` (asked on the reactor) only ever wait for
that in-memory step: the users' ``used_bytes``, ``evictable`` and ``claim`` do no file work.

A write whose size is known only at its end (a block arriving in pieces) reserves the most it may
be and ``Reservation.settle`` gives back the rest once it is written; what is reserved counts as
used meanwhile, so two writes in flight cannot both take the last room.  Thread-safe: writes
reserve from worker threads, under one lock; a user's ``claim`` runs under it (a user may take its
own lock there, never the cap's), and its deletions run on any worker thread.
A cap of 0 means none: nothing is evicted or refused, usage is still counted.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
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


#: The file work that removes a claimed entry (blocking: run outside the cap's lock, on a worker thread).
Deletion = Callable[[], None]


class DiskUser(Protocol):
    """Something that keeps files on the node's disk.  ``used_bytes``, ``evictable`` and ``claim``
    answer from memory, without file work: they run under the cap's lock, which the reactor takes."""

    @property
    def disk_name(self) -> str:
        """What it is, for messages ("block replicas", "runtime images", ...)."""

    def used_bytes(self) -> int:
        """What its files take now, claimed entries excluded (callable from any thread)."""

    def evictable(self) -> Sequence[Evictable]:
        """What of it could be removed now, in any order (empty: nothing); never a claimed entry."""

    def claim(self, key: str) -> Deletion | None:
        """Take ``key`` out of use and out of ``used_bytes`` now if it is still unused, and give the
        deletion of its files to run later; None: it cannot go."""


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
        """What the users hold plus what writes in flight have reserved (an entry being evicted
        counts no more: its room is the evicting write's, reserved already)."""
        with self._lock:
            return self._used()

    def room(self) -> int | None:
        """What may still be written without evicting anything; None without a cap."""
        with self._lock:
            return None if not self.cap_bytes else max(0, self.cap_bytes - self._used())

    def reserve(self, what: str, nbytes: int) -> Reservation:
        """Room for ``nbytes`` more, evicting what must go first; ``DiskOutOfSpace`` when it
        cannot be had (``what``: the write, for the message).  Blocking: the victims' files are
        deleted on the calling thread (a worker's), after the cap's lock is released."""
        nbytes = max(0, nbytes)
        with self._lock:
            victims, fits = self._make_room(nbytes) if self.cap_bytes else ([], True)
            refusal = None if fits else self._refusal(what, nbytes)
            number = next(self._numbers) if fits else 0
            if fits:
                self._reserved[number] = nbytes
        for name, entry, delete in victims:  # (claimed: out of every count and out of use already)
            try:
                delete()
            except Exception:  # noqa: BLE001 - a deletion's bug must not lose the write's reservation
                log.failure("disk cap: removing {name} {key} failed", name=name, key=entry.key)
            else:
                log.info(
                    "disk cap: evicted {name} {key} ({size} bytes) to make room for {what}",
                    name=name, key=entry.key, size=entry.size, what=what,
                )  # fmt: skip
        if refusal is not None:
            raise refusal
        return Reservation(self, number)

    def _settle(self, number: int) -> None:
        with self._lock:
            self._reserved.pop(number, None)

    def _used(self) -> int:
        return sum(u.used_bytes() for u in self.users) + sum(self._reserved.values())

    def _make_room(self, nbytes: int) -> tuple[list[tuple[str, Evictable, Deletion]], bool]:
        """Under the lock: the victims claimed for ``nbytes`` more, least recently used first, and
        whether it fits now.  When evicting everything evictable would not do, nothing is claimed."""
        need = self._used() + nbytes - self.cap_bytes
        if need <= 0:
            return [], True
        candidates = sorted(
            ((e.last_used, n, e, user) for n, user in enumerate(self.users) for e in user.evictable()),
            key=lambda c: (c[0], c[1], c[2].key),
        )
        if sum(entry.size for _, _, entry, _ in candidates) < need:
            return [], False  # (evicting everything would not do: keep the caches)
        victims: list[tuple[str, Evictable, Deletion]] = []
        for _, _, entry, user in candidates:
            if need <= 0:
                break
            try:
                delete = user.claim(entry.key)
            except Exception:  # noqa: BLE001 - a user's bug: what was claimed already must still be deleted
                log.failure("disk cap: claiming {name} {key} failed", name=user.disk_name, key=entry.key)
                continue
            if delete is not None:
                need -= entry.size
                victims.append((user.disk_name, entry, delete))
        return victims, need <= 0

    def _refusal(self, what: str, nbytes: int) -> DiskOutOfSpace:
        held = ", ".join(f"{u.disk_name} {u.used_bytes()}" for u in self.users)
        return DiskOutOfSpace(
            f"{what}: {nbytes} bytes do not fit under this node's disk cap of {self.cap_bytes} bytes "
            f"([nodemanager] disk_gb = {self.cap_bytes / GB:g}; held now: {held} bytes"
            f"{', in flight ' + str(sum(self._reserved.values())) if self._reserved else ''}) and not enough "
            "can be evicted"
        )
