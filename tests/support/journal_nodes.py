"""Three RM-eligible nodes' journals (``roles/rm_journal.py``) with their local SQLite stores, on a fake clock and
the in-memory ring bus: what the replicated stores' unit tests run on.  Each node's copies are its own RM state,
namespace, registry and ledger stores, opened and applied to as an eligible node does (``roles/rm_stores.py``).
``ledger_of(i)`` is the blocking ledger store node i's active would write through: its waits pump the bus.
With ``log_tail``, each node compacts its journal and sends or installs snapshots of its stores (``wipe``
deletes a node's files, as a machine replaced would)."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.dht.peer import Peer
from cortex_rm.ha.journal import NotLeader
from cortex_rm.ha.journal_store import JournalStore
from cortex_rm.ha.replicated_fs import ReplicatedNamespaceStore
from cortex_rm.ha.replicated_ledger import LedgerCopy, ReplicatedLedgerStore
from cortex_rm.ha.replicated_registry import ReplicatedRegistryStore
from cortex_rm.ha.replicated_state import ReplicatedStateStore
from cortex_rm.ha.store_snapshot import StoreSnapshots
from cortex_rm.roles.rm_journal import RmJournal
from cortex_rm.roles.rm_stores import RmStores, journal_apply, snapshot_databases, sql_stores
from tests.support.journal_bus import Bus, Links
from tests.support.rm_core import result_of

IDS = [0x2222 << 140, 0x6666 << 140, 0xAAAA << 140]


class PumpWait:
    """The rig's ``BlockingWait``: the call runs on the test's thread and the bus is flushed (everything is
    synchronous there), so its Deferred has fired by the time it returns."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.interrupted = False

    def __call__(self, start: Callable[[], defer.Deferred[Any]]) -> Any:
        if self.interrupted:
            raise NotLeader(None)
        d = start()
        self.bus.flush()
        if not d.called:  # (no majority heard it: in the daemon the ledger's thread waits on, until interrupted)
            d.addErrback(lambda _: None)
            raise NotLeader(None)
        return result_of(d)

    def interrupt(self) -> None:
        self.interrupted = True


class Nodes:
    def __init__(self, tmp: Path, log_tail: int | None = None) -> None:
        self.tmp, self.clock, self.bus, self.log_tail = tmp, Clock(), Bus(), log_tail
        self.journals: dict[int, RmJournal] = {}
        self.copies: dict[int, RmStores] = {}
        for i in IDS:
            self.start(i)

    def url(self, i: int) -> str:
        return f"sqlite:///{self.tmp / f'rm-state-{i:x}.sqlite'}"

    def start(self, i: int) -> None:
        copies = sql_stores(self.url(i), synchronous_runner)
        apply = journal_apply(copies)
        snapshots = None
        if self.log_tail is not None:
            files = self.tmp / f"snapshots-{i:x}"
            files.mkdir(exist_ok=True)
            snapshots = StoreSnapshots(snapshot_databases(self.url(i)), files, synchronous_runner)
        journal = RmJournal(Links(self.bus, Peer(i, "h:1")), frozenset(IDS),
                            JournalStore(f"sqlite:///{self.tmp / f'journal-{i:x}.sqlite'}", synchronous_runner),
                            self.clock, apply, rng=random.Random(i), snapshots=snapshots,
                            log_tail=self.log_tail or 0)  # fmt: skip
        self.bus.up.add(i)
        result_of(defer.ensureDeferred(journal.start()))
        self.journals[i], self.copies[i] = journal, copies

    def kill(self, i: int) -> None:
        self.journals.pop(i).stop()
        self.copies.pop(i).close()
        self.bus.up.discard(i)

    def wipe(self, i: int) -> None:
        """Kill node i and delete its files (its journal, its stores, its snapshots): it starts again empty."""
        self.kill(i)
        for path in self.tmp.glob(f"*-{i:x}.sqlite*"):
            path.unlink()
        shutil.rmtree(self.tmp / f"snapshots-{i:x}", ignore_errors=True)

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)
            self.bus.flush()

    def leader(self) -> int:
        [leader] = [i for i, j in self.journals.items() if j.node is not None and j.node.is_leader]
        return leader

    def fs_of(self, i: int) -> ReplicatedNamespaceStore:
        return ReplicatedNamespaceStore(self.copies[i].namespace, self.journals[i])

    def registry_of(self, i: int) -> ReplicatedRegistryStore:
        return ReplicatedRegistryStore(self.copies[i].registry, self.journals[i])

    def write(self, d: defer.Deferred[Any]) -> None:
        self.bus.flush()
        result_of(d)

    def state_of(self, i: int) -> ReplicatedStateStore:
        return ReplicatedStateStore(self.copies[i].state, self.journals[i])

    def ledger_copy(self, i: int) -> LedgerCopy:
        copy = self.copies[i].ledger
        assert copy is not None  # (sql_stores always opens one)
        return copy

    def ledger_of(self, i: int) -> ReplicatedLedgerStore:
        return ReplicatedLedgerStore(self.ledger_copy(i).store, self.journals[i], PumpWait(self.bus))
