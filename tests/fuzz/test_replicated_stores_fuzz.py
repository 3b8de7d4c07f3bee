"""The journal entries of the namespace (``ha/replicated_fs.py``) and the function registry
(``ha/replicated_registry.py``) under hostile input, through the one router (``ha/journal_applier.py``).

* Mutated encodings of valid entries: ``UnknownOperation``, or an entry whose changes re-encode to
  themselves and apply to a store.
* Valid entries with one value anywhere in them replaced by any JSON value (byte mutations mostly
  break the JSON itself): the same.
* Any JSON as an entry's arguments: the same.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.events.registry_store import MemoryRegistryStore
from cortex_rm.fs.namespace_store import MemoryNamespaceStore
from cortex_rm.ha import replicated_fs, replicated_registry
from cortex_rm.ha.journal import Entry
from cortex_rm.ha.journal_applier import journal_applier
from cortex_rm.ha.replicated_state import UnknownOperation, decode_operation, encode_operation
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.support.rm_core import result_of
from tests.support.store_changes import namespace_changes, registry_changes

fs_entries = namespace_changes.map(lambda c: encode_operation("fs", "apply", [replicated_fs.encode_changes(c)]))
events_entries = registry_changes.map(
    lambda c: encode_operation("events", "apply", replicated_registry.encode_change(c))
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)


def applied_or_refused(data: bytes) -> None:
    """``data`` as a journal entry: refused with UnknownOperation, or decoded exactly and applied."""
    fs_store, registry_store = MemoryNamespaceStore(), MemoryRegistryStore()
    apply = journal_applier({"fs": replicated_fs.namespace_applier(fs_store),
                             "events": replicated_registry.registry_applier(registry_store)})  # fmt: skip
    try:
        store, _, args = decode_operation(data)
        if store == "fs" and len(args) == 1:
            changes = replicated_fs.decode_changes(args[0])
            assert replicated_fs.decode_changes(decode_operation(replicated_fs.entry_for(changes))[2][0]) == changes
        elif store == "events":
            change = replicated_registry.decode_change(args)
            assert replicated_registry.decode_change(replicated_registry.encode_change(change)) == change
        result_of(apply(Entry((1, 1), 1, data)))
    except UnknownOperation:
        return
    assert fs_store.transactions + registry_store.transactions == 1


@fuzz_settings(150)
@given(data=mutated(st.one_of(fs_entries, events_entries), max_mutations=4))
def test_mutated_store_entries_apply_or_are_refused(data: bytes) -> None:
    applied_or_refused(data)


@fuzz_settings(200)
@given(store=st.sampled_from(["fs", "events", "rm", ""]), op=st.sampled_from(["apply", "save"]),
       args=st.lists(json_values, max_size=4))  # fmt: skip
def test_any_json_arguments_apply_or_are_refused(store: str, op: str, args: list[Any]) -> None:
    applied_or_refused(encode_operation(store, op, args))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document: the root, and below it each list item and object member."""
    children = enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else []
    return [path] + [p for key, child in children for p in _paths(child, (*path, key))]


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = list(document) if isinstance(document, list) else dict(document)
    copy[head] = _replaced(document[head], rest, value)
    return copy


@fuzz_settings(400)
@given(entry=st.one_of(fs_entries, events_entries), data=st.data())
def test_valid_entries_with_any_value_replaced_apply_or_are_refused(entry: bytes, data: st.DataObject) -> None:
    document = json.loads(entry)
    where = data.draw(st.randoms(use_true_random=False)).choice(_paths(document)[4:])  # (below store, op, args)
    applied_or_refused(json.dumps(_replaced(document, where, data.draw(json_values, label="value"))).encode())
