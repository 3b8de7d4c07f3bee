"""The RM's three stores — its own state, the file system's namespace and the function registry — as one set.

A ResourceManager without standbys opens them on its state-store URL (``sql_stores``) and closes them
when it stops.  An RM-eligible node with standbys keeps its local copies open for as long as the
daemon runs: its journal applies every committed entry to them (``journal_apply``), and while the
node is the active RM its role writes through the journal (``through_journal``), so a write is
acknowledged only once a majority of the eligible nodes hold it (``ha/replicated_state.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer

from cortex_rm.allocator.state_store import RMStateStore, SqlStateStore
from cortex_rm.events.registry_store import RegistryStore, SqlRegistryStore
from cortex_rm.fs.namespace_store import NamespaceStore, SqlNamespaceStore
from cortex_rm.ha import replicated_fs, replicated_registry, replicated_state
from cortex_rm.ha.journal import Entry
from cortex_rm.ha.journal_applier import journal_applier
from cortex_rm.ha.replicated_state import Proposer
from cortex_rm.yarn.blocking import Runner


@dataclass(frozen=True)
class RmStores:
    state: RMStateStore
    namespace: NamespaceStore
    registry: RegistryStore

    def close(self) -> None:
        self.state.close()
        self.namespace.close()
        self.registry.close()


def sql_stores(url: str, run: Runner) -> RmStores:
    """The three stores on one SQLAlchemy URL (tables of their own), their blocking work on ``run``."""
    return RmStores(SqlStateStore(url, run), SqlNamespaceStore(url, run), SqlRegistryStore(url, run))


def through_journal(local: RmStores, journal: Proposer) -> RmStores:
    """``local``'s stores writing through ``journal`` (reads stay local)."""
    return RmStores(
        replicated_state.ReplicatedStateStore(local.state, journal),
        replicated_fs.ReplicatedNamespaceStore(local.namespace, journal),
        replicated_registry.ReplicatedRegistryStore(local.registry, journal),
    )


def journal_apply(local: RmStores) -> Callable[[Entry], defer.Deferred[None]]:
    """What the journal does with a committed entry: apply it to the local copy of its store."""
    return journal_applier({
        replicated_state.STORE: replicated_state.state_applier(local.state),
        replicated_fs.STORE: replicated_fs.namespace_applier(local.namespace),
        replicated_registry.STORE: replicated_registry.registry_applier(local.registry),
    })  # fmt: skip
