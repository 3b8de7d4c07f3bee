"""``cortex-rm ring``: formatting a ring view, finding nodes in a work dir, fetching over HTTP, the subcommand.

Fetching runs against ``http.server`` in a background thread on 127.0.0.1, port 0;
the answers it serves are what ``RingResource`` renders (through ``DummyRequest``),
so the client is checked against the server's real output.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.refusals import Refusals
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.ring_status import (
    RingStatusError,
    fetch_ring,
    format_ring,
    ring_addresses_in,
    ring_command,
    snapshot_problem,
)
from cortex_rm.yarn_api.ring_rest import RingResource, ring_view_to_json

ME = Peer(0x50 << 152, "127.0.0.2:7946")
A = Peer(0x10 << 152, "127.0.0.1:7946")
B = Peer(0x80 << 152, "127.0.0.3:7946")
C = Peer(0xC0 << 152, "127.0.0.4:7946")


def hexid(n: int) -> str:
    return f"{n:040x}"


# A ring view as a node serves it (literal, so the text below is checked against fixed input).
SNAPSHOT: dict[str, Any] = {
    "ring": {
        "observedAtMs": 1_700_000_000_000,
        "node": {"id": hexid(0x50 << 152), "address": "127.0.0.2:7946"},
        "state": "member",
        "incarnation": 2,
        "predecessor": {"id": hexid(0x10 << 152), "address": "127.0.0.1:7946"},
        "successors": [
            {"id": hexid(0x80 << 152), "address": "127.0.0.3:7946"},
            {"id": hexid(0xC0 << 152), "address": "127.0.0.4:7946"},
        ],
        "fingerCount": 3,
        "records": 12,
        "members": [
            {"id": hexid(0x10 << 152), "address": "127.0.0.1:7946", "status": "alive", "incarnation": 0},
            {"id": hexid(0x80 << 152), "address": "127.0.0.3:7946", "status": "alive", "incarnation": 1},
            {"id": hexid(0xA0 << 152), "address": "127.0.0.10:7946", "status": "dead", "incarnation": 7},
            {"id": hexid(0xC0 << 152), "address": "127.0.0.4:7946", "status": "suspect", "incarnation": 4},
        ],
        "memberCounts": {"alive": 2, "suspect": 1, "dead": 1, "left": 0},
        "refusals": {"senders": 1, "rumours": 7, "gossip": 0, "records": 2, "rateLimited": 30, "refutedDeathClaims": 3},
    }
}

GOLDEN = """\
ring view of 5000000000@127.0.0.2:7946: state member, incarnation 2, 3 finger(s), 12 record(s)
  predecessor  1000000000@127.0.0.1:7946
  successors   8000000000@127.0.0.3:7946, c000000000@127.0.0.4:7946
  members      4 known: 2 alive, 1 suspect, 1 dead, 0 left
  refused      7 rumour(s), 2 record(s), 0 gossip item(s), 1 envelope(s) from a key without valid puzzle or work, 30 over rate limits, 3 death claim(s) refuted

ID          ADDRESS          STATUS   INCARNATION  ROLE
5000000000  127.0.0.2:7946   alive    2            me
8000000000  127.0.0.3:7946   alive    1            successor #1
a000000000  127.0.0.10:7946  dead     7
c000000000  127.0.0.4:7946   suspect  4            successor #2
1000000000  127.0.0.1:7946   alive    0            predecessor
"""

VIEW = RingView(
    me=ME,
    state=RingState.MEMBER,
    incarnation=2,
    predecessor=A,
    successors=(B, C),
    finger_count=3,
    members=((A, MemberStatus.ALIVE, 0), (B, MemberStatus.ALIVE, 1), (C, MemberStatus.SUSPECT, 4)),
    records=12,
)


# ------------------------------------------------------------------ formatting


def test_format_ring_golden() -> None:
    """A header (id, address, state, incarnation, fingers, records, neighbours, counts), then the
    members clockwise from the node, each marked with its role."""
    assert format_ring(SNAPSHOT) == GOLDEN


def test_format_ring_marks_neighbours_membership_has_not_reported() -> None:
    """A successor or predecessor missing from the member list still gets a row, with status and incarnation '-'."""
    snapshot = json.loads(json.dumps(SNAPSHOT))
    snapshot["ring"]["members"] = []
    lines = format_ring(snapshot).splitlines()
    assert "  members      0 known: 0 alive, 0 suspect, 0 dead, 0 left" in lines
    assert lines[-3:] == [
        "8000000000  127.0.0.3:7946  -       -            successor #1",
        "c000000000  127.0.0.4:7946  -       -            successor #2",
        "1000000000  127.0.0.1:7946  -       -            predecessor",
    ]


def test_format_ring_marks_members_whose_address_is_unproven() -> None:
    """A member whose address this node's dials have not proven is marked so; one that says nothing
    about it (an older node's answer) is not."""
    snapshot = json.loads(json.dumps(SNAPSHOT))
    first = snapshot["ring"]["members"][0]
    first["addressVerified"] = False
    row = next(line for line in format_ring(snapshot).splitlines() if line.startswith(first["id"][:10]))
    assert "address unproven" in row.split("  ")[-1]
    assert "address unproven" not in format_ring(SNAPSHOT)


def test_format_ring_of_a_node_alone_is_its_own_successor() -> None:
    """A ring of one: no predecessor, and the node's only row is both 'me' and 'successor #1'."""
    view = RingView(ME, RingState.ALONE, 0, None, (ME,), 0, (), 0)
    text = format_ring(ring_view_to_json(view, now_ms=0))
    assert "  predecessor  (none)\n" in text
    assert text.endswith("5000000000  127.0.0.2:7946  alive   0            me, successor #1\n")


def test_format_ring_of_a_node_that_left() -> None:
    """A node that left shows itself as 'left', not 'alive'."""
    view = RingView(ME, RingState.LEFT, 5, None, (), 0, (), 0)
    text = format_ring(ring_view_to_json(view, now_ms=0))
    assert "state left" in text
    assert text.endswith("  left    5            me\n")


def test_refusals_are_served_by_their_json_names_and_a_node_without_them_still_formats() -> None:
    """The view's Refusals go out under "refusals" (read back by format_ring); a snapshot without
    them (a node older than the counters) has no 'refused' line; a malformed one is refused."""
    view = replace(VIEW, refusals=Refusals(senders=1, rumours=7, records=2, rate_limited=30, refuted_deaths=3))
    served = ring_view_to_json(view, now_ms=0)
    assert served["ring"]["refusals"] == SNAPSHOT["ring"]["refusals"]
    assert format_ring(served).splitlines()[4] == GOLDEN.splitlines()[4]
    old = json.loads(json.dumps(SNAPSHOT))
    del old["ring"]["refusals"]
    assert snapshot_problem(old) is None and "refused" not in format_ring(old)
    old["ring"]["refusals"] = {"rumours": "many"}
    assert snapshot_problem(old) == '"ring.refusals" is not an object of counts'


def test_served_documents_pass_the_snapshot_check() -> None:
    """What ring_view_to_json writes is a valid snapshot; so is the literal one used above."""
    assert snapshot_problem(ring_view_to_json(VIEW, now_ms=0)) is None
    assert snapshot_problem(SNAPSHOT) is None


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], 'no "ring" object'),
        ({"clusterInfo": {}}, 'no "ring" object'),
        ({"ring": {**SNAPSHOT["ring"], "state": None}}, '"ring.state"'),
        ({"ring": {**SNAPSHOT["ring"], "successors": [{"id": "ab"}]}}, "without an id and an address"),
        ({"ring": {**SNAPSHOT["ring"], "members": [{"id": "ab", "address": "h:1"}]}}, "without a status"),
    ],
)
def test_snapshot_problem_names_what_is_wrong(document: object, problem: str) -> None:
    """Documents that are not ring views are recognised and the reason names the field."""
    found = snapshot_problem(document)
    assert found is not None and problem in found


# ------------------------------------------------------------------ finding nodes


def write_ready(directory: Path, **addresses: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ready.json").write_text(json.dumps({k.replace("__", "."): v for k, v in addresses.items()}))


def test_local_cluster_nodes_in_node_order_with_the_nm_web_address(tmp_path: Path) -> None:
    """Every node dir with a ready.json counts, node2 before node10; the NM web address beats the RM's."""
    (tmp_path / "cluster.json").write_text("[]")
    write_ready(
        tmp_path / "node1",
        resourcemanager__webapp_address="127.0.0.1:8088",
        nodemanager__webapp_address="127.0.0.1:8042",
        nodemanager__address="127.0.0.1:45454",
    )
    write_ready(tmp_path / "node10", nodemanager__webapp_address="127.0.0.10:8042")
    write_ready(tmp_path / "node2", nodemanager__webapp_address="127.0.0.2:8042")
    (tmp_path / "node3" / "logs").mkdir(parents=True)  # a stopped node: no ready.json
    (tmp_path / "hadoop-conf").mkdir()
    assert ring_addresses_in(tmp_path) == ["127.0.0.1:8042", "127.0.0.2:8042", "127.0.0.10:8042"]


def test_ring_status_address_is_preferred(tmp_path: Path) -> None:
    """A node that publishes ring.status_address is read there, not on its NM web port."""
    write_ready(tmp_path / "node1", nodemanager__webapp_address="127.0.0.1:8042", ring__status_address="127.0.0.1:9000")
    assert ring_addresses_in(tmp_path) == ["127.0.0.1:9000"]


def test_a_single_node_state_dir(tmp_path: Path) -> None:
    """A node's own state dir (ready.json at its top) gives that node; an RM-only node its RM web address."""
    write_ready(tmp_path, resourcemanager__webapp_address="127.0.0.1:8088", ring__address="127.0.0.1:7946")
    assert ring_addresses_in(tmp_path) == ["127.0.0.1:8088"]


def test_a_stopped_local_cluster_says_how_to_start_it(tmp_path: Path) -> None:
    """A work dir with cluster.json but no ready.json: not running, and the command that starts it."""
    (tmp_path / "cluster.json").write_text("[]")
    (tmp_path / "node1").mkdir()
    with pytest.raises(RingStatusError, match=r"is not running .* cortex-rm local-cluster up --workdir"):
        ring_addresses_in(tmp_path)


def test_a_directory_without_nodes(tmp_path: Path) -> None:
    """A directory holding no node at all is named, with what to give instead."""
    with pytest.raises(RingStatusError, match=f"no running node in {tmp_path}"):
        ring_addresses_in(tmp_path)


def test_a_missing_directory(tmp_path: Path) -> None:
    """A work dir that does not exist is reported as such."""
    with pytest.raises(RingStatusError, match="is not a directory"):
        ring_addresses_in(tmp_path / "nope")


def test_a_ready_file_without_a_web_address_is_named(tmp_path: Path) -> None:
    """ready.json listing only the ring's RPC address: the error names the file and the names looked for."""
    write_ready(tmp_path / "node1", ring__address="127.0.0.1:7946")
    with pytest.raises(RingStatusError, match=r"node1/ready.json names no web address \(ring.status_address"):
        ring_addresses_in(tmp_path)


def test_a_half_written_ready_file_is_named(tmp_path: Path) -> None:
    """ready.json that is not JSON (the node is writing it) is reported with the file's path."""
    (tmp_path / "node1").mkdir()
    (tmp_path / "node1" / "ready.json").write_text('{"nodemanager.webapp')
    with pytest.raises(RingStatusError, match=r"node1/ready.json is not JSON"):
        ring_addresses_in(tmp_path)


# ------------------------------------------------------------------ fetching


Answer = tuple[int, str, bytes]


def rendered(resource: RingResource) -> Answer:
    """What ``resource`` answers a GET with: status, content type, body."""
    request = DummyRequest([])
    request.path = b"/ws/v1/ring"  # type: ignore[attr-defined]  # a real Request has one
    request.render(resource)
    content_type = (request.responseHeaders.getRawHeaders(b"content-type") or [b""])[0].decode()
    assert request.responseCode is not None
    return request.responseCode, content_type, b"".join(request.written)


class FakeNode:
    """An HTTP server on 127.0.0.1 (port 0) in a thread, answering /ws/v1/ring with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.paths: list[str] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                node.paths.append(self.path)
                status, content_type, body = node.answer
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], FakeNode]]:
    """Start fake nodes; all are stopped after the test."""
    nodes: list[FakeNode] = []

    def start(answer: Answer) -> FakeNode:
        nodes.append(FakeNode(answer))
        return nodes[-1]

    yield start
    for node in nodes:
        node.close()


@pytest.fixture
def refusing() -> Iterator[str]:
    """An address whose port is bound but not listening: connecting is refused (and nobody else can take it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


def test_fetch_ring_reads_what_the_ring_resource_serves(serve: Callable[[Answer], FakeNode]) -> None:
    """fetch_ring GETs /ws/v1/ring and returns the document RingResource rendered, unchanged."""
    clock = Clock()
    clock.advance(5)
    node = serve(rendered(RingResource(lambda: VIEW, clock)))
    assert fetch_ring(node.address, 5) == ring_view_to_json(VIEW, now_ms=5000)
    assert node.paths == ["/ws/v1/ring"]


def test_fetch_ring_of_a_node_whose_ring_has_not_started(serve: Callable[[Answer], FakeNode]) -> None:
    """The 503 answer becomes 'has not started its ring yet' with the node's own message."""
    node = serve(rendered(RingResource(lambda: None, Clock())))
    expected = f"node at {node.address} has not started its ring yet: the ring is not started"
    with pytest.raises(RingStatusError, match=expected):
        fetch_ring(node.address, 5)


def test_fetch_ring_of_a_server_without_the_ring(serve: Callable[[Answer], FakeNode]) -> None:
    """A 404 names the address and says which address to use."""
    node = serve((404, "text/html", b"<html>no</html>"))
    with pytest.raises(RingStatusError, match=f"{node.address} serves no ring view at /ws/v1/ring .*ready.json"):
        fetch_ring(node.address, 5)


def test_fetch_ring_of_another_http_error(serve: Callable[[Answer], FakeNode]) -> None:
    """Any other status is reported with the RemoteException message when there is one."""
    body = json.dumps({"RemoteException": {"exception": "YarnRuntimeException", "message": "boom"}}).encode()
    node = serve((500, "application/json", body))
    with pytest.raises(RingStatusError, match="answered /ws/v1/ring with HTTP 500: boom"):
        fetch_ring(node.address, 5)


@pytest.mark.parametrize(
    ("body", "said"),
    [(b"<html>", "did not answer JSON"), (b'{"nodeInfo": {}}', 'did not answer a ring view \\(no "ring" object\\)')],
)
def test_fetch_ring_of_something_else(serve: Callable[[Answer], FakeNode], body: bytes, said: str) -> None:
    """A 200 that is not a ring view is refused, naming the URL."""
    node = serve((200, "application/json", body))
    with pytest.raises(RingStatusError, match=f"http://{node.address}/ws/v1/ring {said}"):
        fetch_ring(node.address, 5)


def test_fetch_ring_connection_refused_says_is_the_node_running(refusing: str) -> None:
    """Nothing listening: the message names the address, asks whether the node runs and how to start it."""
    with pytest.raises(RingStatusError) as caught:
        fetch_ring(refusing, 5)
    message = str(caught.value)
    assert f"cannot reach the node at {refusing}: connection refused; is the node running?" in message
    assert "cortex-rm node --config FILE" in message


def test_fetch_ring_of_a_node_that_does_not_answer() -> None:
    """A node that accepts but never answers: the timeout is reported, with what may cause it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # the kernel completes the handshake; nobody ever reads
        address = f"127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(RingStatusError, match=f"node at {address} did not answer within 0.2 s"):
            fetch_ring(address, 0.2)


def test_fetch_ring_of_a_malformed_address() -> None:
    """An address that is not host:port is refused before any connection."""
    with pytest.raises(RingStatusError, match="'localhost' is not host:port"):
        fetch_ring("localhost", 5)


# ------------------------------------------------------------------ the subcommand


def run(workdir: Path | None, address: str | None, all_nodes: bool) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = ring_command(workdir, address, all_nodes, out, err=err, timeout=5)
    return code, out.getvalue(), err.getvalue()


def snapshot_answer(snapshot: dict[str, Any]) -> Answer:
    return 200, "application/json", json.dumps(snapshot).encode()


def test_ring_command_prints_the_first_node_of_a_workdir(tmp_path: Path, serve: Callable[[Answer], FakeNode]) -> None:
    """Without --all: the first node's view, exactly format_ring's text; exit 0, nothing on stderr."""
    first, second = serve(snapshot_answer(SNAPSHOT)), serve((500, "text/plain", b""))
    write_ready(tmp_path / "node1", nodemanager__webapp_address=first.address)
    write_ready(tmp_path / "node2", nodemanager__webapp_address=second.address)
    assert run(tmp_path, None, False) == (0, GOLDEN, "")
    assert second.paths == []


def test_ring_command_all_prints_every_node(tmp_path: Path, serve: Callable[[Answer], FakeNode]) -> None:
    """--all: each node's view under a '== address ==' line, blank lines between."""
    first = serve(snapshot_answer(SNAPSHOT))
    second = serve(rendered(RingResource(lambda: VIEW, Clock())))
    write_ready(tmp_path / "node1", nodemanager__webapp_address=first.address)
    write_ready(tmp_path / "node2", nodemanager__webapp_address=second.address)
    code, out, err = run(tmp_path, None, True)
    second_text = format_ring(ring_view_to_json(VIEW, now_ms=0))
    expected = f"== {first.address} ==\n{GOLDEN}\n== {second.address} ==\n{second_text}"
    assert (code, out, err) == (0, expected, "")


def test_ring_command_all_reports_a_dead_node_and_prints_the_others(
    tmp_path: Path, serve: Callable[[Answer], FakeNode], refusing: str
) -> None:
    """--all with one node down: the others are printed, the down one is on stderr, exit 2."""
    alive = serve(snapshot_answer(SNAPSHOT))
    write_ready(tmp_path / "node1", nodemanager__webapp_address=refusing)  # crashed: its ready.json stayed
    write_ready(tmp_path / "node2", nodemanager__webapp_address=alive.address)
    code, out, err = run(tmp_path, None, True)
    assert code == 2
    assert out == f"== {alive.address} ==\n{GOLDEN}"
    assert err.startswith(f"cortex-rm: cannot reach the node at {refusing}: connection refused")


def test_ring_command_at_an_address(serve: Callable[[Answer], FakeNode]) -> None:
    """--address reads that node, with no work dir."""
    node = serve(snapshot_answer(SNAPSHOT))
    assert run(None, node.address, False) == (0, GOLDEN, "")


def test_ring_command_errors_go_to_stderr_with_exit_2(tmp_path: Path) -> None:
    """No node named, or none found: exit 2, the reason on stderr, nothing on stdout."""
    code, out, err = run(None, None, False)
    assert (code, out) == (2, "")
    assert "--workdir DIR" in err and "--address HOST:PORT" in err
    code, out, err = run(tmp_path, None, True)
    assert (code, out) == (2, "")
    assert err.startswith(f"cortex-rm: no running node in {tmp_path}")
