"""A DataNode upload that stops is cut, its slot freed and its blocks discarded, on real sockets.

The node's web port listens on 127.0.0.1 (port 0) on the real reactor: the real ``LimitedSite``,
``DataNodeWebHdfs``, block store (in a temporary directory) and worker threads; only the
NameNode's part (the ticket key, the commit) is a stand-in that accepts every commit.  The
clients are blocking sockets on worker threads, so the reactor keeps serving while they wait.
Two ways an upload stops moving:

* the client sends part of its body and then nothing while the node is ready to read: the
  pace clock cuts it (408) after a window without bytes;
* the node's own sink stalls (its only worker is busy elsewhere), so the node pauses the
  connection: no pace clock runs, but past ``paused_body_timeout_s`` the upload is 503
  RetriableException (never 408: the client was not slow).

Either way the blocks written so far are deleted and the upload's slot comes back (once a
worker has let go of the body), and the next upload is stored.  And a reader that stops
reading its answer holds a worker only ``stalled_response_timeout_s``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads
from twisted.web.resource import Resource

from cortex_rm.fs import tickets
from cortex_rm.fs.block_store import BlockStore
from cortex_rm.internal.block_codec import BlockLocation, WrittenBlockMessage
from cortex_rm.roles.threads import thread_runner
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.http_limits import HttpLimits, LimitedSite
from cortex_rm.yarn_api.webhdfs.datanode_resource import DataNodeWebHdfs
from tests.support.reactor import reactor, wait_until

pytestmark = pytest.mark.integration

KEY = MasterKey(7, b"k" * 20)
HERE = "127.0.0.1:45454"
MIB = 1 << 20
LIMITS = HttpLimits(
    min_body_bytes_per_s=64 << 10, body_window_s=1.0, paused_body_timeout_s=3.0, stalled_response_timeout_s=2.0, linger_s=0.5
)


class Node:
    """One node's web port with the DataNode's resources (see the module docstring)."""

    def __init__(self, data_dir: Path, workers: int, limits: HttpLimits = LIMITS) -> None:
        self.node_id = NodeId.parse(HERE)
        self.reactor = reactor()
        self.store = BlockStore(data_dir, self.now_ms)
        self._run, self._pool = thread_runner(self.reactor, name="test-datanode", threads=workers)
        self._pool.start()
        self.committed: list[list[WrittenBlockMessage]] = []
        self._stopped = False
        self.webhdfs = DataNodeWebHdfs(self)  # type: ignore[arg-type]  # (this stand-in is its DataNodeContext)
        root = Resource()
        root.putChild(b"webhdfs", self.webhdfs)
        self.site = LimitedSite(root, limits=limits, clock=self.reactor, name="node web", untyped_prefixes=(b"/webhdfs/",))
        self.channels: list[Any] = []  # every connection, so that stop can cut them (see stop)
        build = self.site.buildProtocol

        def built(addr: Any) -> Any:
            self.channels.append(build(addr))
            return self.channels[-1]

        self.site.buildProtocol = built  # type: ignore[method-assign]
        self.port = self.reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.http_address = f"127.0.0.1:{self.port.getHost().port}"

    def keys(self) -> dict[int, MasterKey]:
        return {KEY.key_id: KEY}

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def run(self, work: Callable[[], Any]) -> defer.Deferred[Any]:
        return self._run(work)

    def commit(self, ticket: str, written: list[WrittenBlockMessage]) -> defer.Deferred[int]:
        self.committed.append(written)
        return defer.succeed(sum(w.block.length for w in written))

    def locate(self, ticket: str, offset: int, length: int) -> defer.Deferred[tuple[int, tuple[BlockLocation, ...]]]:
        """The blocks of the last file committed, all held here (the NameNode's answer for any read)."""
        blocks, position = [], 0
        for written in self.committed[-1]:
            blocks.append(BlockLocation(written.block, position, (self.http_address,), ""))
            position += written.block.length
        return defer.succeed((position, tuple(blocks)))

    def stored(self, block: object) -> None:
        pass  # (the block report is not the point here)

    def dropped(self, block_id: str) -> None:
        pass

    def block_files(self) -> list[str]:
        """Every file of the block store: complete replicas and blocks being written."""
        return sorted(str(p.relative_to(self.store.root)) for p in self.store.root.rglob("*") if p.is_file())

    @property
    def slots_taken(self) -> int:
        return self.webhdfs.slots.taken

    @defer.inlineCallbacks
    def stop(self):  # type: ignore[no-untyped-def]
        """Cut every connection still open (a worker reading a body that will never come then ends:
        a failing test does not hang here), stop listening, then stop the workers."""
        if self._stopped:
            return
        self._stopped = True
        for channel in self.channels:
            if channel.transport is not None:
                channel.transport.abortConnection()
        yield task.deferLater(self.reactor, 0.1, lambda: None)
        yield self.port.stopListening()
        if self._pool.started:  # (a test may have stopped the workers itself)
            yield threads.deferToThread(self._pool.stop)


def _target(user: str, path: str, op: str = "CREATE") -> str:
    claims = {"path": path, "user": user, "block_size": MIB, "pipeline": [HERE], "replicas": []}
    ticket = tickets.sign(KEY, op, claims, int(time.time() * 1000) + 600_000)
    return f"/webhdfs/v1{path}?{urlencode({'op': op, 'ticket': ticket})}"


def _head(target: str, length: int) -> bytes:
    return f"PUT {target} HTTP/1.1\r\nHost: node\r\nContent-Length: {length}\r\n\r\n".encode()


def _answer(sock: socket.socket) -> bytes:
    """The response on ``sock``: its head and as much body as its Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):  # (a timeout: no answer; the test says so)
            break
        if not piece:
            break
        data += piece
    return data


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _stop_sending(port: int, target: str, sent: int) -> tuple[bytes, float]:
    """Declare 64 MiB, send ``sent`` bytes, then nothing: the answer and how long after the last byte it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(_head(target, 64 * MIB) + os.urandom(sent))
        last_byte = time.monotonic()
        answer = _answer(sock)
        return answer, time.monotonic() - last_byte


def _send_flat_out(port: int, target: str) -> tuple[bytes, float]:
    """Declare 64 MiB and send as fast as the node reads (from a second thread): the answer and when it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        start = time.monotonic()
        sock.sendall(_head(target, 64 * MIB))

        def send() -> None:
            try:
                for _ in range(64):
                    sock.sendall(os.urandom(MIB))
            except OSError:
                pass  # the node cut the connection after its answer and linger

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = _answer(sock)
        elapsed = time.monotonic() - start
    sender.join(30)
    return answer, elapsed


def _upload(port: int, target: str, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(_head(target, len(data)) + data)
        return _answer(sock)


@pytest_twisted.inlineCallbacks
def test_an_upload_whose_client_stops_sending_is_cut_its_blocks_deleted_and_its_slot_freed(  # type: ignore[no-untyped-def]
    tmp_path: Path,
):
    """3.5 MiB of a declared 64 MiB, then silence: 408 within two pace windows of the last byte; the
    three complete blocks and the partial fourth are gone, the slot is back, and the next upload
    (another client's) is stored whole."""
    node = Node(tmp_path, workers=4)
    port = node.port.getHost().port
    try:
        answer, after = yield threads.deferToThread(_stop_sending, port, _target("alice", "/a/stopped"), 3 * MIB + MIB // 2)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"arrives slower than 65536 bytes/s" in answer
        assert LIMITS.body_window_s * 0.9 <= after < 2 * LIMITS.body_window_s + 5
        yield wait_until(lambda: node.slots_taken == 0, "the cut upload's slot is back", 10)
        assert node.block_files() == [] and node.committed == []
        assert node.site.refusals.total == 1

        data = os.urandom(2 * MIB + 12345)
        answer = yield threads.deferToThread(_upload, port, _target("bob", "/b/whole"), data)
        assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
        (written,) = node.committed
        assert [w.block.length for w in written] == [MIB, MIB, 12345]
        assert node.slots_taken == 0
    finally:
        yield node.stop()


@pytest_twisted.inlineCallbacks
def test_an_upload_paused_by_a_stalled_sink_is_503_retriable_after_the_paused_bound_not_408(  # type: ignore[no-untyped-def]
    tmp_path: Path,
):
    """The node's only worker is busy, so the upload's body fills its pipe and the node stops reading:
    the client is not slow, so no 408 comes at the pace window; the paused bound answers 503
    RetriableException.  The slot is held while the upload's work waits for the worker, and given
    back as soon as the worker gets to it (the body is gone: it ends at once, writing nothing);
    then an upload is stored again."""
    node = Node(tmp_path, workers=1)
    port = node.port.getHost().port
    gate = threading.Event()
    busy = node.run(lambda: gate.wait(60))
    try:
        answer, elapsed = yield threads.deferToThread(_send_flat_out, port, _target("alice", "/a/stalled"))
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:300]
        assert b"org.apache.hadoop.ipc.RetriableException" in answer and b"for 3 s" in answer
        assert LIMITS.paused_body_timeout_s * 0.95 <= elapsed < LIMITS.paused_body_timeout_s + 10
        assert node.site.refusals.total == 1 and node.slots_taken == 1
        gate.set()
        yield busy
        yield wait_until(lambda: node.slots_taken == 0, "the stalled upload's slot is back", 10)
        assert node.block_files() == [] and node.committed == []

        answer = yield threads.deferToThread(_upload, port, _target("alice", "/a/after"), b"x" * 1000)
        assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
        assert [w.block.length for w in node.committed[0]] == [1000]
    finally:
        gate.set()
        yield node.stop()


def _read_nothing(port: int, target: str, release: threading.Event) -> tuple[bytes, int]:
    """GET ``target`` with a small receive buffer, read the first piece of the answer, then nothing
    until ``release``; then read to the end: that first piece and the bytes received in all."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
        first = sock.recv(4096)
        release.wait(30)
        received = len(first)
        try:
            while piece := sock.recv(MIB):
                received += len(piece)
        except (ConnectionResetError, TimeoutError):
            pass
        return first, received


@pytest_twisted.inlineCallbacks
def test_a_reader_that_stops_reading_is_cut_and_frees_the_worker_for_an_upload(  # type: ignore[no-untyped-def]
    tmp_path: Path,
):
    """A client OPENs a 16 MiB file and reads nothing of it: the node's only worker waits for the
    connection to drain, but only for stalled_response_timeout_s; then the connection is cut, the
    worker is free, and an upload (which needs it) is stored, not paused into a 503."""
    node = Node(tmp_path, workers=1)
    port = node.port.getHost().port
    release = threading.Event()
    try:
        answer = yield threads.deferToThread(_upload, port, _target("alice", "/a/big"), os.urandom(16 * MIB))
        assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
        start = time.monotonic()
        reader = threads.deferToThread(_read_nothing, port, _target("bob", "/a/big", "OPEN"), release)
        yield wait_until(lambda: node.site.refusals.total >= 1, "the reader that reads nothing is cut", 20)
        assert time.monotonic() - start >= LIMITS.stalled_response_timeout_s * 0.95
        assert node.site.refusals.counts() == {"response-stalled": 1}

        answer = yield threads.deferToThread(_upload, port, _target("carol", "/c/after"), os.urandom(2 * MIB))
        assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
        release.set()
        first, received = yield reader
        assert first.startswith(b"HTTP/1.1 200 ") and received < 16 * MIB
    finally:
        release.set()
        yield node.stop()
