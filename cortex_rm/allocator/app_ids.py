"""Application ids: the cluster timestamp, chosen once, and the id counter, reserved from the store in blocks.

The cluster timestamp is chosen at the RM's very first start and kept; ids are
handed out only below a high-water mark already stored, reserved ``ID_BLOCK`` at
a time, so a restarted RM continues after the last block and never hands out an
id twice — not even to callers that ask while a reservation is being written.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cortex_rm.allocator.state_store import RMStateStore, StoredState
from cortex_rm.yarn.ids import ApplicationId

ID_BLOCK = 100


def load_stored_state(clock: IReactorTime, store: RMStateStore) -> defer.Deferred[StoredState]:
    """What the store holds, with the cluster timestamp chosen (and saved) at the RM's first start."""

    async def load() -> StoredState:
        stored = await store.load()
        if stored.cluster_timestamp is None:
            stored.cluster_timestamp = int(clock.seconds() * 1000)
            await store.save_cluster_timestamp(stored.cluster_timestamp)
        return stored

    return defer.ensureDeferred(load())


class ApplicationIds:
    """Hands out this RM's application ids (see the module docstring)."""

    def __init__(self, store: RMStateStore, cluster_timestamp: int, high_water: int = 0) -> None:
        self.store = store
        self.cluster_timestamp = cluster_timestamp
        self._last_issued = high_water  # ids <= this are never handed out again
        self._reserved = high_water
        # callers waiting for the high-water write under way; None: no write under way
        self._waiting: list[defer.Deferred[None]] | None = None

    def issued(self, app_id: ApplicationId) -> bool:
        """Whether this RM handed ``app_id`` out (so it may be submitted)."""
        return app_id.cluster_timestamp == self.cluster_timestamp and 0 < app_id.id <= self._last_issued

    def new(self) -> defer.Deferred[ApplicationId]:
        """A fresh application id (getNewApplication); fails with the store's error if it cannot reserve."""
        return defer.ensureDeferred(self._new())

    async def _new(self) -> ApplicationId:
        # When a block runs out, callers queue on one reservation: concurrent calls during
        # the store's write can never hand out the same id, nor ids beyond what is stored.
        while self._last_issued >= self._reserved:
            waiter: defer.Deferred[None] = defer.Deferred()
            if self._waiting is None:
                self._waiting = [waiter]
                target = self._last_issued + ID_BLOCK
                self.store.save_app_id_high_water(target).addBoth(self._reservation_ended, target)
            else:
                self._waiting.append(waiter)
            await waiter  # at once when the store answered at once
        self._last_issued += 1
        return ApplicationId(self.cluster_timestamp, self._last_issued)

    def _reservation_ended(self, result: None | Failure, target: int) -> None:
        waiting, self._waiting = self._waiting or [], None
        if isinstance(result, Failure):
            for waiter in waiting:  # each caller fails with the store's error; the next call tries again
                waiter.errback(result)
            return
        self._reserved = max(self._reserved, target)
        for waiter in waiting:
            waiter.callback(None)
