"""The RM's three stores through one journal (``ha/replicated_fs.py``, ``ha/replicated_registry.py``,
``ha/replicated_state.py``, routed by ``ha/journal_applier.py``) on three eligible nodes, each with its own
real SQLite stores and journal file, a fake clock and the in-memory ring bus: the leader's namespace
operations and registry changes are acknowledged once a majority holds them, every node's copies end
the same, and after the leader dies the new leader loads everything that had been acknowledged and
goes on from there.  The codecs round-trip exactly (hypothesis over generated changes) and an entry of
an unknown store or operation is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.events.functions import FunctionLimits, FunctionSpec
from cortex_rm.events.registration import RegistrationRequest
from cortex_rm.events.registry import FunctionRegistry, RegistryChange
from cortex_rm.events.registry_store import SqlRegistryStore
from cortex_rm.fs.model import BlockRef, Changes, FileKind, InodeRecord, User
from cortex_rm.fs.name_node import fresh_or_recovered
from cortex_rm.fs.namespace import Namespace
from cortex_rm.fs.namespace_store import SqlNamespaceStore
from cortex_rm.fs.paths import parse_path
from cortex_rm.ha import replicated_fs, replicated_registry, replicated_state
from cortex_rm.ha.journal import MAX_ENTRY_BYTES, Entry
from cortex_rm.ha.journal_applier import journal_applier
from cortex_rm.ha.replicated_fs import ChangesTooLarge, decode_changes, encode_changes
from cortex_rm.ha.replicated_registry import decode_change, encode_change
from cortex_rm.ha.replicated_state import UnknownOperation, decode_operation, encode_operation
from tests.support.journal_nodes import IDS, Nodes
from tests.support.rm_core import result_of
from tests.support.store_changes import namespace_changes, registry_changes

ALICE = User("alice", frozenset({"staff"}))


def inodes(store: Any) -> dict[int, InodeRecord]:
    return {r.inode_id: r for r in result_of(store.load())}


def functions(store: Any) -> dict[tuple[str, int], FunctionSpec]:
    return {(s.name, s.version): s for s in result_of(store.load())}


def block(n: int, length: int = 10) -> BlockRef:
    return BlockRef(f"blk_{n:032x}", length, f"{n:032x}")


def create(ns: Namespace, path: str, *blocks: BlockRef, now: int) -> Changes:
    return ns.create_file(parse_path(path), ALICE, permission=0o640, replication=2, block_size=1 << 20,
                          blocks=blocks, overwrite=False, now_ms=now)  # fmt: skip


def test_namespace_and_registry_changes_reach_every_copy_and_survive_the_leaders_death(tmp_path: Path) -> None:
    """A NameNode's operations (the first start's directories, a directory, a file with blocks, an append,
    a rename, a delete) and a registry's (register twice, another function, delete) on the leader: every
    node's SQL copies load the same; the new leader after the old one's death loads all of it, recovers
    the namespace and registry from it, and its own next writes reach the surviving copy."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    first = nodes.leader()
    fs, events = nodes.fs_of(first), nodes.registry_of(first)
    ns, changes = fresh_or_recovered(result_of(fs.load()), "hdfs", "supergroup", 1000)
    nodes.write(fs.apply(changes))
    hdfs = User("hdfs", frozenset({"supergroup"}))
    nodes.write(fs.apply(ns.mkdirs(parse_path("/user/alice"), hdfs, 0o755, 1001)))
    nodes.write(fs.apply(ns.set_owner(parse_path("/user/alice"), hdfs, "alice", "staff")))
    nodes.write(fs.apply(ns.mkdirs(parse_path("/user/alice/data"), ALICE, 0o750, 1001)))
    nodes.write(fs.apply(create(ns, "/user/alice/data/part-0", block(1, 7), block(2, 3), now=1002)))
    nodes.write(fs.apply(create(ns, "/user/alice/data/part-1", block(3), now=1003)))
    nodes.write(fs.apply(ns.append_blocks(parse_path("/user/alice/data/part-1"), ALICE, [block(4, 1)], 1004)))
    nodes.write(fs.apply(ns.rename(parse_path("/user/alice/data"), parse_path("/user/alice/out"), ALICE, 1005)[1]))
    deleted, delete_changes = ns.delete(parse_path("/user/alice/out/part-0"), ALICE, False, 1006)
    assert deleted and delete_changes.freed_blocks == (block(1, 7), block(2, 3))
    nodes.write(fs.apply(delete_changes))

    registry = FunctionRegistry()
    for change in (
        registry.register("hello", "alice", RegistrationRequest("/user/alice/h.py"), 120, 5, 2000),
        registry.register("hello", "alice", RegistrationRequest("/user/alice/h.zip", handler="m.h", replicas=3,
                                                                limits=FunctionLimits(512, 2.5, 8)), 130, 6, 2001),
        registry.register("cron", "bob", RegistrationRequest("/user/bob/c.py", schedule="*/5 * * * *",
                                                             grants=frozenset({"alice"})), 10, 7, 2002),
        registry.delete("cron", "bob", 2003),
    ):  # fmt: skip
        nodes.write(events.apply(change))
    nodes.run(2)

    namespaces = [inodes(nodes.copies[i].namespace) for i in IDS]
    registries = [functions(nodes.copies[i].registry) for i in IDS]
    assert all(n == namespaces[0] for n in namespaces) and all(r == registries[0] for r in registries)
    recovered = Namespace.recover(namespaces[0].values(), "hdfs", "supergroup")
    assert [r.name for r in recovered.all_files()] == ["part-1"]
    [part1] = [r for r in namespaces[0].values() if r.name == "part-1"]
    assert part1.blocks == (block(3), block(4, 1)) and namespaces[0][part1.parent_id].name == "out"
    assert not any(r.name in ("part-0", "data") for r in namespaces[0].values())
    assert sorted(registries[0]) == [("cron", 2), ("hello", 1), ("hello", 2)]  # (cron's tombstone; hello's kept)
    reloaded = FunctionRegistry(registries[0].values())
    assert all(reloaded.current(name) == registry.current(name) for name in ("hello", "cron"))
    cron, hello = reloaded.current("cron"), reloaded.current("hello")
    assert cron is not None and cron.deleted and hello is not None and hello.limits == FunctionLimits(512, 2.5, 8)

    nodes.kill(first)
    nodes.run(20)
    second = nodes.leader()
    assert second != first
    fs2, events2 = nodes.fs_of(second), nodes.registry_of(second)
    assert inodes(fs2) == namespaces[0] and functions(events2) == registries[0]  # all acknowledged, loaded
    ns2, nothing = fresh_or_recovered(result_of(fs2.load()), "hdfs", "supergroup", 3000)
    assert nothing.empty
    registry2 = FunctionRegistry(result_of(events2.load()))
    nodes.write(fs2.apply(create(ns2, "/user/alice/out/part-2", block(5), now=3001)))
    again = registry2.register("hello", "alice", RegistrationRequest("/user/alice/h.py"), 1, 1, 3002)
    nodes.write(events2.apply(again))
    [survivor] = [i for i in nodes.journals if i != second]
    nodes.run(2)
    assert inodes(nodes.copies[survivor].namespace) == inodes(fs2) and len(inodes(fs2)) == len(namespaces[0]) + 1
    assert functions(nodes.copies[survivor].registry)[("hello", 3)].code_path == "/user/alice/h.py"


def test_a_standby_cannot_write_the_namespace_or_the_registry(tmp_path: Path) -> None:
    """Only the leader's writes are journalled: a standby's fail at once and change no copy."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    standby = next(i for i in IDS if i != nodes.leader())
    root = InodeRecord(1, 0, "", FileKind.DIRECTORY, "hdfs", "supergroup", 0o755, 1)
    with pytest.raises(Exception, match="does not lead"):
        result_of(nodes.fs_of(standby).apply(Changes(upserted=(root,))))
    spec = FunctionSpec("hello", "alice", 1, "/user/alice/h.py", 1, 1)
    with pytest.raises(Exception, match="does not lead"):
        result_of(nodes.registry_of(standby).apply(RegistryChange("hello", spec)))
    nodes.run(2)
    assert all(inodes(c.namespace) == {} and functions(c.registry) == {} for c in nodes.copies.values())
    result_of(nodes.fs_of(standby).apply(Changes()))  # (nothing to journal: no entry, no refusal)


def test_the_rm_state_and_the_other_stores_share_one_journal_in_order(tmp_path: Path) -> None:
    """The RM state's writes go through the same router: each store's copy on a follower gets its own entries."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    leader = nodes.leader()
    rm = replicated_state.ReplicatedStateStore(nodes.copies[leader].state, nodes.journals[leader])
    nodes.write(rm.save_app_id_high_water(4))
    nodes.write(nodes.registry_of(leader).apply(RegistryChange("f", FunctionSpec("f", "bob", 1, "/f.py", 1, 1))))
    nodes.write(rm.save_application({"app_id": "application_1_0001", "state": "NEW"}, b"\x00ctx"))
    nodes.run(2)
    follower = next(i for i in IDS if i != leader)
    state = result_of(nodes.copies[follower].state.load())
    assert state.app_id_high_water == 4 and [c for _, c in state.applications] == [b"\x00ctx"]
    assert list(functions(nodes.copies[follower].registry)) == [("f", 1)]


def test_entries_of_unknown_stores_and_operations_are_refused_by_name(tmp_path: Path) -> None:
    """A newer RM's (or a damaged) entry raises UnknownOperation naming the store or operation."""
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    fs_store, registry_store = SqlNamespaceStore(url, synchronous_runner), SqlRegistryStore(url, synchronous_runner)
    apply = journal_applier({"fs": replicated_fs.namespace_applier(fs_store),
                             "events": replicated_registry.registry_applier(registry_store)})  # fmt: skip

    def entry(store: str, op: str, args: list[Any]) -> Entry:
        return Entry((1, 1), 1, encode_operation(store, op, args))

    with pytest.raises(UnknownOperation, match="unknown store 'ledger' \\(known: events, fs\\)"):
        apply(entry("ledger", "apply", []))
    with pytest.raises(UnknownOperation, match="namespace store has no operation 'truncate'"):
        apply(entry("fs", "truncate", [[[], [], []]]))
    with pytest.raises(UnknownOperation, match="registry store has no operation 'apply' of 1 arguments"):
        apply(entry("events", "apply", ["x"]))
    with pytest.raises(UnknownOperation, match=r"upserted\[0\]\.permission must be a 64-bit integer"):
        apply(entry("fs", "apply", [[[[2, 1, "f", "FILE", "a", "g", True, 0, 0, 0, 0, []]], [], []]]))
    with pytest.raises(UnknownOperation, match=r"upserted\[0\]\.name is not Unicode text"):
        apply(entry("fs", "apply", [[[[2, 1, "\ud800", "FILE", "a", "g", 0, 0, 0, 0, 0, []]], [], []]]))
    with pytest.raises(UnknownOperation, match="no file kind 'SYMLINK'"):
        apply(entry("fs", "apply", [[[[2, 1, "f", "SYMLINK", "a", "g", 0, 0, 0, 0, 0, []]], [], []]]))
    with pytest.raises(UnknownOperation, match="saves a registration of 'g'"):
        apply(entry("events", "apply", ["f", FunctionSpec("g", "bob", 1, "/g.py", 1, 1).to_json(), []]))
    with pytest.raises(UnknownOperation, match="not JSON"):
        apply(Entry((1, 1), 1, b"\xff"))
    assert inodes(fs_store) == {} and functions(registry_store) == {}
    fs_store.close()
    registry_store.close()


def test_an_operation_too_large_for_one_entry_drops_its_freed_blocks_then_is_refused() -> None:
    """A big delete is journalled without its freed blocks (no store keeps them); one too big even so is refused."""
    files = tuple(InodeRecord(i, 1, f"f{i}", FileKind.FILE, "a", "g", 0o644, 1, 1, 3, 1, (block(i),))
                  for i in range(2, 7002))  # fmt: skip
    freed = tuple(b for f in files for b in f.blocks)
    big_delete = Changes(removed=tuple(f.inode_id for f in files), freed_blocks=freed)
    assert len(encode_operation("fs", "apply", [encode_changes(big_delete)])) > MAX_ENTRY_BYTES
    _, _, [args] = decode_operation(replicated_fs.entry_for(big_delete))
    assert decode_changes(args) == Changes(removed=big_delete.removed)
    with pytest.raises(ChangesTooLarge, match="7002 inodes written, 0 removed"):
        replicated_fs.entry_for(Changes(upserted=(*files, *files[:2])))


# ------------------------------------------------------------ the codecs, as properties

@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(namespace_changes)
def test_namespace_changes_round_trip_exactly_through_a_journal_entry(value: Changes) -> None:
    """Every field of every inode and block (kinds by value, block order) comes back equal."""
    store, op, [args] = decode_operation(encode_operation("fs", "apply", [encode_changes(value)]))
    assert (store, op) == ("fs", "apply") and decode_changes(args) == value


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(registry_changes)
def test_registry_changes_round_trip_exactly_through_a_journal_entry(change: RegistryChange) -> None:
    """A saved registration (every field), none, and the forgotten versions come back equal."""
    store, op, args = decode_operation(encode_operation("events", "apply", encode_change(change)))
    assert (store, op) == ("events", "apply") and decode_change(args) == change
