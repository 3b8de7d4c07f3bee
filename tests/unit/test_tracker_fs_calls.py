"""The tracker's file-system calls (TrackerCalls: blockReport, commitWrite, locateBlocks,
openForLocalization), decided in-process on a fake clock: only a RUNNING node on the
connection of its registered key is served, and a node localizing a resource must show a
container token the RM signed for it; the file is then read as the token's user."""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.fs import tickets
from cortex_rm.fs.block_map import BlockMap
from cortex_rm.fs.model import BlockRef, User
from cortex_rm.fs.name_node import NameNode, fresh_or_recovered
from cortex_rm.fs.namespace_store import MemoryNamespaceStore
from cortex_rm.fs.paths import parse_path
from cortex_rm.internal import block_codec
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.tracker_server import LOCALIZATION_GRACE_MS, FileSystemServices, TrackerCalls
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import NodeRefused, NodeRegistration
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.tokens import read_container_identifier
from tests.support.nm_requests import container_token

NODE = NodeId("10.0.0.1", 45454)
OTHER = NodeId("10.0.0.2", 45454)
KEY = "a" * 64
CONTAINER_KEY = MasterKey(7, b"c" * 32)
CONTAINER = ContainerId(ApplicationAttemptId(ApplicationId(1_700_000_000_000, 1), 1), 2)
NOW_MS = 1_000_000_000


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(NOW_MS / 1000)
    return c


@pytest.fixture
def name_node(clock: Clock) -> NameNode:
    namespace, first = fresh_or_recovered([], "root", "supergroup", NOW_MS)
    store = MemoryNamespaceStore()
    store.apply(first)
    nn = NameNode(namespace, BlockMap(clock, random.Random(1)), store, MasterKey(1, b"f" * 32), clock)
    root = User("root", frozenset({"supergroup"}))
    for path, mode in (("/shared", 0o755), ("/secret", 0o700)):
        nn.persist(nn.namespace.mkdirs(parse_path(path), root, mode, NOW_MS))
        block = BlockRef("blk_" + "0" * 31 + str(len(path)), 5, "0" * 32)
        nn.persist(nn.namespace.create_file(
            parse_path(f"{path}/f"), root, permission=0o644, replication=1, block_size=1 << 20,
            blocks=(block,), overwrite=False, now_ms=NOW_MS + 7,
        ))
    return nn


@pytest.fixture
def calls(clock: Clock, name_node: NameNode) -> TrackerCalls:
    tracker = NodeTracker(
        NodeTable(), clock, nm_expiry_ms=10_000, rm_identifier=1, container_token_master_key=CONTAINER_KEY
    )
    for node in (NODE, OTHER):
        tracker.register(NodeRegistration(node, f"{node.host}:8042", "/r", Resource(4096, 4), 1000), KEY)
    return TrackerCalls(tracker, KEY, "10.0.0.1:1234", fs=FileSystemServices(name_node, read_container_identifier))


def node_address(node: NodeId = NODE) -> ttypes.NodeAddress:
    return ttypes.NodeAddress(node.host, node.port)


def open_for(calls: TrackerCalls, path: str, public: bool = False, **token: object) -> block_codec.LocalizationSource:
    t = container_token(CONTAINER, key=CONTAINER_KEY, node=token.pop("node", NODE), **token)  # type: ignore[arg-type]
    answer = calls.openForLocalization(node_address(), t.identifier, t.password, path, public)
    return block_codec.source_from_thrift(answer)


def test_a_node_localizes_a_file_as_the_user_its_container_token_names(calls: TrackerCalls, clock: Clock) -> None:
    """The answer carries the file's length and time, and an OPEN ticket the node reads it with."""
    source = open_for(calls, "/shared/f", user="alice")
    assert (source.length, source.modification_time_ms) == (5, NOW_MS + 7)
    located = calls.locateBlocks(node_address(), source.ticket, 0, -1)
    assert block_codec.locations_from_thrift(located)[0] == 5
    with pytest.raises(ttypes.FsFailure, match="Path is not a file"):
        open_for(calls, "/shared", user="alice")


def test_a_private_file_is_refused_to_another_users_container(calls: TrackerCalls) -> None:
    """/secret is root's and 700: alice's container cannot have it, the java class says why."""
    with pytest.raises(ttypes.FsFailure) as refused:
        open_for(calls, "/secret/f", user="alice")
    assert refused.value.java_class == "org.apache.hadoop.security.AccessControlException"
    assert "user=alice" in refused.value.message


def test_public_means_readable_by_everyone_not_by_the_user(calls: TrackerCalls) -> None:
    """Asked as PUBLIC, even root's own 700 directory is refused (everyone must be able to read it);
    a 755 one is granted."""
    with pytest.raises(ttypes.FsFailure):
        open_for(calls, "/secret/f", public=True, user="root")
    assert open_for(calls, "/shared/f", public=True, user="alice").ticket


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ({"sign_with": MasterKey(7, b"x" * 32)}, "not signed by this RM"),
        ({"node": OTHER}, f"is for {OTHER}, not {NODE}"),
        ({"expiry_ms": NOW_MS - LOCALIZATION_GRACE_MS - 1}, "has expired"),
    ],
)
def test_a_token_not_made_for_this_node_now_is_refused(calls: TrackerCalls, token: dict[str, object], reason: str) -> None:
    """A forged token, one for another node, or one long expired: NodeRefused, nothing is read."""
    with pytest.raises(ttypes.NodeRefused, match=reason):
        open_for(calls, "/shared/f", user="alice", **token)


def test_a_token_just_expired_still_localizes(calls: TrackerCalls) -> None:
    """Localization follows a start the token allowed; a token expired within the grace still serves."""
    assert open_for(calls, "/shared/f", user="alice", expiry_ms=NOW_MS - 1).ticket


def test_malformed_requests_are_refused_in_the_protocols_form(calls: TrackerCalls) -> None:
    """Wrong types and bad paths: NodeRefused (malformed) or FsFailure (InvalidPath), never a crash."""
    t = container_token(CONTAINER, key=CONTAINER_KEY, node=NODE)
    with pytest.raises(ttypes.NodeRefused):
        calls.openForLocalization(node_address(), "text", t.password, "/shared", False)
    with pytest.raises(ttypes.NodeRefused):
        calls.openForLocalization(node_address(), t.identifier, t.password, "/shared", "yes")
    with pytest.raises(ttypes.FsFailure) as bad:
        calls.openForLocalization(node_address(), t.identifier, t.password, "/a/../b", False)
    assert bad.value.java_class.endswith("InvalidPathException")


def test_only_the_connection_of_the_nodes_key_is_served(calls: TrackerCalls, name_node: NameNode) -> None:
    """The same call over a connection with another key is refused: a node cannot speak for another."""
    impostor = TrackerCalls(calls.tracker, "b" * 64, "10.0.0.9:1", fs=FileSystemServices(name_node, read_container_identifier))
    t = container_token(CONTAINER, key=CONTAINER_KEY, node=NODE)
    with pytest.raises(ttypes.NodeRefused, match="not registered with the key of this connection"):
        impostor.openForLocalization(node_address(), t.identifier, t.password, "/shared", True)


def test_a_node_aggregates_an_applications_logs_as_its_owner_where_yarn_logs_reads(
    clock: Clock, name_node: NameNode
) -> None:
    """openForAggregation: the RM names the owner; /tmp/logs is made 1777, the owner's directories
    as the owner; the CREATE ticket puts this node first.  An unknown application is refused."""
    app = ApplicationId(1_700_000_000_000, 12345)
    tracker = NodeTracker(NodeTable(), clock, nm_expiry_ms=10_000, rm_identifier=1)
    tracker.register(NodeRegistration(NODE, f"{NODE.host}:8042", "/r", Resource(4096, 4), 1000), KEY)

    def owner(app_id: ApplicationId, node_id: NodeId) -> str:
        if app_id != app:
            raise NodeRefused(f"{node_id} aggregates logs of {app_id}, which this RM does not know")
        return "alice"

    calls = TrackerCalls(tracker, KEY, "10.0.0.1:1234", fs=FileSystemServices(name_node, app_owner=owner))
    calls.blockReport(node_address(), ttypes.BlockReport(full=True, added=[], removed=[], free_bytes=1 << 30))
    answers: list[object] = []
    calls.openForAggregation(node_address(), str(app)).addBoth(answers.append)
    (target,) = answers
    assert isinstance(target, ttypes.AggregationTarget)
    assert target.path == f"/tmp/logs/alice/bucket-logs-tfile/2345/{app}/10.0.0.1_45454" and target.owner == "alice"
    assert tickets.verify({1: name_node.key}, target.ticket, "CREATE", NOW_MS).texts("pipeline")[0] == str(NODE)
    root = User("root", frozenset())
    assert name_node.namespace.get_status(parse_path("/tmp/logs"), root).permission == 0o1777
    mine = name_node.namespace.get_status(parse_path(target.path).parent, root)
    assert (mine.owner, mine.permission) == ("alice", 0o770)
    with pytest.raises(ttypes.NodeRefused, match="which this RM does not know"):
        calls.openForAggregation(node_address(), str(ApplicationId(1, 1)))


IMAGE = "ab" * 32


def _image_calls(calls: TrackerCalls, name_node: NameNode, image: str) -> TrackerCalls:
    return TrackerCalls(calls.tracker, KEY, "10.0.0.1:1234", fs=FileSystemServices(name_node, runtime_image=image))


def _put_image(name_node: NameNode, directory_mode: int) -> None:
    root = User("root", frozenset({"supergroup"}))
    name_node.persist(name_node.namespace.mkdirs(parse_path("/cortex/images"), root, directory_mode, NOW_MS))
    name_node.persist(name_node.namespace.create_file(
        parse_path(f"/cortex/images/{IMAGE}.tar.zst"), root, permission=0o644, replication=1, block_size=1 << 20,
        blocks=(BlockRef("blk_" + "1" * 32, 9, "0" * 32),), overwrite=False, now_ms=NOW_MS + 3,
    ))


def test_a_node_learns_the_runtime_image_and_reads_it_as_everyone(calls: TrackerCalls, name_node: NameNode) -> None:
    """openRuntimeImage: no image named -> ""; named but not uploaded -> its SHA-256 and no
    source (the node says it waits for the push); uploaded world-readable -> a read ticket; an
    archive that not everyone may read is refused as HDFS refuses."""
    nothing = block_codec.image_from_thrift(calls.openRuntimeImage(node_address()))
    assert nothing == block_codec.RuntimeImageSource("", None)
    named = _image_calls(calls, name_node, IMAGE)
    assert block_codec.image_from_thrift(named.openRuntimeImage(node_address())) == block_codec.RuntimeImageSource(IMAGE, None)
    _put_image(name_node, 0o755)
    image = block_codec.image_from_thrift(named.openRuntimeImage(node_address()))
    assert image.sha256 == IMAGE and image.source is not None
    assert (image.source.length, image.source.modification_time_ms) == (9, NOW_MS + 3)
    ticket = tickets.verify({1: name_node.key}, image.source.ticket, "OPEN", NOW_MS)
    assert ticket.text("path") == f"/cortex/images/{IMAGE}.tar.zst"
    root = User("root", frozenset({"supergroup"}))
    name_node.persist(name_node.namespace.set_permission(parse_path("/cortex/images"), root, 0o700))
    with pytest.raises(ttypes.FsFailure) as refused:
        named.openRuntimeImage(node_address())
    assert refused.value.java_class == "org.apache.hadoop.security.AccessControlException"


def test_an_unregistered_node_learns_no_image(calls: TrackerCalls, name_node: NameNode) -> None:
    """Only a registered node on its own key's connection is answered."""
    impostor = TrackerCalls(calls.tracker, "b" * 64, "10.0.0.9:1", fs=FileSystemServices(name_node, runtime_image=IMAGE))
    with pytest.raises(ttypes.NodeRefused, match="not registered with the key"):
        impostor.openRuntimeImage(node_address())
