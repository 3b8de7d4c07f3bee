"""The DataNode's upload endpoints decide from a request's head alone: a forged, expired or misdirected
ticket is refused (403 InvalidToken, in WebHDFS's RemoteException form) before the body is read;
a good one gets an ``Upload`` whose worker starts at once.

The resources are driven through a real ``LimitedSite`` over an in-memory transport on a
``Clock``; the DataNode's context is a small stand-in that signs nothing itself and queues the
work it is asked to run (nothing here needs a worker thread)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from cortex_rm.fs import tickets
from cortex_rm.fs.block_store import BlockStore
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.http_channel import LimitedChannel
from cortex_rm.yarn_api.http_limits import DATANODE_LIMITS, LimitedSite
from cortex_rm.yarn_api.http_streams import LimitedRequest
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.webhdfs.datanode_resource import BlockTransfers, DataNodeWebHdfs
from cortex_rm.yarn_api.webhdfs.uploads import CLIENT_UPLOADS, CLIENT_UPLOADS_PER_USER, Upload, UploadSlots
from tests.unit.test_http_limits import HalfClosingTransport

KEY = MasterKey(3, b"s" * 20)
FORGER = MasterKey(3, b"f" * 20)
NOW_MS = 1_000_000
HERE, THERE = "node-a:45454", "node-b:45454"
BLOCK = "blk_" + "ab" * 16


class ThreadCalls:
    """The reactor's ``callFromThread``: the calls are queued for the test."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []

    def callFromThread(self, call: Callable[..., object], *args: object) -> None:  # noqa: N802 (Twisted's name)
        self.calls.append(lambda: call(*args))


class Context:
    """What the DataNode role gives its resources, with the work it is asked to run queued."""

    def __init__(self, root: Path) -> None:
        self.node_id = NodeId.parse(HERE)
        self.http_address = "127.0.0.1:8042"
        self.store = BlockStore(root, lambda: NOW_MS)
        self.reactor = ThreadCalls()
        self.queued: list[Callable[[], Any]] = []
        self.answers: list[defer.Deferred[Any]] = []  # one per queued work: fire it to end that work

    def keys(self) -> dict[int, MasterKey]:
        return {KEY.key_id: KEY}

    def now_ms(self) -> int:
        return NOW_MS

    def run(self, work: Callable[[], Any]) -> defer.Deferred[Any]:
        self.queued.append(work)
        self.answers.append(defer.Deferred())
        return self.answers[-1]


def _ticket(op: str = "CREATE", *, key: MasterKey = KEY, expires_ms: int = NOW_MS + 60_000,
            path: str = "/data/file", pipeline: tuple[str, ...] = (HERE, THERE), user: str = "alice") -> str:
    claims = {"path": path, "block_size": 1 << 20, "pipeline": list(pipeline), "replicas": ["127.0.0.1:9"], "user": user}
    return tickets.sign(key, op, claims, expires_ms)


@pytest.fixture
def node(tmp_path: Path) -> tuple[Context, LimitedSite]:
    ctx = Context(tmp_path)
    root = Resource()
    root.putChild(b"webhdfs", DataNodeWebHdfs(ctx))  # type: ignore[arg-type]
    blocks = Resource()
    blocks.putChild(b"blocks", BlockTransfers(ctx))  # type: ignore[arg-type]
    root.putChild(b"cortex", blocks)
    return ctx, LimitedSite(root, limits=DATANODE_LIMITS, clock=Clock(), name="node", untyped_prefixes=(b"/webhdfs/",))


def _send_head(site: LimitedSite, method: str, target: str) -> tuple[LimitedChannel, HalfClosingTransport]:
    transport = HalfClosingTransport()
    channel: LimitedChannel = site.buildProtocol(IPv4Address("TCP", "10.0.0.9", 40000))
    channel.makeConnection(transport)
    channel.dataReceived(f"{method} {target} HTTP/1.1\r\nHost: n\r\nContent-Length: {1 << 30}\r\n\r\n".encode())
    return channel, transport


def _refusal(transport: HalfClosingTransport) -> dict[str, Any]:
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ") and transport.write_closed, head
    exception: dict[str, Any] = json.loads(body)["RemoteException"]
    return exception


@pytest.mark.parametrize(
    ("why", "ticket", "path"),
    [
        ("signature", _ticket(key=FORGER), "/data/file"),
        ("expired", _ticket(expires_ms=NOW_MS - 1), "/data/file"),
        ("is for", _ticket(), "/data/elsewhere"),
        ("another node first", _ticket(pipeline=(THERE, HERE)), "/data/file"),
        ("is for 'OPEN'", _ticket("OPEN"), "/data/file"),
        ("no ticket", "", "/data/file"),
    ],
)
def test_a_bad_write_ticket_is_refused_from_the_head_and_no_work_starts(
    node: tuple[Context, LimitedSite], why: str, ticket: str, path: str
) -> None:
    ctx, site = node
    channel, transport = _send_head(site, "PUT", f"/webhdfs/v1{path}?{urlencode({'op': 'CREATE', 'ticket': ticket})}")
    exception = _refusal(transport)
    assert exception["exception"] == "InvalidToken" and why in exception["message"]
    assert ctx.queued == [] and channel.requests[-1].content is None


def test_a_block_put_whose_ticket_does_not_name_this_node_is_refused_from_the_head(node: tuple[Context, LimitedSite]) -> None:
    ctx, site = node
    query = urlencode({"ticket": _ticket(pipeline=(THERE, "node-c:45454")), "checksum": "0" * 32})
    _, transport = _send_head(site, "PUT", f"/cortex/blocks/{BLOCK}?{query}")
    assert "does not name this node" in _refusal(transport)["message"] and ctx.queued == []


@pytest.mark.parametrize("declared", [(1 << 20) + 1, 10**17 - 1])
def test_a_block_put_declaring_more_than_the_block_size_is_refused_from_the_head(
    node: tuple[Context, LimitedSite], declared: int
) -> None:
    """A replica is at most the ticket's block size: a larger Content-Length is refused (400
    IllegalArgumentException) before anything is reserved under the disk cap or stored."""
    ctx, site = node
    query = urlencode({"ticket": _ticket(pipeline=(THERE, HERE)), "checksum": "0" * 32})
    transport = HalfClosingTransport()
    channel: LimitedChannel = site.buildProtocol(IPv4Address("TCP", "10.0.0.9", 40000))
    channel.makeConnection(transport)
    channel.dataReceived(f"PUT /cortex/blocks/{BLOCK}?{query} HTTP/1.1\r\nHost: n\r\nContent-Length: {declared}\r\n\r\n".encode())
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    exception = json.loads(body)["RemoteException"]
    assert exception["exception"] == "IllegalArgumentException" and "block size" in exception["message"]
    assert ctx.queued == [] and ctx.store.disk.used() == 0


def test_a_block_put_of_the_block_size_starts_its_worker(node: tuple[Context, LimitedSite]) -> None:
    """The largest replica a ticket allows (its block size) is accepted from the head."""
    ctx, site = node
    query = urlencode({"ticket": _ticket(pipeline=(THERE, HERE)), "checksum": "0" * 32})
    transport = HalfClosingTransport()
    channel: LimitedChannel = site.buildProtocol(IPv4Address("TCP", "10.0.0.9", 40000))
    channel.makeConnection(transport)
    channel.dataReceived(f"PUT /cortex/blocks/{BLOCK}?{query} HTTP/1.1\r\nHost: n\r\nContent-Length: {1 << 20}\r\n\r\n".encode())
    assert transport.value() == b"" and len(ctx.queued) == 1


def test_a_good_ticket_starts_the_worker_on_the_body_before_it_arrives(node: tuple[Context, LimitedSite]) -> None:
    ctx, site = node
    channel, transport = _send_head(site, "PUT", f"/webhdfs/v1/data/file?{urlencode({'op': 'CREATE', 'ticket': _ticket()})}")
    request = channel.requests[-1]
    assert isinstance(request, LimitedRequest) and isinstance(request.body_stream, Upload)
    assert transport.value() == b"" and len(ctx.queued) == 1  # receive_blocks, waiting for the body


def _retriable(transport: HalfClosingTransport) -> str:
    """The message of the 503 RetriableException ``transport`` was answered with."""
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and transport.write_closed, head
    exception = json.loads(body)["RemoteException"]
    assert exception["javaClassName"] == "org.apache.hadoop.ipc.RetriableException"
    message: str = exception["message"]
    return message


def _create(user: str) -> str:
    return f"/webhdfs/v1/data/file?{urlencode({'op': 'CREATE', 'ticket': _ticket(user=user)})}"


def test_uploads_past_the_nodes_slots_are_503_to_retry(
    node: tuple[Context, LimitedSite],
) -> None:
    """Each stored body holds a worker while it arrives: past CLIENT_UPLOADS at once the node answers
    Hadoop's RetriableException (503) from the head, and starts no work for it."""
    ctx, site = node
    for i in range(CLIENT_UPLOADS):
        _send_head(site, "PUT", _create(f"user{i // CLIENT_UPLOADS_PER_USER}"))
    assert len(ctx.queued) == CLIENT_UPLOADS
    _, transport = _send_head(site, "PUT", _create("somebody-else"))
    assert "its most at once" in _retriable(transport)
    assert len(ctx.queued) == CLIENT_UPLOADS


def test_one_user_holds_at_most_their_share_of_the_slots_and_another_user_still_gets_one(
    node: tuple[Context, LimitedSite],
) -> None:
    """alice's uploads past CLIENT_UPLOADS_PER_USER are 503 RetriableException from the head (the user is
    the one the NameNode signed into the ticket); bob's upload is taken; when one of alice's ends,
    she may start another."""
    ctx, site = node
    for _ in range(CLIENT_UPLOADS_PER_USER):
        _, transport = _send_head(site, "PUT", _create("alice"))
        assert transport.value() == b""
    _, refused = _send_head(site, "PUT", _create("alice"))
    assert "user alice is storing 2 uploads on this node" in _retriable(refused)
    assert len(ctx.queued) == CLIENT_UPLOADS_PER_USER
    _, bobs = _send_head(site, "PUT", _create("bob"))
    assert bobs.value() == b"" and len(ctx.queued) == CLIENT_UPLOADS_PER_USER + 1
    ctx.answers[0].errback(ConnectionError("the body was cut off"))  # one of alice's uploads ends
    _, again = _send_head(site, "PUT", _create("alice"))
    assert again.value() == b"" and len(ctx.queued) == CLIENT_UPLOADS_PER_USER + 2


def test_a_slot_is_given_back_when_its_body_is_stored_or_fails() -> None:
    """Slots count in all and per user; giving one back frees it for its user and for everyone."""
    slots = UploadSlots(2, per_user=1)
    slots.take("alice")
    with pytest.raises(RestError, match="user alice") as refused:
        slots.take("alice")
    assert refused.value.status == 503
    slots.take("bob")
    with pytest.raises(RestError, match="its most at once"):
        slots.take("carol")
    slots.give("alice")
    assert slots.held_by("alice") == 0 and slots.taken == 1
    slots.take("carol")


def test_a_per_user_share_must_fit_the_slots() -> None:
    with pytest.raises(ValueError):
        UploadSlots(4, per_user=5)
    with pytest.raises(ValueError):
        UploadSlots(4, per_user=0)
    assert UploadSlots(3).per_user == 3
