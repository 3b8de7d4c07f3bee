"""Fuzzing WebHDFS's NameNode: its query parameters, request paths, tickets and every operation.

* ``params.Query`` and ``request_path`` over random query arguments and raw paths
  (invalid UTF-8, bad percent-encoding, long values): values, or ``IllegalArgument`` /
  ``InvalidPath`` (``FsError``s, answered 400).
* ``tickets.verify`` over random text and mutated genuine tickets (what a DataNode gets
  in its query string): a ``Ticket`` only for the genuine one, ``InvalidToken`` otherwise.
* The NameNode resource in a twisted.web Site, on a fake clock and a memory store,
  with a file and a home directory in place: random methods, operations, paths and
  parameters are answered 2xx/307 or 4xx with a ``RemoteException`` JSON body, never a
  500, and nothing is logged as a failure.
* The DataNode's resources (``/webhdfs/v1`` after a redirect, ``/cortex/blocks``) with
  random operations, paths, tickets (random, or a genuine OPEN ticket) and parameters:
  answered 4xx with a ``RemoteException`` body (or 200 for a genuine empty read), never
  a 500, and never past a ticket they should refuse.
* ``forms`` (the JSON WebHDFS answers with) holds any error message it is given.
"""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from cortex_rm.fs import tickets
from cortex_rm.fs.block_map import BlockMap, DataNode
from cortex_rm.fs.errors import FsError, IllegalArgument, InvalidToken
from cortex_rm.fs.model import BlockRef, User
from cortex_rm.fs.name_node import NameNode, WriteRequest, WrittenBlock, fresh_or_recovered
from cortex_rm.fs.namespace_store import MemoryNamespaceStore
from cortex_rm.fs.paths import parse_path
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.webhdfs import forms
from cortex_rm.yarn_api.http_limits import DATANODE_LIMITS, LimitedSite
from cortex_rm.yarn_api.webhdfs.datanode_resource import BlockTransfers, DataNodeWebHdfs
from cortex_rm.yarn_api.webhdfs.namenode_resource import NameNodeResource
from cortex_rm.yarn_api.webhdfs.params import Query, request_path
from tests.fuzz.fuzzing import failures_logged, fuzz_settings, mutated
from tests.fuzz.messages import texts
from tests.support.http_site import HttpConnection

NOW_MS = 1_700_000_000_000
KEY = MasterKey(3, b"k" * 32)
ALICE = User("alice", frozenset({"alice"}))
NODES = [DataNode(f"10.0.0.{i}:45454", f"10.0.0.{i}:8042") for i in (1, 2, 3)]


def _fired(d: defer.Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box and not hasattr(box[0], "raiseException"), box
    return box[0]


class NameNodeSite:
    """A NameNode with three nodes, /user/alice and /user/alice/f (two blocks), behind a Site."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW_MS / 1000)
        store = MemoryNamespaceStore()
        namespace, first = fresh_or_recovered([], "root", "supergroup", NOW_MS)
        _fired(store.apply(first))
        nn = NameNode(namespace, BlockMap(self.clock, random.Random(7)), store, KEY, self.clock)
        for node in NODES:
            nn.node_report(node, True, [], [])
        _fired(nn.home_directory(ALICE))
        redirect = nn.write_redirect("CREATE", WriteRequest(parse_path("/user/alice/f"), ALICE))
        holders = tuple(tickets.verify({KEY.key_id: KEY}, redirect.ticket, "CREATE", nn.now_ms()).texts("pipeline"))
        blocks = [BlockRef(f"blk_{n:032x}", 10, f"{n:032x}") for n in (1, 2)]
        _fired(nn.commit_write(redirect.node.node_id, redirect.ticket, [WrittenBlock(b, holders) for b in blocks]))
        root = Resource()
        root.putChild(b"webhdfs", NameNodeResource(nn))
        self.site = Site(root, reactor=self.clock)


OPS = [
    "GETFILESTATUS", "LISTSTATUS", "LISTSTATUS_BATCH", "GETHOMEDIRECTORY", "GETCONTENTSUMMARY", "GETFILECHECKSUM",
    "GETSERVERDEFAULTS", "GETFILEBLOCKLOCATIONS", "OPEN", "MKDIRS", "CREATE", "APPEND", "RENAME", "DELETE",
    "SETPERMISSION", "SETOWNER", "SETREPLICATION", "SETTIMES", "getfilestatus", "NOPE", "",
]  # fmt: skip
PARAMS = [
    "user.name", "permission", "recursive", "overwrite", "replication", "blocksize", "offset", "length",
    "destination", "owner", "group", "modificationtime", "accesstime", "noredirect", "startAfter",
    "excludedatanodes",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "alice",
            "root",
            "bob",
            "755",
            "1777",
            "8",
            "-1",
            "0",
            "1",
            "3",
            "513",
            "true",
            "false",
            "null",
            "9" * 30,
            "/user/alice/g",
            "/user/alice/f",
            "/",
            "/tmp",
            "a/b",
            "10.0.0.1:8042",
            "%ff",
            "%",
            "\u0661",
        ]
    ),
    texts(20),
)
FS_PATHS = st.one_of(
    st.sampled_from(
        ["", "/", "/user", "/user/alice", "/user/alice/f", "/user/alice/f/x", "/tmp", "//", "/%2e%2e", "/a%00b", "/%ff"]
    ),
    st.lists(texts(8), max_size=4).map(lambda parts: "/" + "/".join(quote(p, safe="") for p in parts)),
)


def _query_text(op: str, pairs: list[tuple[str, str]]) -> str:
    items = [("op", op)] if op != "-" else []
    items += pairs
    return "&".join(f"{quote(k, safe='')}={v if v in ('%ff', '%') else quote(v, safe='')}" for k, v in items)


@fuzz_settings(280)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    path=FS_PATHS,
    op=st.sampled_from([*OPS, "-"]),
    pairs=st.lists(st.tuples(st.sampled_from(PARAMS) | texts(6), VALUES), max_size=5),
)
@example(method="GET", path="/user/alice/f", op="OPEN", pairs=[("offset", "99999"), ("user.name", "alice")]).via(
    "OPEN past the end of the file"
)
@example(method="PUT", path="/user/alice/f", op="SETREPLICATION", pairs=[("replication", "1"), ("user.name", "alice")])
def test_any_namenode_request_is_answered_without_a_server_error(
    method: str, path: str, op: str, pairs: list[tuple[str, str]]
) -> None:
    """Any method, path, op and parameters: 2xx/307, or 4xx with a RemoteException body; no failure logged."""
    site = NameNodeSite()
    connection = HttpConnection(site.site, host="rm.test:8088")
    with failures_logged() as logged:
        connection.send(method, f"/webhdfs/v1{path}?{_query_text(op, pairs)}")
        site.clock.advance(0)
    response = connection.response()
    assert response is not None, "no complete answer"
    assert response.status in (200, 307) or 400 <= response.status < 500, (response.status, response.body)
    if response.status >= 400 and method != "HEAD":
        error = response.json()["RemoteException"]
        assert {"exception", "javaClassName", "message"} <= set(error)
    assert not logged, logged[0]


arg_bytes = st.one_of(st.binary(max_size=12), st.text(max_size=12).map(lambda t: t.encode("utf-8")))


@fuzz_settings(210)
@given(
    args=st.dictionaries(
        st.one_of(st.sampled_from([b"op", b"user.name", b"permission", b"offset", b"recursive"]), arg_bytes),
        st.lists(st.one_of(arg_bytes, st.just(b"7" * (16 * 1024 + 1))), max_size=2),
        max_size=4,
    ),
)
def test_query_parameters_parse_or_are_illegal_arguments(args: dict[bytes, list[bytes]]) -> None:
    """Query(args) and each typed reader: a value, or IllegalArgument (answered 400)."""
    try:
        query = Query(args)
    except IllegalArgument:
        return
    readers = (
        query.op,
        query.user,
        query.excluded_nodes,
        lambda: query.boolean("recursive", False),
        lambda: query.integer("offset", 0, 0),
        lambda: query.integer("permission", None, -1, 10),
        lambda: query.permission(0o755),
    )
    for reader in readers:
        try:
            reader()
        except IllegalArgument:
            pass


@fuzz_settings(210)
@given(raw=st.one_of(st.binary(max_size=40).map(lambda b: b"/webhdfs/v1" + b), st.binary(max_size=20)))
@example(raw=b"/webhdfs/v1/%C3").via("a truncated UTF-8 sequence")
def test_request_paths_parse_or_are_fs_errors(raw: bytes) -> None:
    """request_path over any raw path: an FsPath, or an FsError answered 4xx."""
    try:
        request_path(raw)
    except FsError as error:
        assert 400 <= error.http_status < 500


GENUINE = tickets.sign(
    KEY, "OPEN", {"path": "/user/alice/f", "pipeline": ["10.0.0.1:45454"]}, NOW_MS + 60_000, lambda n: b"\x01" * n
)


@fuzz_settings(210)
@given(
    text=st.one_of(
        texts(60),
        mutated(st.just(GENUINE.encode()), max_mutations=3).map(lambda b: b.decode("latin-1")),
        st.builds(lambda payload: tickets._b64(payload) + "." + GENUINE.split(".")[1], st.binary(max_size=60)),
        st.builds(lambda depth: tickets._b64(b"[" * depth) + ".x", st.integers(1, 12_000)),
    ),
)
@example(text=GENUINE).via("the genuine ticket")
@example(text=tickets._b64(b"[" * 12_000) + ".AAAA").via("a deeply nested JSON payload")
def test_tickets_verify_or_are_invalid_tokens(text: str) -> None:
    """tickets.verify over any text: InvalidToken, or the genuine ticket's claims."""
    try:
        ticket = tickets.verify({KEY.key_id: KEY}, text, "OPEN", NOW_MS)
    except InvalidToken:
        return
    assert ticket.text("path") == "/user/alice/f"


@fuzz_settings(70)
@given(message=texts(80))
def test_remote_exceptions_hold_any_message(message: str) -> None:
    """forms.remote_exception + encode: JSON that gives back the message and the class."""
    body = json.loads(forms.encode(forms.remote_exception(IllegalArgument(message))))["RemoteException"]
    assert body["message"] == message and body["exception"] == "IllegalArgumentException"


class GuardedDataNode:
    """A DataNode context that knows the NameNode's key and answers a read's location with an empty
    file; storing, streaming and committing are never reached by a request it should refuse."""

    node_id = NodeId("10.0.0.1", 45454)
    http_address = "10.0.0.1:8042"

    def keys(self) -> dict[int, MasterKey]:
        return {KEY.key_id: KEY}

    def now_ms(self) -> int:
        return NOW_MS

    def locate(self, ticket: str, offset: int, length: int) -> defer.Deferred[tuple[int, tuple[Any, ...]]]:
        return defer.succeed((0, ()))

    def __getattr__(self, name: str) -> Any:  # store, run, commit, reactor...: past every check
        raise AssertionError(f"a refused request reached the DataNode's {name}")


def _datanode_site() -> Site:
    """The node's resources behind the node port's own site (uploads stream only through it)."""
    root = Resource()
    root.putChild(b"webhdfs", DataNodeWebHdfs(GuardedDataNode()))  # type: ignore[arg-type]
    cortex = Resource()
    cortex.putChild(b"blocks", BlockTransfers(GuardedDataNode()))  # type: ignore[arg-type]
    root.putChild(b"cortex", cortex)
    return LimitedSite(root, limits=DATANODE_LIMITS, clock=Clock(), name="node", untyped_prefixes=(b"/webhdfs/",))


DATANODE_TICKETS = st.one_of(
    st.just(GENUINE),
    mutated(st.just(GENUINE.encode()), max_mutations=2).map(lambda b: quote(b.decode("latin-1"), safe="")),
    texts(30).map(lambda t: quote(t, safe="")),
)


@fuzz_settings(180)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    target=st.one_of(
        st.builds(lambda p: f"/webhdfs/v1{p}", FS_PATHS),
        st.sampled_from(
            ["/cortex/blocks/blk_" + "0" * 32, "/cortex/blocks/x", "/cortex/blocks/", "/cortex/blocks/a/b"]
        ),
    ),
    op=st.sampled_from(["OPEN", "CREATE", "APPEND", "GETFILESTATUS", "-"]),
    ticket=DATANODE_TICKETS,
    pairs=st.lists(st.tuples(st.sampled_from(["offset", "length", "checksum", "user.name"]), VALUES), max_size=3),
)
@example(method="GET", target="/webhdfs/v1/user/alice/f", op="OPEN", ticket=GENUINE, pairs=[("offset", "1")]).via(
    "a genuine ticket, reading past the end"
)
def test_any_datanode_request_is_refused_in_webhdfs_form(
    method: str, target: str, op: str, ticket: str, pairs: list[tuple[str, str]]
) -> None:
    """Any request to a DataNode: 4xx with a RemoteException body, or 200 for the genuine (empty) read;
    nothing logged as a failure."""
    query = _query_text(op, pairs) + f"&ticket={ticket}"
    connection = HttpConnection(_datanode_site(), host="10.0.0.1:8042")
    with failures_logged() as logged:
        connection.send(method, f"{target}?{query}")
    response = connection.response()
    assert response is not None, "no complete answer"
    assert response.status == 200 or 400 <= response.status < 500, (response.status, response.body)
    if response.status >= 400 and method != "HEAD":
        assert {"exception", "javaClassName", "message"} <= set(response.json()["RemoteException"])
    assert not logged, logged[0]
