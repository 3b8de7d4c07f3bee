"""Application ids: the cluster timestamp, chosen once, and the id counter, reserved from the store in blocks.

The cluster timestamp is chosen at the RM's very first start and kept; ids are
handed out only below a high-water mark already stored, reserved ``ID_BLOCK`` at
a time, so a restarted RM continues after the last block and never hands out an
id twice — not even to callers that ask while a reservation is being written.

An id is handed to the user who asked for it: until it is submitted (or
``PENDING_TTL_MS`` passes) only that user may submit it, so nobody can take
another user's id, and one user holds at most ``PENDING_PER_USER`` ids not yet
submitted (all users together ``PENDING_TOTAL``), so asking for ids in a loop
fills no memory.  Ids issued before this RM started (their askers are not
recorded) may be submitted by any user who may submit, within ``PENDING_TTL_MS`` of
the start (a client resubmitting across a restart), and lapse after that.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cortex_rm.allocator.errors import AccessDenied, InvalidSubmission, RefusedOperation
from cortex_rm.allocator.state_store import RMStateStore, StoredState
from cortex_rm.yarn.ids import ApplicationId

ID_BLOCK = 100
#: Ids one user may hold unsubmitted, and all users together (a client submits right after asking).
PENDING_PER_USER = 100
PENDING_TOTAL = 10_000
#: An id not submitted within this time is given up: its submission is refused.
PENDING_TTL_MS = 10 * 60 * 1000


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

    def __init__(
        self, store: RMStateStore, cluster_timestamp: int, high_water: int = 0, clock: IReactorTime | None = None
    ) -> None:
        self.store = store
        self.cluster_timestamp = cluster_timestamp
        self.clock = clock
        self._last_issued = high_water  # ids <= this are never handed out again
        self._reserved = high_water
        self._before_start = high_water  # ids <= this were issued by an earlier run: askers unknown
        self._started_ms = self._now_ms()  # ... and they lapse PENDING_TTL_MS after this run started
        # callers waiting for the high-water write under way; None: no write under way
        self._waiting: list[defer.Deferred[None]] | None = None
        # ids handed out and not yet submitted, oldest first: id -> (user, when, in ms)
        self._pending: dict[int, tuple[str, int]] = {}
        self._pending_per_user: dict[str, int] = {}

    def issued(self, app_id: ApplicationId) -> bool:
        """Whether this RM handed ``app_id`` out (so it may be submitted)."""
        return app_id.cluster_timestamp == self.cluster_timestamp and 0 < app_id.id <= self._last_issued

    def check_submitter(self, app_id: ApplicationId, user: str) -> None:
        """Refuse unless ``user`` may submit ``app_id``: issued here, and to her (or before this RM started)."""
        if not self.issued(app_id):
            raise InvalidSubmission(
                f"application id {app_id} was not issued by this ResourceManager "
                f"(cluster timestamp {self.cluster_timestamp}); call getNewApplication first"
            )
        self._expire()
        pending = self._pending.get(app_id.id)
        if pending is not None and pending[0] != user:
            raise AccessDenied(f"application id {app_id} was issued to another user; call getNewApplication for one of yours")
        earlier_run = app_id.id <= self._before_start and self._now_ms() - self._started_ms < PENDING_TTL_MS
        if pending is None and not earlier_run:
            raise InvalidSubmission(
                f"application id {app_id} was not submitted within {PENDING_TTL_MS // 60_000} minutes "
                "of being issued and has lapsed; call getNewApplication again"
            )

    def submitted(self, app_id: ApplicationId) -> None:
        """``app_id`` is submitted (and stored): it no longer counts against its asker."""
        pending = self._pending.pop(app_id.id, None)
        if pending is not None:
            self._forget(pending[0])

    def pending_for(self, user: str) -> int:
        """How many ids ``user`` holds unsubmitted."""
        self._expire()
        return self._pending_per_user.get(user, 0)

    def new(self, user: str) -> defer.Deferred[ApplicationId]:
        """A fresh application id for ``user`` (getNewApplication); fails with RefusedOperation when
        she holds too many unsubmitted, or with the store's error if it cannot reserve."""
        try:
            self._may_ask(user)
        except RefusedOperation as e:
            return defer.fail(e)
        return defer.ensureDeferred(self._new(user))

    def _may_ask(self, user: str) -> None:
        self._expire()
        held = self._pending_per_user.get(user, 0)
        if held >= PENDING_PER_USER:
            raise RefusedOperation(
                f"user {user} holds {held} application ids not yet submitted, the most one user may; "
                f"submit them, or wait: an unsubmitted id lapses {PENDING_TTL_MS // 60_000} minutes after it was issued"
            )
        if len(self._pending) >= PENDING_TOTAL:
            raise RefusedOperation(
                f"{len(self._pending)} application ids are issued and not yet submitted; try again in a minute"
            )

    def _now_ms(self) -> int:
        return 0 if self.clock is None else int(self.clock.seconds() * 1000)

    def _expire(self) -> None:
        deadline = self._now_ms() - PENDING_TTL_MS
        while self._pending:
            oldest = next(iter(self._pending))
            user, when = self._pending[oldest]
            if when > deadline:
                return
            del self._pending[oldest]
            self._forget(user)

    def _forget(self, user: str) -> None:
        left = self._pending_per_user[user] - 1
        if left:
            self._pending_per_user[user] = left
        else:
            del self._pending_per_user[user]

    async def _new(self, user: str) -> ApplicationId:
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
            self._may_ask(user)  # others may have taken the last of her share meanwhile
        self._last_issued += 1
        self._pending[self._last_issued] = (user, self._now_ms())
        self._pending_per_user[user] = self._pending_per_user.get(user, 0) + 1
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
