"""The RM's ledger, run: its database on one thread, the ring's membership in it, and its periodic work.

``LedgerKeeper`` owns the ``LedgerOffice`` (``accounting/ledger_office.py``) over an
SQL store (``[accounting] ledger_url``; SQLite in the state directory by default),
or over the store it is given (an RM with standbys: ``ha/replicated_ledger.py``, which
writes through the RM's journal), and runs every office call on one dedicated thread,
in the order issued.  The office rebuilds everything it keeps in memory from the
store when it opens, so a new active continues from what the journal holds.

* **Membership.**  At start it appends a snapshot of the ring's live members (this
  node and whoever its ring member knows alive); then every ``MemberJoined`` /
  ``MemberDied`` / ``MemberLeft`` of the ring member, gathered for
  ``MEMBERSHIP_COALESCE_S`` into one change.
* **Witnesses' batches** come from the tracker (``submitAttestations``): a node
  may send ``max_batches_per_hour`` batches an hour; more are refused with
  ``NodeRefused`` (it retries later).
* **Every ``class_update_interval_s``** it closes the periods that are due and
  re-classes the nodes; ``on_classes`` gets the static ring ids.
* **Queries** (REST, CLI): payouts of a period, the tree head, entries and proofs for mirrors.

``stop`` lets the thread finish what was issued, then closes the database; a given
store is closed first (it ends the waits of a replicated store's writes, so the
reactor never joins a thread that waits for the reactor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from cortex_rm.accounting.attestations import SignedAttestations
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import BadLedgerRequest
from cortex_rm.accounting.ledger_office import LedgerOffice, OfficeRules, PayoutReport, Receipts, SubmissionRefused
from cortex_rm.accounting.ledger_store import LedgerStore, SqlLedgerStore, StoredEntry
from cortex_rm.accounting.membership_log import membership_change
from cortex_rm.accounting.periods import Period
from cortex_rm.accounting.tree_heads import SignedTreeHead
from cortex_rm.config.accounting import AccountingSection
from cortex_rm.dht.errors import RingError
from cortex_rm.dht.member_table import MemberDied, MemberJoined, MemberLeft, MembershipEvent
from cortex_rm.dht.rate_limits import PeerRateLimit
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.ha.journal import NotLeader
from cortex_rm.roles.ring_service import RingService
from cortex_rm.roles.threads import thread_runner
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.resource_tracker import NodeRefused

log = Logger()
T = TypeVar("T")

MEMBERSHIP_COALESCE_S = 0.5
JOIN_WAIT_S = 60.0  # the snapshot waits this long at most for the ring to be joined
JOIN_SETTLE_S = 5.0  # ... and this long more, for the member table to fill
ANSWER_TTL_S = 30.0  # a payout query's answer serves the same query this long (one scan, however many ask)
MAX_ANSWERS = 16
MAX_RANGE_MS = 62 * 24 * 3_600_000  # a payout query's range at most (two months)
MAX_TRACKED_WITNESSES = 100_000


@dataclass(frozen=True)
class LedgerSetup:
    """What the RM role needs to run the ledger, from ``[accounting]`` and ``[ring]``."""

    url: str
    rules: OfficeRules
    update_interval_s: float
    max_batches_per_hour: int

    @classmethod
    def of(cls, section: AccountingSection, url: str, ring: RingConfig) -> LedgerSetup:
        rules = OfficeRules(
            successors=ring.successor_list_length,
            rules=section.rules(),
            periods=section.periods(),
            thresholds=section.thresholds(),
            close_delay_ms=section.close_delay_s * 1000,
            resource_managers=ring.resource_managers,
        )
        return cls(url, rules, section.class_update_interval_s, section.max_batches_per_hour)


def live_ring_members(ring: RingService) -> list[int]:
    """The ring ids this node's member holds alive (or suspected: not dead yet)."""
    try:
        view = ring.view()
    except RingError:
        return []
    return [peer.node_id for peer, status, _ in view.members if status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)]


class LedgerKeeper:
    """The active RM's ledger (see the module doc)."""

    def __init__(
        self,
        url: str,
        key: ec.EllipticCurvePrivateKey,
        rules: OfficeRules,
        reactor: IReactorTime,
        *,
        me: int,
        live_members: Callable[[], Iterable[int]] = tuple,
        update_interval_s: float = 300.0,
        max_batches_per_hour: int = 120,
        on_classes: Callable[[frozenset[int]], None] | None = None,
        store: LedgerStore | None = None,
    ) -> None:
        self.url, self.key, self.rules, self.reactor = url, key, rules, reactor
        self.store = store  # given: written through it (else an SqlLedgerStore on url)
        self._stopped = False
        self.me = me
        self.live_members = live_members
        self.update_interval_s = update_interval_s
        self.max_batches_per_hour = max_batches_per_hour
        self.on_classes = on_classes
        self.office: LedgerOffice | None = None
        self._run: Runner | None = None
        self._pool: ThreadPool | None = None
        self._loop: task.LoopingCall | None = None
        self._joined: set[int] = set()
        self._left: set[int] = set()
        self._flush: IDelayedCall | None = None
        # each witness's allowance: max_batches_per_hour, refilled over the hour
        self._allowance = PeerRateLimit(max_batches_per_hour / 3600, max_batches_per_hour, MAX_TRACKED_WITNESSES)
        self._started_ms = 0  # since when this RM takes witnesses' batches
        self._answers: dict[Period | None, tuple[float, defer.Deferred[PayoutReport]]] = {}  # payout queries, cached

    def now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def _call(self, work: Callable[[LedgerOffice], T]) -> defer.Deferred[T]:
        """``work`` on the ledger's thread; NodeRefused when the ledger is not open, or when a write through the
        RM's journal was not made because this node stopped leading it (the caller retries on the next active)."""
        office, run = self.office, self._run
        if office is None or run is None:
            return defer.fail(NodeRefused("the ledger is not open (yet)"))

        def stood_down(failure: Failure) -> Failure:
            failure.trap(NotLeader)
            raise NodeRefused("this ResourceManager stands down: retry on the active one")

        return run(lambda: work(office)).addErrback(stood_down)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the ledger (creating it), append the membership snapshot, start the periodic work."""
        assert IReactorThreads.providedBy(self.reactor)
        self._run, self._pool = thread_runner(self.reactor, "rm-ledger")
        self._pool.start()
        rules, key = self.rules, self.key
        clock = self.reactor

        def wall_ms() -> int:  # (read on the ledger's thread: the reactor's clock is the wall clock)
            return int(clock.seconds() * 1000)

        given = self.store
        self.office = await self._run(
            lambda: LedgerOffice(MerkleLog(given or SqlLedgerStore(self.url)), key, rules, wall_ms)
        )
        self._started_ms = self.now_ms()
        size = await self._call(lambda office: office.log.size())
        through = "" if given is None else " (a copy: written through the RM's journal)"
        log.info("ledger open at {url}{through}: {size} entries", url=_safe(self.url), through=through, size=size)
        self._loop = task.LoopingCall(self._periodic)
        self._loop.clock = self.reactor
        self._loop.start(self.update_interval_s, now=True)

    def snapshot_when(self, joined: defer.Deferred[None], settle_s: float = JOIN_SETTLE_S) -> None:
        """Append the snapshot of the ring's live members once ``joined`` fires (this node is on the
        ring) and ``settle_s`` more have passed for its member table to fill (at most ``JOIN_WAIT_S``)."""
        joined.addTimeout(JOIN_WAIT_S, self.reactor)

        def settled(_: object) -> defer.Deferred[None]:
            return task.deferLater(self.reactor, settle_s, lambda: None).addCallback(lambda _: self._snapshot())

        joined.addBoth(settled).addErrback(_logged("could not record the ring's members in the ledger"))

    def snapshot_now(self) -> defer.Deferred[None]:
        """Append the snapshot of the ring's live members now (a node already on the ring that takes over the
        RM: its key is then in the log before it signs a head)."""
        d = self._snapshot()
        return d.addErrback(_logged("could not record the ring's members in the ledger"))

    def _snapshot(self) -> defer.Deferred[None]:
        live = {self.me, *self.live_members()}
        change = membership_change(self.now_ms(), joined=live, snapshot=True)
        d = self._call(lambda office: office.record_membership(change))
        return d.addCallback(lambda _: log.info("ledger: {count} live ring members recorded", count=len(live)))

    def stop(self) -> None:
        """Stop the periodic work, let the thread finish what was issued, close the database."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._flush is not None and self._flush.active():
            self._flush.cancel()  # (a change of the last half second is lost: the next start's snapshot covers it)
        if self.store is not None:
            self.store.close()  # (a replicated store's writes under way end: the thread is joined next)
        if self._pool is not None:
            self._pool.stop()  # waits for queued work
            self._pool = None
        if self.office is not None:
            self.office.log.store.close()  # (the thread is gone: nothing else uses it)
            self.office = None

    # ------------------------------------------------------------ membership

    def membership_changed(self, event: MembershipEvent) -> None:
        """The ring member's listener: a member came or went (ignored once stopped: this RM stood down)."""
        if self._stopped:
            return
        if isinstance(event, MemberJoined):
            self._joined.add(event.peer.node_id)
            self._left.discard(event.peer.node_id)
        elif isinstance(event, (MemberDied, MemberLeft)):
            self._left.add(event.peer.node_id)
            self._joined.discard(event.peer.node_id)
        else:
            return
        if self._flush is None or not self._flush.active():
            self._flush = self.reactor.callLater(MEMBERSHIP_COALESCE_S, self._write_membership)

    def _write_membership(self) -> defer.Deferred[None]:
        joined, left = self._joined - {self.me}, self._left - {self.me}
        self._joined, self._left = set(), set()
        if not joined and not left:
            return defer.succeed(None)
        change = membership_change(self.now_ms(), joined=joined, left=left)
        d = self._call(lambda office: office.record_membership(change))
        return d.addCallbacks(
            lambda _: None, _logged("could not record a membership change in the ledger")
        )  # fmt: skip

    # ------------------------------------------------------------ witnesses

    def submit(self, witness: int, batches: list[SignedAttestations]) -> defer.Deferred[Receipts]:
        """A witness's batches (its connection proved ``witness``); NodeRefused over its hourly allowance."""
        now = self.now_ms()
        if not self._allowance.allow(witness, now / 1000, cost=len(batches)):
            return defer.fail(NodeRefused(f"more than {self.max_batches_per_hour} attestation batches an hour; retry later"))

        def refused(failure: Failure) -> Failure:
            failure.trap(SubmissionRefused)
            raise NodeRefused(str(failure.value))

        return self._call(lambda office: office.submit(witness, batches, now)).addErrback(refused)

    # ------------------------------------------------------------ periodic work and queries

    def _periodic(self) -> defer.Deferred[None]:
        """Close the periods due, then re-class the nodes (each on its own: one failing leaves the other)."""
        now, since = self.now_ms(), self._started_ms

        def closed(periods: list[Period]) -> None:
            for period in periods:
                log.info("pay period [{start}, {end}) closed: its payout statement is in the ledger", start=period.start_ms, end=period.end_ms)

        def classed(static: frozenset[int]) -> None:
            if self.on_classes is not None:
                self.on_classes(static)

        d1 = self._call(lambda office: office.close_due(now, since)).addCallback(closed)
        d1.addErrback(_logged("closing pay periods failed"))
        d2 = self._call(lambda office: office.update_classes(now)).addCallback(classed)
        d2.addErrback(lambda f: log.failure("classing the nodes failed", f))
        return defer.gatherResults([d1, d2]).addCallback(lambda _: None)

    def payouts(self, period: Period | None) -> defer.Deferred[PayoutReport]:
        """A period's payouts; the same query within ``ANSWER_TTL_S`` shares one answer (one scan of the log)."""
        if period is not None and period.length_ms > MAX_RANGE_MS:
            return defer.fail(BadLedgerRequest(f"a payout range is at most {MAX_RANGE_MS // 86_400_000} days"))
        now = self.reactor.seconds()
        cached = self._answers.get(period)
        if cached is None or now - cached[0] > ANSWER_TTL_S:
            if len(self._answers) >= MAX_ANSWERS:
                self._answers = {k: v for k, v in self._answers.items() if now - v[0] <= ANSWER_TTL_S}
                if len(self._answers) >= MAX_ANSWERS:
                    return defer.fail(NodeRefused("too many payout queries at once; retry in a minute"))
            now_ms = self.now_ms()
            answer = self._call(lambda office: office.payouts(period, now_ms))
            answer.addErrback(lambda f: (self._answers.pop(period, None), f)[1])
            cached = self._answers[period] = (now, answer)
        return _share(cached[1])

    def tree_head(self) -> defer.Deferred[SignedTreeHead]:
        now = self.now_ms()
        return self._call(lambda office: office.tree_head(now))

    def entries(self, start: int, end: int) -> defer.Deferred[list[StoredEntry]]:
        return self._call(lambda office: office.log.entries(start, end))

    def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]:
        return self._call(lambda office: office.log.consistency_proof(first, second))

    def inclusion_proof(self, index: int, size: int) -> defer.Deferred[list[bytes]]:
        return self._call(lambda office: office.log.inclusion_proof(index, size))


def _logged(what: str) -> Callable[[Failure], None]:
    """An errback that logs ``what`` failed: as info when this RM stood down or was stopped (NodeRefused), else
    with the failure."""

    def errback(failure: Failure) -> None:
        if failure.check(NodeRefused):
            log.info("{what}: {why}", what=what, why=str(failure.value))
        else:
            log.failure(what, failure)

    return errback


def _safe(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _share(source: defer.Deferred[T]) -> defer.Deferred[T]:
    """A Deferred that fires with ``source``'s result, leaving that result for the next one.

    A failure goes to this one alone (its query left the cache as it failed: nobody shares it later).
    """
    shared: defer.Deferred[T] = defer.Deferred()

    def relay(result: T | Failure) -> T | None:
        if isinstance(result, Failure):
            shared.errback(result)
            return None
        shared.callback(result)
        return result

    source.addBoth(relay)
    return shared
