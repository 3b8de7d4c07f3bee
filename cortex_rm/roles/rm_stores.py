"""The RM's stores — its own state, the file system's namespace, the function registry and the uptime ledger —
as one set.

A ResourceManager without standbys opens them on its state-store URL (``sql_stores``) and closes them
when it stops (its ledger is then the one on ``[accounting] ledger_url``, opened by the ledger's
keeper: the set's ``ledger`` copy is not used).  An RM-eligible node with standbys keeps its local
copies open for as long as the daemon runs: its journal applies every committed entry to them
(``journal_apply``), and while the node is the active RM its role writes through the journal
(``through_journal``), so a write is acknowledged only once a majority of the eligible nodes hold
it (``ha/replicated_state.py``; the ledger's, ``ha/replicated_ledger.py``).  Their content is the
node's snapshot of the journal (``snapshot_databases``, ``ha/store_snapshot.py``): what the journal
discards, they hold, and a node far behind gets the leader's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData
from twisted.internet import defer

from cortex_rm.accounting import ledger_store
from cortex_rm.allocator import state_store
from cortex_rm.allocator.state_store import RMStateStore, SqlStateStore
from cortex_rm.events import registry_store
from cortex_rm.events.registry_store import RegistryStore, SqlRegistryStore
from cortex_rm.fs import namespace_store
from cortex_rm.fs.namespace_store import NamespaceStore, SqlNamespaceStore
from cortex_rm.ha import ledger_parts, replicated_fs, replicated_ledger, replicated_registry, replicated_state
from cortex_rm.ha.journal import Entry
from cortex_rm.ha.journal_applier import StoreApplier, journal_applier
from cortex_rm.ha.replicated_ledger import LedgerCopy, sql_ledger_copy
from cortex_rm.ha.replicated_state import Proposer
from cortex_rm.yarn.blocking import Runner


@dataclass(frozen=True)
class RmStores:
    state: RMStateStore
    namespace: NamespaceStore
    registry: RegistryStore
    #: The node's copy of the uptime ledger (written through the journal by the active; see the module docstring).
    ledger: LedgerCopy | None = None

    def close(self) -> None:
        self.state.close()
        self.namespace.close()
        self.registry.close()
        if self.ledger is not None:
            self.ledger.close()


@dataclass(frozen=True)
class _SqlStore:
    """How ``sql_stores`` opens one of ``RmStores``' fields, and the tables it keeps (its modules' metadata)."""

    open: Callable[[str, Runner], Any]
    tables: tuple[MetaData, ...]
    on_ledger_url: bool = False  # on ``[accounting] ledger_url`` when one is given


#: Each of ``RmStores``' fields as ``sql_stores`` opens it: the one list both the stores and a journal snapshot's
#: databases (``snapshot_databases``) are made from, so no store can be left out of the snapshots.
_SQL_STORES = {
    "state": _SqlStore(SqlStateStore, (state_store._metadata,)),
    "namespace": _SqlStore(SqlNamespaceStore, (namespace_store._metadata,)),
    "registry": _SqlStore(SqlRegistryStore, (registry_store._metadata,)),
    "ledger": _SqlStore(sql_ledger_copy, (ledger_store._metadata, ledger_parts._metadata), on_ledger_url=True),
}


def _where(store: _SqlStore, url: str, ledger_url: str | None) -> str:
    return (ledger_url or url) if store.on_ledger_url else url


def sql_stores(url: str, run: Runner, ledger_url: str | None = None) -> RmStores:
    """The stores on one SQLAlchemy URL (tables of their own), their blocking work on ``run``; the ledger's copy
    on ``ledger_url`` (``[accounting] ledger_url``) when given, else beside the others on ``url``."""
    return RmStores(**{name: store.open(_where(store, url, ledger_url), run) for name, store in _SQL_STORES.items()})


def snapshot_databases(url: str, ledger_url: str | None = None) -> list[tuple[str, MetaData]]:
    """The databases ``sql_stores(url, run, ledger_url)`` keeps its tables in, each with those tables: what a
    journal snapshot holds (``ha/store_snapshot.py``).  The tables are the stores' own definitions (their
    modules' metadata), copied into one metadata per database."""
    databases: dict[str, MetaData] = {}
    for store in _SQL_STORES.values():
        metadata = databases.setdefault(_where(store, url, ledger_url), MetaData())
        for source in store.tables:
            for table in source.sorted_tables:
                table.to_metadata(metadata)
    return list(databases.items())


def through_journal(local: RmStores, journal: Proposer) -> RmStores:
    """``local``'s stores writing through ``journal`` (reads stay local)."""
    return RmStores(
        replicated_state.ReplicatedStateStore(local.state, journal),
        replicated_fs.ReplicatedNamespaceStore(local.namespace, journal),
        replicated_registry.ReplicatedRegistryStore(local.registry, journal),
        None if local.ledger is None else local.ledger.through(journal),
    )


def journal_apply(local: RmStores) -> Callable[[Entry], defer.Deferred[None]]:
    """What the journal does with a committed entry: apply it to the local copy of its store."""
    appliers: dict[str, StoreApplier] = {
        replicated_state.STORE: replicated_state.state_applier(local.state),
        replicated_fs.STORE: replicated_fs.namespace_applier(local.namespace),
        replicated_registry.STORE: replicated_registry.registry_applier(local.registry),
    }
    if local.ledger is not None:
        appliers[replicated_ledger.STORE] = replicated_ledger.ledger_applier(local.ledger)
    return journal_applier(appliers)
