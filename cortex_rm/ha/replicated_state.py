"""The RM's state store through the journal: a write is acknowledged once a majority of the eligible nodes
hold it, and every eligible node applies it to its own copy.

``ReplicatedStateStore`` has the ``RMStateStore`` contract (``allocator/state_store.py``).  Each
write becomes one journal entry — ``{"store": "rm", "op": <method>, "args": [...]}`` as JSON,
bytes as ``{"b64": ...}`` — proposed to the journal (``Proposer``: ``roles/rm_journal.RmJournal``);
its Deferred fires once the entry is committed and applied here.  Every eligible node applies
committed entries to its own local store (``apply``), so a standby that takes over loads the
state the old active acknowledged.  Reads (``load``) are the local copy's.

Applying is idempotent — each operation puts or removes by key, and the high-water marks
never go down — so a node that restarts re-applies from the last position it saved, and a
crash between applying and saving the position loses nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer

from cortex_rm.allocator.state_store import RMStateStore, StoredState

STORE = "rm"
#: The operations a journal entry may carry, with how many arguments each takes.
OPERATIONS = {
    "save_cluster_timestamp": 1, "save_app_id_high_water": 1, "save_application": 2, "save_master_key": 3,
    "remove_application": 1, "save_delegation_token": 2, "remove_delegation_tokens": 1, "save_epoch": 1,
}  # fmt: skip


class Proposer(Protocol):
    def propose(self, data: bytes) -> defer.Deferred[int]:
        """Fires once ``data`` is committed and applied here; fails when this node does not lead."""


class UnknownOperation(ValueError):
    """A journal entry this version cannot apply (a newer RM wrote it, or it is damaged)."""


def encode_operation(store: str, op: str, args: list[Any]) -> bytes:
    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"b64": base64.b64encode(value).decode("ascii")}
        raise TypeError(f"cannot journal a {type(value).__name__}")

    return json.dumps({"store": store, "op": op, "args": args}, default=plain, separators=(",", ":")).encode()


def decode_operation(data: bytes) -> tuple[str, str, list[Any]]:
    def hook(value: dict[str, Any]) -> Any:
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            return base64.b64decode(value["b64"])
        return value

    try:
        document = json.loads(data, object_hook=hook)
    except (ValueError, RecursionError) as e:
        raise UnknownOperation(f"a journal entry that is not JSON: {e}") from None
    if not isinstance(document, dict) or not isinstance(document.get("args"), list):
        raise UnknownOperation("a journal entry must be an object with store, op and args")
    store, op = document.get("store"), document.get("op")
    if not isinstance(store, str) or not isinstance(op, str):
        raise UnknownOperation("a journal entry's store and op must be strings")
    return store, op, document["args"]


class ReplicatedStateStore:
    """See the module docstring.  ``local`` is this node's own copy (``SqlStateStore``)."""

    def __init__(self, local: RMStateStore, journal: Proposer) -> None:
        self.local = local
        self.journal = journal

    def load(self, applications: bool = True) -> defer.Deferred[StoredState]:
        return self.local.load(applications)

    def _write(self, op: str, *args: Any) -> defer.Deferred[None]:
        d = self.journal.propose(encode_operation(STORE, op, list(args)))
        return d.addCallback(lambda _: None)

    def save_cluster_timestamp(self, timestamp: int) -> defer.Deferred[None]:
        return self._write("save_cluster_timestamp", timestamp)

    def save_app_id_high_water(self, high_water: int) -> defer.Deferred[None]:
        return self._write("save_app_id_high_water", high_water)

    def save_application(self, document: dict[str, Any], context: bytes) -> defer.Deferred[None]:
        return self._write("save_application", document, context)

    def save_master_key(self, name: str, key_id: int, secret: bytes) -> defer.Deferred[None]:
        return self._write("save_master_key", name, key_id, secret)

    def remove_application(self, app_id: str) -> defer.Deferred[None]:
        return self._write("remove_application", app_id)

    def save_delegation_token(self, sequence: int, document: dict[str, Any]) -> defer.Deferred[None]:
        return self._write("save_delegation_token", sequence, document)

    def remove_delegation_tokens(self, sequences: list[int]) -> defer.Deferred[None]:
        return self._write("remove_delegation_tokens", sequences)

    def save_epoch(self, epoch: int) -> defer.Deferred[None]:
        return self._write("save_epoch", epoch)

    def close(self) -> None:
        self.local.close()


def state_applier(local: RMStateStore) -> Callable[[str, list[Any]], defer.Deferred[None]]:
    """Applies one ``rm`` operation to ``local``: what a node's journal ``apply`` calls for entries of this store."""

    def apply(op: str, args: list[Any]) -> defer.Deferred[None]:
        arity = OPERATIONS.get(op)
        if arity is None or len(args) != arity:
            raise UnknownOperation(f"the RM's state store has no operation {op!r} of {len(args)} arguments")
        result: defer.Deferred[None] = getattr(local, op)(*args)
        return result

    return apply
