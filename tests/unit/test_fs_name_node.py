"""The NameNode on a fake clock with an in-memory store: the namespace it starts with, home
directories made at first use, the two-step write (redirect, then the pipeline's commit), reads
located through their ticket, and what a node localizing a resource is given."""

from __future__ import annotations

import random

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.fs import tickets
from cortex_rm.fs.block_map import BlockMap, DataNode
from cortex_rm.fs.errors import AccessControl, FileAlreadyExists, FileNotFound, IllegalArgument, InvalidToken
from cortex_rm.fs.model import BlockRef, FileKind, User
from cortex_rm.fs.name_node import EVERYONE, NameNode, WriteRequest, WrittenBlock, fresh_or_recovered
from cortex_rm.fs.namespace_store import MemoryNamespaceStore
from cortex_rm.fs.paths import parse_path
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.tokens import MasterKey

NOW_MS = 1_700_000_000_000
ROOT = User("root", frozenset({"supergroup"}))
ALICE = User("alice", frozenset({"alice"}))
BOB = User("bob", frozenset({"bob"}))
NODES = [DataNode(f"10.0.0.{i}:45454", f"10.0.0.{i}:8042") for i in (1, 2, 3)]


def fired(d: defer.Deferred[object]) -> object:
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()  # type: ignore[union-attr]
    return results[0]


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(NOW_MS / 1000)
    return c


@pytest.fixture
def store() -> MemoryNamespaceStore:
    return MemoryNamespaceStore()


@pytest.fixture
def nn(clock: Clock, store: MemoryNamespaceStore) -> NameNode:
    namespace, first = fresh_or_recovered([], "root", "supergroup", NOW_MS)
    fired(store.apply(first))
    name_node = NameNode(namespace, BlockMap(clock, random.Random(7)), store, MasterKey(3, b"k" * 32), clock)
    for node in NODES:
        name_node.node_report(node, True, [], [])
    return name_node


def block(n: int, length: int = 10) -> BlockRef:
    return BlockRef(f"blk_{n:032x}", length, f"{n:032x}")


def write(nn: NameNode, path: str, user: User, blocks: list[BlockRef], **request: object) -> int:
    redirect = nn.write_redirect("CREATE", WriteRequest(parse_path(path), user, **request))  # type: ignore[arg-type]
    holders = tuple(tickets.verify({3: nn.key}, redirect.ticket, "CREATE", nn.now_ms()).texts("pipeline"))
    return fired(nn.commit_write(redirect.node.node_id, redirect.ticket, [WrittenBlock(b, holders) for b in blocks]))  # type: ignore[return-value]


def test_a_new_file_system_has_a_root_user_and_a_sticky_world_writable_tmp(nn: NameNode, store: MemoryNamespaceStore) -> None:
    """/ and /user are root's 755; /tmp is 1777 as in HDFS; all three are in the store."""
    modes = {p: nn.namespace.get_status(parse_path(p), ROOT).permission for p in ("/", "/user", "/tmp")}
    assert modes == {"/": 0o755, "/user": 0o755, "/tmp": 0o1777}
    assert len(fired(store.load())) == 3  # type: ignore[arg-type]


def test_a_home_directory_is_made_for_its_user_at_first_use_and_kept(nn: NameNode, store: MemoryNamespaceStore) -> None:
    """GETHOMEDIRECTORY makes /user/alice owned by alice (755), durably; asking again changes nothing."""
    assert str(fired(nn.home_directory(ALICE))) == "/user/alice"
    status = nn.namespace.get_status(parse_path("/user/alice"), ROOT)
    assert (status.owner, status.group, status.permission, status.kind) == ("alice", "alice", 0o755, FileKind.DIRECTORY)
    count = len(fired(store.load()))  # type: ignore[arg-type]
    assert str(fired(nn.home_directory(ALICE))) == "/user/alice"
    assert len(fired(store.load())) == count == 4  # type: ignore[arg-type]
    write(nn, "/user/alice/f", ALICE, [block(1)])  # she can write in it; bob cannot
    with pytest.raises(AccessControl):
        nn.write_redirect("CREATE", WriteRequest(parse_path("/user/alice/g"), BOB))


def test_a_write_is_committed_once_by_the_first_node_of_its_pipeline(nn: NameNode) -> None:
    """The pipeline has `replication` distinct live nodes; only its first node may commit, once."""
    redirect = nn.write_redirect("CREATE", WriteRequest(parse_path("/tmp/x"), ALICE, replication=2))
    pipeline = tickets.verify({3: nn.key}, redirect.ticket, "CREATE", nn.now_ms()).texts("pipeline")
    assert len(set(pipeline)) == 2 and pipeline[0] == redirect.node.node_id
    other = next(n.node_id for n in NODES if n.node_id != redirect.node.node_id)
    with pytest.raises(InvalidToken, match="issued for"):
        nn.commit_write(other, redirect.ticket, [])
    written = [WrittenBlock(block(1, 7), tuple(pipeline)), WrittenBlock(block(2, 5), tuple(pipeline))]
    assert fired(nn.commit_write(redirect.node.node_id, redirect.ticket, written)) == 12
    with pytest.raises(InvalidToken, match="already committed"):
        nn.commit_write(redirect.node.node_id, redirect.ticket, written)
    status = nn.namespace.get_status(parse_path("/tmp/x"), ALICE)
    assert (status.length, status.owner, status.replication) == (12, "alice", 2)
    assert {n.node_id for n in nn.blocks.locations(block(1).block_id)} == set(pipeline)


def test_a_commit_checks_the_namespace_again(nn: NameNode) -> None:
    """Two CREATEs of one path without overwrite: both get redirects, the second commit is refused."""
    first = nn.write_redirect("CREATE", WriteRequest(parse_path("/tmp/y"), ALICE))
    second = nn.write_redirect("CREATE", WriteRequest(parse_path("/tmp/y"), ALICE))
    fired(nn.commit_write(first.node.node_id, first.ticket, []))
    with pytest.raises(FileAlreadyExists):
        nn.commit_write(second.node.node_id, second.ticket, [])


@pytest.mark.parametrize(
    "request_args",
    [{"replication": 0}, {"replication": 513}, {"block_size": 1000}, {"block_size": 1024 * 1024 + 1}],
)
def test_bad_write_parameters_are_refused_before_any_data_moves(nn: NameNode, request_args: dict[str, int]) -> None:
    with pytest.raises(IllegalArgument):
        nn.write_redirect("CREATE", WriteRequest(parse_path("/tmp/z"), ALICE, **request_args))  # type: ignore[arg-type]


def test_a_read_is_located_through_its_ticket_and_refused_once_the_file_is_replaced(nn: NameNode) -> None:
    """OPEN's ticket names the file's inode: after the file is replaced, the old ticket locates nothing."""
    write(nn, "/tmp/r", ALICE, [block(1, 10), block(2, 10), block(3, 4)])
    redirect = nn.read_redirect(parse_path("/tmp/r"), BOB, 12, None)
    length, located = nn.locate(redirect.ticket, 12, 10)
    assert length == 24 and [(b.block.block_id, b.offset) for b in located] == [(block(2).block_id, 10), (block(3).block_id, 20)]
    assert all(b.sources for b in located)
    write(nn, "/tmp/r", ALICE, [block(4)], overwrite=True)
    with pytest.raises(InvalidToken, match="replaced"):
        nn.locate(redirect.ticket, 0, -1)
    with pytest.raises(IllegalArgument):
        nn.read_redirect(parse_path("/tmp/r"), BOB, 11, None)  # beyond the 10 bytes now there


def test_a_localizing_node_gets_the_files_length_time_and_a_read_ticket(nn: NameNode, clock: Clock) -> None:
    """As the user: their READ is checked; as PUBLIC: the file must be readable by everyone."""
    write(nn, "/tmp/mine", ALICE, [block(1, 3)], permission=0o600)
    length, modified, ticket = nn.localization_source(parse_path("/tmp/mine"), ALICE)
    assert (length, modified) == (3, NOW_MS)
    assert nn.locate(ticket, 0, -1)[0] == 3
    with pytest.raises(AccessControl, match=f"user={EVERYONE.name}"):
        nn.localization_source(parse_path("/tmp/mine"), None)
    with pytest.raises(AccessControl, match="user=bob"):
        nn.localization_source(parse_path("/tmp/mine"), BOB)
    with pytest.raises(FileNotFound):
        nn.localization_source(parse_path("/tmp/none"), ALICE)


def test_a_read_is_sent_to_a_holder_the_client_did_not_exclude(nn: NameNode) -> None:
    """``excludedatanodes`` (nodes the client failed to reach): another holder serves; with every
    holder excluded, another live node (it reads from the holders)."""
    write(nn, "/tmp/e", ALICE, [block(1, 10)], replication=2)
    holders = [n.http_address for n in nn.blocks.locations(block(1).block_id)]
    first = nn.read_redirect(parse_path("/tmp/e"), BOB, 0, None).node.http_address
    assert first in holders
    second = nn.read_redirect(parse_path("/tmp/e"), BOB, 0, None, frozenset({first})).node.http_address
    assert second in holders and second != first
    third = nn.read_redirect(parse_path("/tmp/e"), BOB, 0, None, frozenset(holders)).node.http_address
    assert third not in holders


def _aggregate(nn: NameNode, owner: str, app: str, node: str) -> None:
    """A node writes an application's aggregated log file as ``owner`` (as the tracker asks)."""
    path = parse_path(f"/tmp/logs/{owner}/bucket-logs-tfile/0001/{app}/{node.replace(':', '_')}")
    redirect = fired(nn.aggregation_redirect(parse_path("/tmp/logs"), path, owner, node))
    holders = tuple(tickets.verify({3: nn.key}, redirect.ticket, "CREATE", nn.now_ms()).texts("pipeline"))  # type: ignore[attr-defined]
    fired(nn.commit_write(node, redirect.ticket, [WrittenBlock(block(len(app) + len(node)), holders)]))  # type: ignore[attr-defined]


def test_aggregated_logs_older_than_the_retention_are_deleted_unless_their_application_runs(
    nn: NameNode, clock: Clock
) -> None:
    """Retention deletes an application's log directory once it and every file in it are older
    than the cutoff and the application does not run; newer or running ones stay, and so does
    anything that is not at an application's depth."""
    _aggregate(nn, "alice", "application_1_0001", NODES[0].node_id)
    _aggregate(nn, "bob", "application_1_0002", NODES[0].node_id)
    _aggregate(nn, "bob", "application_1_0003", NODES[0].node_id)
    clock.advance(3600)
    _aggregate(nn, "alice", "application_1_0001", NODES[1].node_id)  # a later file in 0001's dir
    _aggregate(nn, "carol", "application_1_0004", NODES[0].node_id)
    cutoff = nn.now_ms() - 1000
    third = ApplicationId.parse("application_1_0003")
    stray = parse_path("/tmp/logs/bob/bucket-logs-tfile/0001/not-an-app")  # not an application's: never touched
    fired(nn.persist(nn.namespace.mkdirs(stray, ROOT, 0o755, NOW_MS)))
    deleted = fired(nn.delete_expired_logs(parse_path("/tmp/logs"), "bucket-logs-tfile", cutoff, lambda app: app == third))
    assert [str(p) for p in deleted] == ["/tmp/logs/bob/bucket-logs-tfile/0001/application_1_0002"]  # type: ignore[attr-defined]
    left = {
        entry.path_suffix
        for user in ("alice", "bob", "carol")
        for entry in nn.namespace.list_status(parse_path(f"/tmp/logs/{user}/bucket-logs-tfile/0001"), ROOT)[0]
    }
    assert left == {"application_1_0001", "application_1_0003", "application_1_0004", "not-an-app"}
    again = fired(nn.delete_expired_logs(parse_path("/tmp/logs"), "bucket-logs-tfile", cutoff, lambda app: False))
    assert [str(p) for p in again] == ["/tmp/logs/bob/bucket-logs-tfile/0001/application_1_0003"]  # type: ignore[attr-defined]
    assert fired(nn.delete_expired_logs(parse_path("/nowhere"), "bucket-logs-tfile", nn.now_ms(), lambda app: False)) == []
