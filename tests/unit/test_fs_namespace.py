"""The namespace: HDFS's NameNode operations, permissions, Changes and recovery."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.fs.errors import (
    AccessControl,
    FileAlreadyExists,
    FileNotFound,
    FsError,
    IllegalArgument,
    ParentNotDirectory,
    PathIsNotEmptyDirectory,
)
from cortex_rm.fs.inode_tree import CorruptNamespace
from cortex_rm.fs.model import ROOT_INODE_ID, BlockRef, Changes, FileKind, InodeRecord, User
from cortex_rm.fs.namespace import Namespace
from cortex_rm.fs.paths import FsPath
from cortex_rm.fs.paths import parse_path as p

HDFS = User("hdfs")
ADMIN = User("admin", frozenset({"supergroup"}))
ALICE = User("alice", frozenset({"alice", "staff"}))
BOB = User("bob", frozenset({"bob", "staff"}))


def block(n: int, length: int = 10) -> BlockRef:
    return BlockRef(f"blk_{n:032x}", length, "00" * 16)


def create(
    ns: Namespace,
    path: str,
    user: User = HDFS,
    blocks: tuple[BlockRef, ...] = (),
    *,
    permission: int = 0o644,
    replication: int = 3,
    block_size: int = 1024,
    overwrite: bool = False,
) -> Changes:
    """CREATE at time 100 with defaults that tests override."""
    return ns.create_file(
        p(path),
        user,
        permission=permission,
        replication=replication,
        block_size=block_size,
        blocks=blocks,
        overwrite=overwrite,
        now_ms=100,
    )


def world() -> Namespace:
    """/ (hdfs), /user/alice (alice:alice 755), /tmp (1777), /data (hdfs 755) with file /data/f."""
    ns = Namespace("hdfs", now_ms=1)
    ns.mkdirs(p("/user/alice"), HDFS, 0o755, 2)
    ns.set_owner(p("/user/alice"), HDFS, "alice", "alice")
    ns.mkdirs(p("/tmp"), HDFS, 0o1777, 3)
    ns.mkdirs(p("/data"), HDFS, 0o755, 4)
    create(ns, "/data/f", blocks=(block(1),))
    return ns


def snapshot(ns: Namespace) -> dict[int, InodeRecord]:
    return {record.inode_id: record for record in ns.all_records()}


def apply(store: dict[int, InodeRecord], changes: Changes) -> None:
    for record in changes.upserted:
        store[record.inode_id] = record
    for inode_id in changes.removed:
        del store[inode_id]


# -- a fresh namespace and mkdirs ------------------------------------------------------------


def test_fresh_namespace_has_only_the_root() -> None:
    """A new namespace is "/" owned by the superuser in the supergroup, mode 755."""
    ns = Namespace("hdfs", now_ms=7)
    root = ns.root_record()
    assert (root.inode_id, root.parent_id, root.name, root.kind) == (ROOT_INODE_ID, 0, "", FileKind.DIRECTORY)
    assert (root.owner, root.group, root.permission, root.modification_time) == ("hdfs", "supergroup", 0o755, 7)
    assert ns.inode_count == 1
    assert ns.list_status(p("/"), BOB) == ([], 0)
    assert ns.home_directory(ALICE) == p("/user/alice")


def test_mkdirs_creates_ancestors_with_u_wx_and_inherits_the_group() -> None:
    """New directories are the user's, in the parent's group; those on the way get u+wx added."""
    ns = world()
    changes = ns.mkdirs(p("/user/alice/a/b/c"), ALICE, 0o500, 50)
    made = {record.name: record for record in changes.upserted}
    assert set(made) == {"alice", "a", "b", "c"}  # the parent's mtime changed too
    assert made["a"].permission == made["b"].permission == 0o700
    assert made["c"].permission == 0o500
    assert all(made[name].owner == "alice" and made[name].group == "alice" for name in "abc")
    assert made["alice"].modification_time == 50
    assert ns.get_status(p("/user/alice/a/b/c"), ALICE).permission == 0o500


def test_mkdirs_on_an_existing_directory_changes_nothing() -> None:
    """MKDIRS of an existing directory succeeds with empty Changes."""
    assert world().mkdirs(p("/user"), BOB, 0o700, 50).empty


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/data/f", FileAlreadyExists, "Path is not a directory: /data/f"),
        ("/data/f/x/y", ParentNotDirectory, "/data/f (is not a directory)"),
        ("/user/bob", AccessControl, 'user=bob, access=WRITE, inode="/user":hdfs:supergroup:drwxr-xr-x'),
        ("/user/alice/x", AccessControl, "access=WRITE"),
    ],
)
def test_mkdirs_refusals(path: str, error: type[FsError], message: str) -> None:
    """A file in the way, or a directory bob may not write, refuses MKDIRS in HDFS's words."""
    with pytest.raises(error) as caught:
        world().mkdirs(p(path), BOB, 0o755, 50)
    assert message in str(caught.value)


# -- create, append, open ----------------------------------------------------------------------


def test_create_makes_parents_and_the_file_owned_by_the_user_in_the_parents_group() -> None:
    """CREATE makes missing parents (755) and a file owned by the caller, group of its parent."""
    ns = world()
    changes = create(ns, "/user/alice/x/y/f", ALICE, blocks=(block(5, 7), block(6, 3)), replication=2)
    names = {record.name for record in changes.upserted}
    assert names == {"alice", "x", "y", "f"}
    status = ns.get_status(p("/user/alice/x/y/f"), BOB)
    assert (status.kind, status.owner, status.group, status.length) == (FileKind.FILE, "alice", "alice", 10)
    assert (status.replication, status.block_size, status.permission, status.path_suffix) == (2, 1024, 0o644, "")
    assert ns.get_status(p("/user/alice/x"), ALICE).permission == 0o755


def test_create_overwrite_replaces_the_file_and_frees_its_blocks() -> None:
    """Overwriting removes the old inode (freeing its blocks) and adds a new one."""
    ns = world()
    old = ns.get_status(p("/data/f"), HDFS).file_id
    changes = create(ns, "/data/f", blocks=(block(9),), overwrite=True)
    assert changes.removed == (old,)
    assert changes.freed_blocks == (block(1),)
    assert ns.open_file(p("/data/f"), HDFS).blocks == (block(9),)


@pytest.mark.parametrize(
    ("path", "user", "overwrite", "error", "message"),
    [
        ("/data/f", HDFS, False, FileAlreadyExists, "failed to create file /data/f"),
        ("/data", HDFS, True, FileAlreadyExists, "/data already exists as a directory"),
        ("/", HDFS, True, FileAlreadyExists, "/ already exists as a directory"),
        ("/data/f/g", HDFS, False, ParentNotDirectory, "/data/f (is not a directory)"),
        ("/data/g", BOB, False, AccessControl, 'access=WRITE, inode="/data"'),
        ("/data/f", BOB, True, AccessControl, 'access=WRITE, inode="/data/f"'),
        ("/data/new/g", BOB, False, AccessControl, 'access=WRITE, inode="/data"'),
    ],
)
def test_create_refusals(path: str, user: User, overwrite: bool, error: type[FsError], message: str) -> None:
    """check_create and create_file refuse alike, in HDFS's words, changing nothing."""
    ns = world()
    before = snapshot(ns)
    with pytest.raises(error, match=re.escape(message)):
        ns.check_create(p(path), user, overwrite)
    with pytest.raises(error, match=re.escape(message)):
        create(ns, path, user, overwrite=overwrite)
    assert snapshot(ns) == before


@pytest.mark.parametrize(("replication", "block_size"), [(0, 1024), (513, 1024), (3, 0)])
def test_create_refuses_bad_file_parameters(replication: int, block_size: int) -> None:
    """Replication outside 1..512 or a non-positive block size is an IllegalArgument."""
    with pytest.raises(IllegalArgument):
        create(world(), "/data/g", replication=replication, block_size=block_size)


def test_append_adds_blocks_and_updates_mtime() -> None:
    """APPEND's namespace half adds blocks at the end and sets the file's mtime."""
    ns = world()
    changes = ns.append_blocks(p("/data/f"), HDFS, [block(2, 5)], 300)
    (record,) = changes.upserted
    assert record.blocks == (block(1), block(2, 5)) and record.modification_time == 300
    assert ns.get_status(p("/data/f"), HDFS).length == 15


@pytest.mark.parametrize(
    ("path", "user", "error", "message"),
    [
        ("/data/nope", HDFS, FileNotFound, "Failed to append to non-existent file /data/nope"),
        ("/data", HDFS, FileAlreadyExists, "Cannot append to directory /data"),
        ("/data/f", BOB, AccessControl, 'user=bob, access=WRITE, inode="/data/f"'),
    ],
)
def test_append_refusals(path: str, user: User, error: type[FsError], message: str) -> None:
    """APPEND to a missing file, a directory, or a file one may not write, is refused."""
    with pytest.raises(error, match=message):
        world().check_append(p(path), user)


def test_open_file() -> None:
    """OPEN gives the file's record; a directory is "Path is not a file"; READ is needed."""
    ns = world()
    assert ns.open_file(p("/data/f"), BOB).blocks == (block(1),)
    with pytest.raises(FileNotFound, match="Path is not a file: /data"):
        ns.open_file(p("/data"), HDFS)
    with pytest.raises(FileNotFound, match="File does not exist: /data/g"):
        ns.open_file(p("/data/g"), HDFS)
    ns.set_permission(p("/data/f"), HDFS, 0o600)
    with pytest.raises(AccessControl, match="access=READ,"):
        ns.open_file(p("/data/f"), BOB)


# -- queries -----------------------------------------------------------------------------------


def test_get_status_needs_execute_on_every_ancestor() -> None:
    """A directory bob may not traverse hides what is below it (access=EXECUTE)."""
    ns = world()
    ns.set_permission(p("/user/alice"), ALICE, 0o700)
    create(ns, "/user/alice/f", ALICE)
    with pytest.raises(AccessControl, match='access=EXECUTE, inode="/user/alice":alice:alice:drwx------'):
        ns.get_status(p("/user/alice/f"), BOB)
    assert ns.get_status(p("/user/alice/f"), ALICE).owner == "alice"
    with pytest.raises(FileNotFound, match="File does not exist: /user/bob"):
        ns.get_status(p("/user/bob"), BOB)


def test_list_status_of_a_file_and_of_a_missing_path() -> None:
    """A file lists as itself with suffix ""; a missing path is "File /x does not exist."."""
    ns = world()
    statuses, remaining = ns.list_status(p("/data/f"), BOB)
    assert [(s.path_suffix, s.kind) for s in statuses] == [("", FileKind.FILE)] and remaining == 0
    with pytest.raises(FileNotFound, match=r"File /nope does not exist\."):
        ns.list_status(p("/nope"), BOB)


def test_list_status_needs_read_and_execute() -> None:
    """Listing a directory needs READ|EXECUTE on it."""
    ns = world()
    ns.set_permission(p("/user/alice"), ALICE, 0o711)
    with pytest.raises(AccessControl, match="access=READ_EXECUTE"):
        ns.list_status(p("/user/alice"), BOB)


def test_listing_is_in_utf8_byte_order_with_children_counts() -> None:
    """Entries come sorted as UTF-8 bytes (uppercase before lowercase, non-ASCII after)."""
    ns = Namespace("hdfs")
    names = ["b", "B", "a", "é", "z", "ÿ", "名", "😀", "\uffff", "a1", "a0"]
    for name in names:
        ns.mkdirs(p("/d").child(name), HDFS, 0o755, 1)
    create(ns, "/d/a/f")
    statuses, remaining = ns.list_status(p("/d"), HDFS)
    assert [s.path_suffix for s in statuses] == sorted(names, key=lambda n: n.encode("utf-8"))
    assert remaining == 0
    assert ns.get_status(p("/d"), HDFS).children == len(names)
    assert statuses[1].children == 1  # "a"


def test_paged_listing_of_ten_thousand_entries() -> None:
    """start_after and limit page through 10,000 entries; the count remaining is exact."""
    ns = Namespace("hdfs")
    ns.mkdirs(p("/big"), HDFS, 0o755, 1)
    names = [f"part-{n:05d}" for n in range(10_000)]
    for name in reversed(names):
        create(ns, f"/big/{name}")
    seen: list[str] = []
    start_after, pages = "", 0
    while True:
        page, remaining = ns.list_status(p("/big"), BOB, start_after=start_after, limit=1000)
        seen.extend(s.path_suffix for s in page)
        pages += 1
        assert remaining == 10_000 - len(seen)
        if not remaining:
            break
        start_after = page[-1].path_suffix
    assert seen == names and pages == 10
    page, remaining = ns.list_status(p("/big"), BOB, start_after="part-04999x", limit=2)
    assert [s.path_suffix for s in page] == ["part-05000", "part-05001"] and remaining == 4998
    assert ns.list_status(p("/big"), BOB, start_after="zzz") == ([], 0)


def test_content_summary() -> None:
    """Totals count the directory itself, every file's length and length x replication."""
    ns = world()
    create(ns, "/data/sub/g", blocks=(block(2, 5), block(3, 5)), replication=2)
    summary = ns.content_summary(p("/data"), BOB)
    assert (summary.directory_count, summary.file_count) == (2, 2)
    assert (summary.length, summary.space_consumed) == (20, 10 * 3 + 10 * 2)
    assert ns.content_summary(p("/data/f"), BOB).directory_count == 0
    with pytest.raises(FileNotFound):
        ns.content_summary(p("/nope"), BOB)
    ns.set_permission(p("/data/sub"), HDFS, 0o700)
    with pytest.raises(AccessControl, match='access=READ_EXECUTE, inode="/data/sub"'):
        ns.content_summary(p("/data"), BOB)


# -- rename ------------------------------------------------------------------------------------


def tree_of(ns: Namespace, path: str = "/") -> set[str]:
    """Every path below ``path`` (for comparing trees before and after)."""
    found: set[str] = set()
    pending = [p(path)]
    while pending:
        here = pending.pop()
        for status in ns.list_status(here, HDFS)[0]:
            if status.path_suffix:
                child = here.child(status.path_suffix)
                found.add(str(child))
                if status.kind is FileKind.DIRECTORY:
                    pending.append(child)
    return found


@pytest.mark.parametrize(
    ("src", "dst", "result", "appears", "vanishes"),
    [
        ("/data/f", "/data/g", True, "/data/g", "/data/f"),
        ("/data/f", "/tmp", True, "/tmp/f", "/data/f"),  # into an existing directory
        ("/data", "/user/alice/d2", True, "/user/alice/d2/f", "/data/f"),
        ("/data/f", "/f", True, "/f", "/data/f"),
        ("/data/f", "/data/f", True, "/data/f", None),  # a file onto itself
        ("/data/f", "/", True, "/f", "/data/f"),
        ("/nope", "/x", False, None, None),  # src missing
        ("/data/f", "/nodir/g", False, None, "/nodir"),  # dst's parent missing
        ("/data/f", "/user/alice/h", True, "/user/alice/h", "/data/f"),
        ("/data", "/data/sub", False, None, "/data/sub"),  # dst inside src
        ("/data", "/data", False, "/data/f", None),  # a directory onto itself is into itself
        ("/", "/x", False, None, "/x"),  # the root
        ("/tmp", "/data", True, "/data/tmp", "/tmp"),
    ],
)
def test_rename_semantics(src: str, dst: str, result: bool, appears: str | None, vanishes: str | None) -> None:
    """RENAME answers like HDFS's FileSystem.rename: False (no error) for what it cannot do."""
    ns = world()
    before = snapshot(ns)
    ok, changes = ns.rename(p(src), p(dst), HDFS, 500)
    assert ok is result
    paths = tree_of(ns)
    if appears:
        assert appears in paths
    if vanishes:
        assert vanishes not in paths
    if not result:
        assert changes.empty and snapshot(ns) == before


def test_rename_onto_an_existing_file_is_false() -> None:
    """Renaming onto an existing file (directly, or as dst/<name>) answers False."""
    ns = world()
    create(ns, "/data/g")
    create(ns, "/tmp/f")
    assert ns.rename(p("/data/f"), p("/data/g"), HDFS, 5) == (False, Changes())
    assert ns.rename(p("/data/f"), p("/tmp"), HDFS, 5) == (False, Changes())


def test_rename_changes_record_the_move_and_both_parents_mtime() -> None:
    """The moved inode (new parent and name) and both parents (mtime) are in the Changes."""
    ns = world()
    ok, changes = ns.rename(p("/data/f"), p("/tmp/g"), HDFS, 500)
    by_name = {record.name: record for record in changes.upserted}
    assert ok and set(by_name) == {"g", "data", "tmp"}
    assert by_name["g"].parent_id == ns.get_status(p("/tmp"), HDFS).file_id
    assert by_name["data"].modification_time == by_name["tmp"].modification_time == 500
    assert by_name["g"].modification_time == 100  # the moved inode keeps its own times


def test_rename_needs_write_on_both_parents_and_respects_the_sticky_bit() -> None:
    """bob may not rename out of /data (hdfs 755), nor alice's file out of sticky /tmp; alice may."""
    ns = world()
    with pytest.raises(AccessControl, match='user=bob, access=WRITE, inode="/data"'):
        ns.rename(p("/data/f"), p("/tmp/f"), BOB, 5)
    create(ns, "/tmp/af", ALICE)
    with pytest.raises(AccessControl, match="Permission denied by sticky bit: user=bob"):
        ns.rename(p("/tmp/af"), p("/tmp/bf"), BOB, 5)
    with pytest.raises(AccessControl, match='access=WRITE, inode="/data"'):
        ns.rename(p("/tmp/af"), p("/data/af"), ALICE, 5)
    assert ns.rename(p("/tmp/af"), p("/user/alice/af"), ALICE, 5)[0]


# -- delete ------------------------------------------------------------------------------------


def test_delete_recursive_removes_the_subtree_and_frees_blocks() -> None:
    """A recursive DELETE removes every inode below and frees every file's blocks."""
    ns = world()
    create(ns, "/data/sub/g", blocks=(block(2), block(3)))
    ids = {ns.get_status(p(path), HDFS).file_id for path in ("/data", "/data/f", "/data/sub", "/data/sub/g")}
    ok, changes = ns.delete(p("/data"), HDFS, True, 600)
    assert ok and set(changes.removed) == ids
    assert set(changes.freed_blocks) == {block(1), block(2), block(3)}
    assert [record.name for record in changes.upserted] == [""]  # the root's mtime
    assert changes.upserted[0].modification_time == 600
    assert "/data" not in tree_of(ns)


def test_delete_answers_false_for_missing_paths_and_the_root() -> None:
    """Deleting what does not exist, or "/", is False and changes nothing."""
    ns = world()
    assert ns.delete(p("/nope"), HDFS, True, 5) == (False, Changes())
    assert ns.delete(p("/nope/deeper"), HDFS, True, 5) == (False, Changes())
    assert ns.delete(p("/"), HDFS, True, 5) == (False, Changes())


def test_delete_of_a_non_empty_directory_needs_recursive() -> None:
    """A non-empty directory without recursive is PathIsNotEmptyDirectory; an empty one goes."""
    ns = world()
    with pytest.raises(PathIsNotEmptyDirectory, match="/data is non empty"):
        ns.delete(p("/data"), HDFS, False, 5)
    ns.mkdirs(p("/empty"), HDFS, 0o755, 5)
    assert ns.delete(p("/empty"), HDFS, False, 5)[0]


def test_recursive_delete_needs_all_access_on_every_non_empty_subdirectory() -> None:
    """alice may not delete her directory while it holds a non-empty directory she cannot write."""
    ns = world()
    ns.mkdirs(p("/user/alice/shared/inner"), ALICE, 0o755, 5)
    ns.mkdirs(p("/user/alice/empty"), HDFS, 0o500, 5)  # empty: HDFS ignores it
    ns.set_owner(p("/user/alice/shared"), HDFS, "bob", None)
    ns.set_permission(p("/user"), HDFS, 0o777)  # WRITE on the parent is checked first
    with pytest.raises(AccessControl, match='access=ALL, inode="/user/alice/shared":bob'):
        ns.delete(p("/user/alice"), ALICE, True, 5)
    ns.delete(p("/user/alice/shared/inner"), BOB, False, 5)
    assert ns.delete(p("/user/alice"), ALICE, True, 5)[0]


def test_delete_in_a_sticky_directory() -> None:
    """In /tmp (1777) bob may not delete alice's file; alice and the superuser may."""
    ns = world()
    create(ns, "/tmp/a1", ALICE)
    create(ns, "/tmp/a2", ALICE)
    with pytest.raises(AccessControl, match="sticky bit"):
        ns.delete(p("/tmp/a1"), BOB, False, 5)
    assert ns.delete(p("/tmp/a1"), ALICE, False, 5)[0]
    assert ns.delete(p("/tmp/a2"), ADMIN, False, 5)[0]


# -- attributes --------------------------------------------------------------------------------


def test_set_permission_by_owner_or_superuser() -> None:
    """Only the owner or a superuser sets the mode; a missing path is FileNotFound."""
    ns = world()
    (record,) = ns.set_permission(p("/user/alice"), ALICE, 0o1750).upserted
    assert record.permission == 0o1750
    with pytest.raises(AccessControl, match="user=bob is not the owner of inode=/user/alice"):
        ns.set_permission(p("/user/alice"), BOB, 0o777)
    with pytest.raises(FileNotFound, match="File does not exist: /x"):
        ns.set_permission(p("/x"), HDFS, 0o777)
    with pytest.raises(IllegalArgument):
        ns.set_permission(p("/data"), HDFS, 0o2000)


@pytest.mark.parametrize(
    ("user", "owner", "group", "error"),
    [
        (HDFS, "bob", "staff", None),
        (ADMIN, "bob", None, None),
        (ALICE, None, "staff", None),  # the owner, to one of her groups
        (ALICE, "alice", None, None),  # "changing" the owner to herself
        (ALICE, "bob", None, AccessControl),  # giving away is for the superuser
        (ALICE, None, "wheel", AccessControl),  # not her group
        (BOB, None, "staff", AccessControl),  # not the owner
        (HDFS, None, None, IllegalArgument),
        (HDFS, "", None, IllegalArgument),
    ],
)
def test_set_owner_rules(user: User, owner: str | None, group: str | None, error: type[FsError] | None) -> None:
    """SETOWNER: owner changes by the superuser only; group changes by an owner in that group."""
    ns = world()
    target = p("/user/alice")
    if error is not None:
        with pytest.raises(error):
            ns.set_owner(target, user, owner, group)
        return
    ns.set_owner(target, user, owner, group)
    status = ns.get_status(target, HDFS)
    assert status.owner == (owner or "alice") and status.group == (group or "alice")


def test_set_replication() -> None:
    """SETREPLICATION: True for a file one may write, False for a directory or a missing path."""
    ns = world()
    ok, changes = ns.set_replication(p("/data/f"), HDFS, 5)
    assert ok and changes.upserted[0].replication == 5
    assert ns.set_replication(p("/data"), HDFS, 5) == (False, Changes())
    assert ns.set_replication(p("/data/nope"), HDFS, 5) == (False, Changes())
    with pytest.raises(AccessControl):
        ns.set_replication(p("/data/f"), BOB, 2)
    for bad in (0, 513):
        with pytest.raises(IllegalArgument):
            ns.set_replication(p("/data/f"), HDFS, bad)


def test_set_times() -> None:
    """SETTIMES: -1 keeps a time; the owner, a writer or the superuser may; others may not."""
    ns = world()
    (record,) = ns.set_times(p("/data/f"), HDFS, 777, -1).upserted
    assert (record.modification_time, record.access_time) == (777, 100)
    with pytest.raises(AccessControl, match="access=WRITE"):
        ns.set_times(p("/data/f"), BOB, 1, 1)
    create(ns, "/tmp/open", ALICE, permission=0o666)
    (record,) = ns.set_times(p("/tmp/open"), BOB, -1, 42).upserted
    assert record.access_time == 42
    with pytest.raises(FileNotFound, match="File/Directory /nope does not exist."):
        ns.set_times(p("/nope"), HDFS, 1, 1)
    with pytest.raises(IllegalArgument):
        ns.set_times(p("/data/f"), HDFS, -2, 1)


# -- the superuser, failures, recovery -----------------------------------------------------------


def test_superuser_and_supergroup_bypass_every_permission() -> None:
    """The superuser and supergroup members pass checks that deny everyone else."""
    ns = world()
    ns.mkdirs(p("/locked/inner"), HDFS, 0o000, 5)
    ns.set_owner(p("/locked"), HDFS, "alice", "alice")
    for user in (HDFS, ADMIN):
        create(ns, f"/locked/inner/{user.name}", user)
        assert ns.list_status(p("/locked/inner"), user)[1] == 0
    with pytest.raises(AccessControl):
        ns.list_status(p("/locked"), BOB)
    with pytest.raises(AccessControl):
        ns.list_status(p("/locked"), ALICE)  # the owner, by owner bits 000


FAILING: list[tuple[str, Callable[[Namespace], object]]] = [
    ("mkdirs under a file", lambda ns: ns.mkdirs(p("/data/f/x"), HDFS, 0o755, 9)),
    ("create denied", lambda ns: create(ns, "/data/new/deeper/g", BOB)),
    ("create exists", lambda ns: create(ns, "/data/f", HDFS)),
    ("rename denied", lambda ns: ns.rename(p("/data/f"), p("/tmp/f"), BOB, 9)),
    ("delete not empty", lambda ns: ns.delete(p("/data"), HDFS, False, 9)),
    ("delete denied", lambda ns: ns.delete(p("/data"), BOB, True, 9)),
    ("append denied", lambda ns: ns.append_blocks(p("/data/f"), BOB, [block(7)], 9)),
    ("chmod denied", lambda ns: ns.set_permission(p("/data"), BOB, 0o777)),
    ("chown denied", lambda ns: ns.set_owner(p("/user/alice"), ALICE, "bob", "staff")),
    ("replication invalid", lambda ns: ns.set_replication(p("/data/f"), HDFS, 0)),
]


@pytest.mark.parametrize("operation", [op for _, op in FAILING], ids=[name for name, _ in FAILING])
def test_a_failed_operation_changes_nothing(operation: Callable[[Namespace], object]) -> None:
    """An operation that raises leaves every record as it was, and inode ids are not consumed."""
    ns = world()
    before, last_id = snapshot(ns), ns.last_inode_id
    with pytest.raises(FsError):
        operation(ns)
    assert snapshot(ns) == before
    assert ns.last_inode_id == last_id


def test_recover_rebuilds_an_equal_namespace() -> None:
    """Records in any order recover into a namespace that answers alike and continues the ids."""
    ns = world()
    create(ns, "/user/alice/x/y", ALICE, blocks=(block(4),))
    records = sorted(ns.all_records(), key=lambda record: -record.inode_id)
    again = Namespace.recover(records, "hdfs")
    assert snapshot(again) == snapshot(ns)
    assert tree_of(again) == tree_of(ns)
    assert {record.inode_id for record in again.all_files()} == {record.inode_id for record in ns.all_files()}
    assert again.last_inode_id == max(snapshot(ns))
    assert Namespace.recover(records, "hdfs", last_inode_id=99).last_inode_id == 99


ROOT = InodeRecord(ROOT_INODE_ID, 0, "", FileKind.DIRECTORY, "hdfs", "supergroup", 0o755, 0)


def entry(inode_id: int, parent_id: int, name: str, kind: FileKind = FileKind.DIRECTORY) -> InodeRecord:
    return InodeRecord(inode_id, parent_id, name, kind, "hdfs", "supergroup", 0o755, 0)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "exactly one root"),
        ([ROOT, entry(2, 0, "")], "exactly one root"),
        ([entry(5, 0, "")], "the root must be directory 1"),
        ([ROOT, entry(2, 9, "a")], "parent 9 missing"),
        ([ROOT, entry(2, 1, "f", FileKind.FILE), entry(3, 2, "x")], "is not a directory"),
        ([ROOT, entry(2, 1, "a"), entry(3, 1, "a")], "two entries named 'a'"),
        ([ROOT, entry(2, 1, "a"), entry(2, 1, "b")], "appears twice"),
        ([ROOT, entry(2, 3, "a"), entry(3, 2, "b")], "cycle"),
        ([ROOT, entry(2, 1, "")], "invalid name"),
    ],
)
def test_recover_refuses_records_that_are_not_a_tree(records: list[InodeRecord], message: str) -> None:
    """A damaged store is refused with CorruptNamespace naming what is wrong."""
    with pytest.raises(CorruptNamespace, match=message):
        Namespace.recover(records, "hdfs")


# -- property: Changes are complete -------------------------------------------------------------

fs_paths = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(lambda parts: FsPath(tuple(parts)))
users = st.sampled_from([HDFS, ALICE, BOB, ALICE, BOB])


@dataclass(frozen=True)
class Op:
    """One random operation: what, by whom, on which path, with which argument."""

    kind: str
    user: User
    path: FsPath
    arg: int | bool | str | FsPath


def ops_of(kind: str, args: st.SearchStrategy[int | bool | str | FsPath]) -> st.SearchStrategy[Op]:
    return st.builds(Op, st.just(kind), users, fs_paths, args)


operations = st.one_of(
    ops_of("mkdirs", st.sampled_from([0o755, 0o700, 0o1777, 0o500])),
    ops_of("create", st.booleans()),
    ops_of("append", st.just(0)),
    ops_of("rename", fs_paths),
    ops_of("rename", fs_paths),
    ops_of("rename", st.just(FsPath())),
    ops_of("delete", st.booleans()),
    ops_of("chmod", st.sampled_from([0o777, 0o755, 0o1777, 0o000])),
    ops_of("chown", st.sampled_from(["alice", "bob"])),
)


def run(ns: Namespace, op: Op, now: int, block_ref: BlockRef) -> Changes:
    """Apply one random operation, returning its Changes."""
    arg = op.arg
    if op.kind == "mkdirs" and isinstance(arg, int):
        return ns.mkdirs(op.path, op.user, arg, now)
    if op.kind == "create":
        return create(ns, str(op.path), op.user, blocks=(block_ref,), overwrite=bool(arg))
    if op.kind == "append":
        return ns.append_blocks(op.path, op.user, [block_ref], now)
    if op.kind == "rename" and isinstance(arg, FsPath):
        return ns.rename(op.path, arg, op.user, now)[1]
    if op.kind == "delete":
        return ns.delete(op.path, op.user, bool(arg), now)[1]
    if op.kind == "chmod" and isinstance(arg, int):
        return ns.set_permission(op.path, op.user, arg)
    if op.kind == "chown" and isinstance(arg, str):
        return ns.set_owner(op.path, op.user, arg, None)
    raise AssertionError(op)


def full_listing(ns: Namespace) -> list[tuple[str, object]]:
    """Every path with its FileStatus, as the superuser sees it, in listing order."""
    listing: list[tuple[str, object]] = [("/", ns.get_status(FsPath(), HDFS))]
    pending = [FsPath()]
    while pending:
        here = pending.pop()
        for status in ns.list_status(here, HDFS)[0]:
            child = here.child(status.path_suffix)
            listing.append((str(child), status))
            if status.kind is FileKind.DIRECTORY:
                pending.append(child)
    return listing


def referenced_blocks(store: dict[int, InodeRecord]) -> set[BlockRef]:
    return {ref for record in store.values() for ref in record.blocks}


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, max_size=40))
def test_changes_rebuild_the_namespace(ops: list[Op]) -> None:
    """Any sequence of operations (some failing): applying each Changes to a store keeps it equal
    to the namespace, freed blocks are exactly those no longer referenced, and recovering from
    the store gives a namespace with identical listings."""
    ns = Namespace("hdfs", now_ms=0)
    store = {ROOT_INODE_ID: ns.root_record()}
    for seed in (  # a start with something to rename and delete, where everyone may write
        ns.set_permission(FsPath(), HDFS, 0o777),
        ns.mkdirs(p("/a/b"), HDFS, 0o777, 0),
        create(ns, "/a/c", ALICE, blocks=(block(0),)),
        create(ns, "/c", BOB, blocks=(block(0, 5),), permission=0o666),
    ):
        apply(store, seed)
    for now, op in enumerate(ops, start=1):
        try:
            changes = run(ns, op, now, block(now))
        except FsError:
            assert snapshot(ns) == store
            continue
        before = referenced_blocks(store)
        apply(store, changes)
        assert store == snapshot(ns)
        assert set(changes.freed_blocks) == before - referenced_blocks(store)
    recovered = Namespace.recover(store.values(), "hdfs")
    assert full_listing(recovered) == full_listing(ns)
    assert recovered.inode_count == ns.inode_count == len(full_listing(ns))
