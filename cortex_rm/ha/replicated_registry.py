"""The function registry through the journal: each ``RegistryStore.apply`` is one journal entry,
acknowledged once a majority of the eligible nodes hold it and applied by every one of them.

``ReplicatedRegistryStore`` has the ``RegistryStore`` contract (``events/registry_store.py``): the
RM's event registry persists one ``RegistryChange`` through it, and its Deferred fires once the
entry ``{"store": "events", "op": "apply", "args": [name, saved, forgotten]}`` is committed and
applied here (``saved``: the registration's JSON, ``FunctionSpec.to_json``, or null; ``forgotten``:
the versions no longer kept).  Every eligible node applies committed entries to its own local
store (``registry_applier``), so a standby that takes over loads the registry the old active
acknowledged.  Reads (``load``) are the local copy's.

A registration's JSON is bounded (``functions.MAX_SPEC_BYTES``) and the kept versions few, so an
entry is far below the journal's bound.  Decoding checks everything (``FunctionSpec.from_json``
validates a registration), so what decodes can be stored.  Applying is idempotent (a store's
``apply`` replaces the saved version and deletes the forgotten ones), so a node that restarts may
apply an entry again from its saved applied mark.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from cortex_rm.events.functions import FunctionSpec, InvalidFunction
from cortex_rm.events.registry import RegistryChange
from cortex_rm.events.registry_store import RegistryStore
from cortex_rm.ha.replicated_state import Proposer, UnknownOperation, encode_operation

STORE = "events"
#: The registry's versions fit in a signed 64-bit SQL column (``FunctionSpec`` bounds them far lower).
_VERSION_RANGE = (1, (1 << 63) - 1)


def encode_change(change: RegistryChange) -> list[Any]:
    """``change`` as JSON values (module docstring); ``decode_change`` reads them back exactly."""
    saved = change.saved.to_json() if change.saved is not None else None
    return [change.name, saved, list(change.forgotten)]


def decode_change(args: list[Any]) -> RegistryChange:
    """``encode_change``'s values back; UnknownOperation naming what is wrong."""
    if not isinstance(args, list) or len(args) != 3:
        raise UnknownOperation("a registry change must be [name, saved, forgotten]")
    name, saved, forgotten = args
    if not isinstance(name, str):
        raise UnknownOperation("a registry change's name must be a string")
    spec = None
    if saved is not None:
        try:
            spec = FunctionSpec.from_json(saved)
        except InvalidFunction as e:
            raise UnknownOperation(f"a registry change of {name[:80]!r} saves no valid registration: {e}") from None
        if spec.name != name:
            raise UnknownOperation(f"a registry change of {name[:80]!r} saves a registration of {spec.name!r}")
    if not isinstance(forgotten, list):
        raise UnknownOperation("a registry change's forgotten versions must be a list")
    for version in forgotten:
        if type(version) is not int or not _VERSION_RANGE[0] <= version <= _VERSION_RANGE[1]:  # (not a bool)
            raise UnknownOperation(f"a registry change of {name[:80]!r} forgets a version that is not one")
    return RegistryChange(name, spec, tuple(forgotten))


class ReplicatedRegistryStore:
    """See the module docstring.  ``local`` is this node's own copy (``SqlRegistryStore``)."""

    def __init__(self, local: RegistryStore, journal: Proposer) -> None:
        self.local = local
        self.journal = journal

    def load(self) -> defer.Deferred[list[FunctionSpec]]:
        return self.local.load()

    def apply(self, change: RegistryChange) -> defer.Deferred[None]:
        """Fires once ``change`` is committed and applied here."""
        data = encode_operation(STORE, "apply", encode_change(change))
        return self.journal.propose(data).addCallback(lambda _: None)

    def close(self) -> None:
        self.local.close()


def registry_applier(local: RegistryStore) -> Callable[[str, list[Any]], defer.Deferred[None]]:
    """Applies one ``events`` operation to ``local``: what a node's journal ``apply`` calls for this store's entries."""

    def apply(op: str, args: list[Any]) -> defer.Deferred[None]:
        if op != "apply" or len(args) != 3:
            raise UnknownOperation(f"the registry store has no operation {op!r} of {len(args)} arguments")
        return local.apply(decode_change(args))

    return apply
