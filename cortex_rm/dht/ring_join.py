"""How a ring service gets onto a ring, and back onto it: join attempts, their candidates, the waits between.

An *attempt* tries two lists of peers, each handed to ``RingMember.join`` (which
tries its peers in order and reports ``JoinFailed`` only when all failed):

1. the neighbour log's rejoin candidates, when the log is fresh
   (``RingConfig.neighbour_log_max_age``): a restarted node comes back through the
   peers it last knew, without its introducers;
2. the configured introducers.  An introducer is only ``host:port``; each is
   *discovered* (``RingTransport.discover``: one mutual-TLS handshake gives its
   ring id), all at once, and those that answered are tried in configured order.
   An introducer at our own address is skipped.

When the attempt fails, the next one starts ``RingConfig.join_retry_interval``
later, and the log says what it waits for; attempts go on as long as the service
runs.  When there are no candidates at all (no fresh log, no introducer but
ourselves), the node is the first of a new ring (``FOUNDED``); so is one whose
log grew stale while its peers stayed silent and that has no introducer.  A member that
loses every peer (chord falls back to ALONE) starts attempting again, if it has
introducers; a founder without any stays ALONE and waits to be found, so new
nodes can still join through it.

The owner calls ``observe(ring_state)`` after each step of its member and
``join_failed()`` on ``JoinFailed``; ``settled()`` fires once the node is on a
ring (MEMBER) or founded one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.dht.errors import RingError
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.peer import Peer
from cortex_rm.yarn.transitions import TransitionTable

log = Logger()


class JoinState(enum.Enum):
    """Where a service stands in getting onto a ring."""

    IDLE = "idle"  # not begun
    FROM_LOG = "from-log"  # joining through the neighbour log's peers
    DISCOVERING = "discovering"  # dialling the introducers to learn their ring ids
    FROM_INTRODUCERS = "from-introducers"  # joining through the introducers that answered
    WAITING = "waiting"  # the last attempt failed; the next one is scheduled
    FOUNDED = "founded"  # no candidates at all: the first node of a new ring
    JOINED = "joined"  # on a ring with others (chord MEMBER)
    STOPPED = "stopped"


class JoinEvent(enum.Enum):
    """What moves the attempts between ``JoinState``s."""

    ATTEMPT = "attempt"  # begin, or the retry timer fired: try the log
    NO_LOG = "no-log"  # no fresh log candidates (or they failed): try the introducers
    DISCOVERED = "discovered"  # at least one introducer answered: join through them
    NO_CANDIDATES = "no-candidates"  # neither a fresh log nor an introducer: found a ring
    FAILED = "failed"  # nothing reachable, or every candidate failed: wait and retry
    MEMBER = "member"  # chord reports MEMBER
    LOST = "lost"  # chord fell back to ALONE (every peer gone)
    STOP = "stop"


_S, _E = JoinState, JoinEvent
JOIN_ATTEMPTS: TransitionTable[JoinState, JoinEvent] = TransitionTable(
    "ring join attempts",
    {
        (_S.IDLE, _E.ATTEMPT): _S.FROM_LOG,
        (_S.WAITING, _E.ATTEMPT): _S.FROM_LOG,
        (_S.FROM_LOG, _E.NO_LOG): _S.DISCOVERING,
        (_S.DISCOVERING, _E.DISCOVERED): _S.FROM_INTRODUCERS,
        (_S.DISCOVERING, _E.NO_CANDIDATES): _S.FOUNDED,
        (_S.DISCOVERING, _E.FAILED): _S.WAITING,
        (_S.FROM_INTRODUCERS, _E.FAILED): _S.WAITING,
        (_S.FROM_LOG, _E.MEMBER): _S.JOINED,
        (_S.DISCOVERING, _E.MEMBER): _S.JOINED,  # found by another node meanwhile
        (_S.FROM_INTRODUCERS, _E.MEMBER): _S.JOINED,
        (_S.WAITING, _E.MEMBER): _S.JOINED,
        (_S.FOUNDED, _E.MEMBER): _S.JOINED,
        (_S.JOINED, _E.LOST): (_S.WAITING, _S.FOUNDED),  # WAITING with introducers, else wait to be found
        **{(s, _E.STOP): _S.STOPPED for s in _S if s is not _S.STOPPED},
    },
    ignored=[
        (_S.IDLE, _E.MEMBER),
        (_S.IDLE, _E.LOST),
        (_S.FROM_LOG, _E.LOST),  # chord is ALONE between two candidates
        (_S.DISCOVERING, _E.LOST),
        (_S.FROM_INTRODUCERS, _E.LOST),
        (_S.WAITING, _E.LOST),
        (_S.FOUNDED, _E.LOST),
        (_S.JOINED, _E.MEMBER),
        *[(_S.STOPPED, e) for e in _E],
    ],
)


class JoinAttempts:
    """Join attempts of one ring service until it is on a ring; again whenever it falls off."""

    def __init__(
        self,
        clock: IReactorTime,
        me: Peer,
        introducers: Sequence[str],
        retry_interval: float,
        *,
        log_candidates: Callable[[], list[Peer]],
        discover: Callable[[str], defer.Deferred[Peer]],
        join: Callable[[list[Peer]], object],
    ) -> None:
        self.clock = clock
        self.me = me
        self.introducers = [a for a in dict.fromkeys(introducers) if a != me.address]
        self.retry_interval = retry_interval
        self.state = JoinState.IDLE
        self.attempts = 0
        self._log_tried = False  # whether the current attempt had neighbour-log candidates
        self._log_candidates = log_candidates
        self._discover = discover
        self._join = join
        self._retry: IDelayedCall | None = None
        self._waiters: list[defer.Deferred[None]] = []
        skipped = len(dict.fromkeys(introducers)) - len(self.introducers)
        if skipped:
            log.info("ring {me}: introducer {address} is this node; skipped", me=me.short(), address=me.address)

    # ------------------------------------------------------------ inputs

    def begin(self) -> None:
        """Make the first attempt."""
        self._attempt()

    def join_failed(self) -> None:
        """The member reported ``JoinFailed``: every peer of the current list failed."""
        if self.state is JoinState.FROM_LOG:
            log.info("ring {me}: no peer of the neighbour log answered; trying the introducers", me=self.me.short())
            self._try_introducers()
        elif self.state is JoinState.FROM_INTRODUCERS:
            self._wait("no introducer could take us in")

    def observe(self, ring_state: RingState) -> None:
        """The member's chord state after a step: MEMBER settles the attempts, ALONE after MEMBER restarts them."""
        if ring_state is RingState.MEMBER:
            self._move(JoinEvent.MEMBER)
        elif ring_state is RingState.ALONE and self.state is JoinState.JOINED:
            if self.introducers:
                self._wait("every peer is gone", event=JoinEvent.LOST)
            else:
                self._move(JoinEvent.LOST, JoinState.FOUNDED)
                log.warn("ring {me}: every peer is gone; alone until another node finds us", me=self.me.short())

    def stop(self) -> None:
        """No more attempts; ``settled()`` waiters fail with a RingError."""
        self._move(JoinEvent.STOP)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(RingError(f"the ring service {self.me.short()} stopped before it joined a ring"))

    def settled(self) -> defer.Deferred[None]:
        """Fires once the node is on a ring with others, or is the first node of a new one."""
        if self.state in (JoinState.JOINED, JoinState.FOUNDED):
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    # ------------------------------------------------------------ steps

    def _move(self, event: JoinEvent, target: JoinState | None = None) -> bool:
        """Apply ``event``; whether it changed the state."""
        new = JOIN_ATTEMPTS.next_state(self.state, event, target)
        if new is None or new is self.state:
            return False
        old, self.state = self.state, new
        log.debug("ring {me} join: {old} -> {new} on {event}", me=self.me.short(), old=old.value, new=new.value, event=event.value)
        if self._retry is not None and self._retry.active() and new is not JoinState.WAITING:
            self._retry.cancel()
        if new in (JoinState.JOINED, JoinState.FOUNDED):
            if new is JoinState.JOINED:
                log.info("ring {me} is on the ring (attempt {attempt})", me=self.me.short(), attempt=self.attempts)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)
        return True

    def _attempt(self) -> None:
        self._move(JoinEvent.ATTEMPT)
        self.attempts += 1
        candidates = self._log_candidates()
        self._log_tried = bool(candidates)
        if not candidates:
            self._try_introducers()
            return
        log.info(
            "ring {me}: rejoining through the {count} peers of the neighbour log (attempt {attempt})",
            me=self.me.short(),
            count=len(candidates),
            attempt=self.attempts,
        )
        self._join(candidates)  # (may report join_failed at once)

    def _try_introducers(self) -> None:
        self._move(JoinEvent.NO_LOG)
        if not self.introducers:
            if not self._log_tried:
                self._move(JoinEvent.NO_CANDIDATES)
                log.info("ring {me}: no neighbour log and no introducer; starting a new ring", me=self.me.short())
            else:
                self._wait("the neighbour log's peers did not answer and there is no introducer")
            return
        discoveries = [self._discover(address) for address in self.introducers]
        d = defer.DeferredList(discoveries, consumeErrors=True)
        d.addCallback(self._discovered)
        d.addErrback(lambda f: log.failure("ring: join attempt failed", f))

    def _discovered(self, results: Sequence[tuple[bool, Peer | Failure]]) -> None:
        if self.state is not JoinState.DISCOVERING:
            return  # stopped, or found by another node meanwhile
        peers: list[Peer] = []
        problems: list[str] = []
        for _, result in results:  # (a discovery fails with a Failure, or fires with a Peer)
            if isinstance(result, Failure):
                problems.append(result.getErrorMessage())
            elif result.node_id != self.me.node_id:
                peers.append(result)
        for problem in problems:
            log.warn("ring {me}: {problem}", me=self.me.short(), problem=problem)
        if not peers:
            self._wait("no introducer answered")
            return
        self._move(JoinEvent.DISCOVERED)
        log.info("ring {me}: joining through {peers}", me=self.me.short(), peers=", ".join(p.short() for p in peers))
        self._join(peers)

    def _wait(self, why: str, event: JoinEvent = JoinEvent.FAILED) -> None:
        if not self._move(event, JoinState.WAITING if event is JoinEvent.LOST else None):
            return
        log.info(
            "ring {me}: {why}; trying again in {interval:g} s (introducers: {introducers})",
            me=self.me.short(),
            why=why,
            interval=self.retry_interval,
            introducers=", ".join(self.introducers) or "none",
        )
        self._retry = self.clock.callLater(self.retry_interval, self._attempt)
