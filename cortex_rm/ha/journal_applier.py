"""What a node's journal does with a committed entry: decode it once and hand it to its store's applier.

The RM keeps four stores in one journal — its own state (``rm``, ``replicated_state.py``), the file
system's namespace (``fs``, ``replicated_fs.py``), the function registry (``events``,
``replicated_registry.py``) and the uptime ledger (``ledger``, ``replicated_ledger.py``) — so their writes are applied on every node in the one order the
leader made them.  Each entry is ``{"store": ..., "op": ..., "args": [...]}``; ``journal_applier``
routes it by ``store``.  An entry of a store this node does not know, or an operation its store
does not know, raises ``UnknownOperation`` naming it (a newer RM wrote it, or it is damaged), as does
an entry that is not one (``decode_operation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer

from cortex_rm.ha.journal import Entry
from cortex_rm.ha.replicated_state import UnknownOperation, decode_operation

#: One store's applier: ``(op, args)`` to the node's local copy, firing once applied there.
StoreApplier = Callable[[str, list[Any]], defer.Deferred[None]]


def journal_applier(appliers: Mapping[str, StoreApplier]) -> Callable[[Entry], defer.Deferred[None]]:
    """The journal's ``apply`` for entries of the stores in ``appliers`` (by store name)."""
    routes = dict(appliers)

    def apply(entry: Entry) -> defer.Deferred[None]:
        store, op, args = decode_operation(entry.data)
        applier = routes.get(store)
        if applier is None:
            known = ", ".join(sorted(routes))
            raise UnknownOperation(f"a journal entry of an unknown store {store[:40]!r} (known: {known})")
        return applier(op, args)

    return apply
