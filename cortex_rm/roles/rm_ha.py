"""An RM-eligible node with standbys: the active ResourceManager while its journal leads, a standby otherwise.

Built by the composition root (``node.py``) when ``[resourcemanager] enabled`` and ``[ring]
resource_managers`` names this node and at least one other (YARN's ``ha.enabled`` with ``rm-ids``):

* **Always**: the node's local copies of the RM's stores (``rm_stores.py``, on the state-store URL)
  and its journal (``rm_journal.py``, in ``<state_dir>/rm-journal.sqlite``), which applies every
  committed entry to those copies.  So a standby holds everything the active acknowledged.
* **While the journal leads** (``on_leading``, after everything committed before is applied here):
  the ResourceManager role (``resource_manager.py``) over the local copies written *through* the
  journal, on this node's own RM ports; it recovers the state as an RM restart does.
* **While it follows**: no RM role, and of the RM's ports only the web address, where YARN's
  standby answers (``yarn_api/standby_web.py``: ``haState`` STANDBY, a redirect to the active, WebHDFS's
  ``StandbyException``, or ``RetriableException`` during an election).  Its IPC and tracker ports
  are not bound: Hadoop's clients are refused the connection and fail over to the next of their
  ``rm-ids``, as with a standby of Hadoop's own (``yarn-wire-facts.md`` §6); NodeManagers find the
  active through the ring's RM record, which only the active publishes.  Active or standby, it publishes
  its configured RM addresses under a key of its own (``rm_directory.py``), so every node can name all the eligible RMs.

A lead lost (another node's epoch, or no majority heard within the lease: ``ha/journal.py``) closes
the role's ports and cuts their connections (its web port goes back to the standby's answers) before
anything else, then stops the role; its writes already under way fail with
``NotLeader`` and are not acknowledged.  Changes of role run one at a time, and a change that
became moot while waiting (led, then lost, then led again) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cortex_rm import __version__
from cortex_rm.ha.journal import Epoch, NotLeader
from cortex_rm.ha.journal_store import JournalStore
from cortex_rm.ha.store_snapshot import StoreSnapshots
from cortex_rm.roles.ports import Listen, TrackedConnections
from cortex_rm.roles.resource_manager import ResourceManagerRole
from cortex_rm.roles.ring_records import Republisher, ResourceManagerRecord
from cortex_rm.roles.rm_directory import publish_eligible
from cortex_rm.roles.ring_service import RingService
from cortex_rm.roles.rm_journal import RingLinks, RmJournal
from cortex_rm.roles.rm_stores import RmStores, journal_apply, snapshot_databases, sql_stores, through_journal
from cortex_rm.roles.threads import thread_runner
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn_api.http_limits import API_LIMITS, LimitedSite
from cortex_rm.yarn_api.rm_proof_web import OwnAddresses, RmProofResource, RmProofs, StoredSecrets
from cortex_rm.yarn_api.standby_web import StandbyWeb, SwitchingFactory, standby_cluster_info

log = Logger()

JOURNAL_FILE = "rm-journal.sqlite"
WEBAPP = "resourcemanager.webapp_address"

#: ``bind(name, address, factory)``: listen (the node records it) and return the bound address and port.
Bind = Callable[[str, HostPort, IProtocolFactory], tuple[HostPort, IListeningPort]]


class InEpoch:
    """The journal as one role's proposer: its writes are taken only while this node leads in ``epoch``."""

    def __init__(self, journal: RmJournal, epoch: Epoch) -> None:
        self.journal, self.epoch = journal, epoch

    def propose(self, data: bytes) -> defer.Deferred[int]:
        return self.journal.propose(data, epoch=self.epoch)


class RmHighAvailability:
    """See the module docstring.  ``make_role(stores, listen)`` builds an RM role over ``stores`` listening
    with ``listen``; ``bind`` and ``unbind`` listen and close for the node; ``webapp_of(ring id)`` is an
    eligible node's RM web address; ``on_active(role)`` runs once a role serves."""

    def __init__(
        self,
        ring: RingService,
        preference: Sequence[int],
        own: ResourceManagerRecord,
        *,
        state_dir: Path,
        state_store_url: str,
        reactor: INodeReactor,
        make_role: Callable[[RmStores, Listen], ResourceManagerRole],
        bind: Bind,
        unbind: Callable[[str, IListeningPort], defer.Deferred[None]],
        webapp_of: Callable[[int], str | None],
        on_active: Callable[[ResourceManagerRole], None] = lambda role: None,
        ledger_url: str | None = None,
        election_timeout_s: float = 5.0,
        heartbeat_s: float = 1.0,
        journal_log_tail: int = 1000,
    ) -> None:
        self.ring, self.preference, self.own, self.reactor = ring, tuple(preference), own, reactor
        self.state_dir, self.state_store_url = state_dir, state_store_url
        self.make_role, self.bind, self.unbind, self.on_active = make_role, bind, unbind, on_active
        self.webapp_of, self.ledger_url = webapp_of, ledger_url
        self.election_timeout_s, self.heartbeat_s = election_timeout_s, heartbeat_s
        self.journal_log_tail = journal_log_tail  # ([resourcemanager] journal_log_tail)
        self.role: ResourceManagerRole | None = None  # the active RM, while this node leads
        self.journal: RmJournal | None = None
        self.local: RmStores | None = None
        self.epoch: Epoch | None = None  # the journal epoch the role serves in
        self._pool: ThreadPool | None = None
        self._journal_store: JournalStore | None = None
        self._changes = defer.DeferredLock()
        self._want: Epoch | None = None  # the epoch to serve in (None: standby)
        self._stopped = False
        self._publisher: Republisher | None = None
        self.web: SwitchingFactory | None = None  # the web port: the standby's answers, or the active's site
        self._standby_site: LimitedSite | None = None
        # the active role's ports other than the web port, closed (with their connections) when it stands down
        self._role_ports: list[tuple[str, IListeningPort, TrackedConnections]] = []
        self._role_web: TrackedConnections | None = None

    async def start(self) -> None:
        """Open the local copies and the journal; this node is a standby until the journal leads."""
        run, self._pool = thread_runner(self.reactor, name="rm-state-store")
        self._pool.start()
        self.local = sql_stores(self.state_store_url, run, ledger_url=self.ledger_url)
        self._journal_store = JournalStore(f"sqlite:///{self.state_dir / JOURNAL_FILE}", run)
        self.journal = RmJournal(
            RingLinks(self.ring), frozenset(self.preference), self._journal_store, self.reactor,
            journal_apply(self.local),
            heartbeat_s=self.heartbeat_s, election_timeout_s=self.election_timeout_s,
            on_leading=self._leading, on_following=self._following, preference=self.preference,
            snapshots=StoreSnapshots(snapshot_databases(self.state_store_url, self.ledger_url), self.state_dir, run),
            log_tail=self.journal_log_tail,
        )  # fmt: skip
        await self.journal.start()
        started_ms, own = int(self.reactor.seconds() * 1000), self.own
        # the RM proof from this node's copy of the delegation key and tokens (client-config verifies standbys too)
        proofs = RmProofs(StoredSecrets(self.local.state, self.reactor, lambda: int(self.reactor.seconds() * 1000)),
                          self.reactor, OwnAddresses(own.webapp_address, own.client_address, own.scheduler_address))
        standby = StandbyWeb(self._active_webapp, lambda: standby_cluster_info(__version__, started_ms),
                             RmProofResource(proofs))  # fmt: skip
        self._standby_site = LimitedSite(standby, limits=API_LIMITS, clock=self.reactor, name="standby RM web",
                                         untyped_prefixes=(b"/webhdfs/",))  # fmt: skip
        self.web = SwitchingFactory(self._standby_site)
        self.bind(WEBAPP, self.own.webapp_address, self.web)
        me = self.ring.identity.ring_id
        self._publisher = Republisher(lambda: publish_eligible(self.ring, me, self.own), self.reactor)
        self._publisher.start()
        log.info("ResourceManager standby: the journal of {count} eligible nodes is open", count=len(self.preference))

    def _active_webapp(self) -> str | None:
        """The web address of the active RM on another node (None: none is known to lead, or this node is taking
        over)."""
        leader = self.journal.live_leader() if self.journal is not None else None
        if leader is None or leader == self.ring.identity.ring_id:
            return None
        return self.webapp_of(leader)

    def _listen(self, name: str, address: HostPort, factory: IProtocolFactory) -> HostPort:
        """The role's ``listen``: its web site takes over the standby's port; its other ports are bound now."""
        tracked = TrackedConnections(factory)
        if name == WEBAPP and self.web is not None:
            self._role_web = tracked
            self.web.switch(tracked)
            return address
        bound, port = self.bind(name, address, tracked)
        self._role_ports.append((name, port, tracked))
        return bound

    async def _close_role_ports(self) -> None:
        """Close the role's ports and cut their connections; the web port answers as the standby again."""
        ports, self._role_ports = self._role_ports, []
        for name, port, tracked in ports:
            await self.unbind(name, port)
            tracked.abort_all()
        if self._role_web is not None and self.web is not None and self._standby_site is not None:
            self.web.switch(self._standby_site)
            self._role_web.abort_all()
            self._role_web = None

    def _leading(self, epoch: Epoch) -> None:
        self._want = epoch
        self._changes.run(self._settle).addErrback(lambda f: log.failure("taking the active RM's role failed", f))

    def _following(self) -> None:
        self._want = None
        self._changes.run(self._settle).addErrback(lambda f: log.failure("standing down as the active RM failed", f))

    def _settle(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._become(self._want))

    async def _become(self, epoch: Epoch | None) -> None:
        """Serve as the active RM in ``epoch``, or as a standby (None); a no-op when already so."""
        if self._stopped or epoch == self.epoch:
            return
        if self.role is not None:
            await self._stand_down()
        if epoch is None:
            return
        assert self.journal is not None and self.local is not None
        log.info("this node becomes the active ResourceManager (journal epoch {epoch})", epoch=epoch[0])
        role = self.make_role(through_journal(self.local, InEpoch(self.journal, epoch)), self._listen)
        self.role, self.epoch = role, epoch
        try:
            await role.start(int(self.reactor.seconds() * 1000))
        except Exception as e:
            await self._stand_down()
            if isinstance(e, NotLeader) or self._want != epoch or self._stopped:
                log.info("the lead was lost while the ResourceManager started; this node stays a standby")
                return
            log.failure("the ResourceManager cannot start as the active; this node leaves the journal (restart it)")
            self.journal.stop()  # another eligible node takes the lead once this one's lease lapses
            return
        self.on_active(role)

    async def _stand_down(self) -> None:
        role, self.role, self.epoch = self.role, None, None
        if role is None:
            return
        log.info("this node stands down as the active ResourceManager; it stays a standby")
        await self._close_role_ports()
        role.stop()

    def stop(self) -> defer.Deferred[None]:
        """Stand down (ports closed, role stopped), leave the journal and close the local copies."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._stopped = True
        if self._publisher is not None:
            self._publisher.stop()
        if self.journal is not None:
            self.journal.stop()  # (its on_following is moot now: _stopped)
        await self._changes.run(lambda: defer.ensureDeferred(self._stand_down()))
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()  # what the journal applied is written
        if self.local is not None:
            self.local.close()
        if self._journal_store is not None:
            self._journal_store.close()
