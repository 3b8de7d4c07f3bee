"""An RM-eligible node with standbys: the active ResourceManager while its journal leads, a standby otherwise.

Built by the composition root (``node.py``) when ``[resourcemanager] enabled`` and ``[ring]
resource_managers`` names this node and at least one other (YARN's ``ha.enabled`` with ``rm-ids``):

* **Always**: the node's local copies of the RM's stores (``rm_stores.py``, on the state-store URL)
  and its journal (``rm_journal.py``, in ``<state_dir>/rm-journal.sqlite``), which applies every
  committed entry to those copies.  So a standby holds everything the active acknowledged.
* **While the journal leads** (``on_leading``, after everything committed before is applied here):
  the ResourceManager role (``resource_manager.py``) over the local copies written *through* the
  journal, on this node's own RM ports; it recovers the state as an RM restart does.
* **While it follows**: no RM role and none of the RM's ports bound.  Hadoop's clients are refused
  the connection and fail over to the next of their ``rm-ids``, as with a standby of Hadoop's own
  (``yarn-wire-facts.md`` §6); NodeManagers find the active through the ring's RM record, which
  only the active publishes.  Active or standby, it publishes its configured RM addresses under a key
  of its own (``rm_directory.py``), so every node can name all the eligible RMs.

A lead lost (another node's epoch, or no majority heard within the lease: ``ha/journal.py``) stops
the role and closes its ports before anything else; its writes already under way fail with
``NotLeader`` and are not acknowledged.  Changes of role run one at a time, and a change that
became moot while waiting (led, then lost, then led again) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cortex_rm.ha.journal import Epoch
from cortex_rm.ha.journal_store import JournalStore
from cortex_rm.roles.resource_manager import ResourceManagerRole
from cortex_rm.roles.ring_records import Republisher, ResourceManagerRecord
from cortex_rm.roles.rm_directory import publish_eligible
from cortex_rm.roles.ring_service import RingService
from cortex_rm.roles.rm_journal import RingLinks, RmJournal
from cortex_rm.roles.rm_stores import RmStores, journal_apply, sql_stores, through_journal
from cortex_rm.roles.threads import thread_runner
from cortex_rm.yarn.reactors import INodeReactor

log = Logger()

JOURNAL_FILE = "rm-journal.sqlite"


class RmHighAvailability:
    """See the module docstring.  ``make_role(stores)`` builds an RM role over ``stores``;
    ``close_ports()`` closes the ports a role bound; ``on_active(role)`` runs once a role serves."""

    def __init__(
        self,
        ring: RingService,
        preference: Sequence[int],
        own: ResourceManagerRecord,
        *,
        state_dir: Path,
        state_store_url: str,
        reactor: INodeReactor,
        make_role: Callable[[RmStores], ResourceManagerRole],
        close_ports: Callable[[], defer.Deferred[None]],
        on_active: Callable[[ResourceManagerRole], None] = lambda role: None,
        election_timeout_s: float = 5.0,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.ring, self.preference, self.own, self.reactor = ring, tuple(preference), own, reactor
        self.state_dir, self.state_store_url = state_dir, state_store_url
        self.make_role, self.close_ports, self.on_active = make_role, close_ports, on_active
        self.election_timeout_s, self.heartbeat_s = election_timeout_s, heartbeat_s
        self.role: ResourceManagerRole | None = None  # the active RM, while this node leads
        self.journal: RmJournal | None = None
        self.local: RmStores | None = None
        self.epoch: Epoch | None = None  # the journal epoch the role serves in
        self._pool: ThreadPool | None = None
        self._changes = defer.DeferredLock()
        self._want: Epoch | None = None  # the epoch to serve in (None: standby)
        self._stopped = False
        self._publisher: Republisher | None = None

    async def start(self) -> None:
        """Open the local copies and the journal; this node is a standby until the journal leads."""
        run, self._pool = thread_runner(self.reactor, name="rm-state-store")
        self._pool.start()
        self.local = sql_stores(self.state_store_url, run)
        store = JournalStore(f"sqlite:///{self.state_dir / JOURNAL_FILE}", run)
        self.journal = RmJournal(
            RingLinks(self.ring), frozenset(self.preference), store, self.reactor, journal_apply(self.local),
            heartbeat_s=self.heartbeat_s, election_timeout_s=self.election_timeout_s,
            on_leading=self._leading, on_following=self._following, preference=self.preference,
        )  # fmt: skip
        await self.journal.start()
        self._publisher = Republisher(lambda: publish_eligible(self.ring, self.ring.identity.ring_id, self.own), self.reactor)
        self._publisher.start()
        log.info("ResourceManager standby: the journal of {count} eligible nodes is open", count=len(self.preference))

    @property
    def active(self) -> bool:
        return self.role is not None

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
        role = self.make_role(through_journal(self.local, self.journal))
        self.role, self.epoch = role, epoch
        try:
            await role.start(int(self.reactor.seconds() * 1000))
        except Exception:
            log.failure("the ResourceManager cannot start as the active; this node leaves the journal (restart it)")
            await self._stand_down()
            self.journal.stop()  # another eligible node takes the lead once this one's lease lapses
            return
        self.on_active(role)

    async def _stand_down(self) -> None:
        role, self.role, self.epoch = self.role, None, None
        if role is None:
            return
        log.info("this node stands down as the active ResourceManager; it stays a standby")
        await self.close_ports()
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
