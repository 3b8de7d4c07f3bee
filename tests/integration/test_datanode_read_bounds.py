"""A DataNode read whose worker writes the body on the socket itself keeps the web port's bounds, on real sockets.

The node's web port listens on 127.0.0.1 (port 0) on the real reactor, with the real
``LimitedSite``, ``DataNodeWebHdfs``, block store and worker threads (the stand-in ``Node`` of
``test_datanode_upload_bounds``: only the NameNode's part is faked).  Each reader below reads
the head and the first 2 MiB of a 16 MiB body, so the first piece (1 MiB, through Twisted) has
certainly drained and the worker has taken over the socket (``ResponseBodies.handed_over``
says so); then it stops reading, or closes, or the DataNode stops.  Clients are blocking sockets
on worker threads, so the reactor keeps serving while they wait.  Bounds on real time are only
lower bounds (the stall bound) or generous upper ones.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import tcp, threads
from twisted.internet.ssl import KeyPair

from cortex_rm.yarn_api.http_limits import HttpLimits
from cortex_rm.yarn_api.webhdfs.response_body import POLL_MS
from tests.integration.test_datanode_upload_bounds import LIMITS, MIB, Node, _target, _upload
from tests.support.reactor import reactor, wait_until

pytestmark = pytest.mark.integration

SIZE = 16 * MIB
PART = 2 * MIB  # what a reader that stops takes first: more than the first piece and its head


def _head_and_body(sock: socket.socket, body_bytes: int) -> tuple[bytes, bytes]:
    """Read a response's head and then ``body_bytes`` of its body at most (fewer if it ends first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"the connection ended inside the head: {data[:200]!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    while len(body) < body_bytes:
        piece = sock.recv(min(MIB, body_bytes - len(body)))
        if not piece:
            break
        body += piece
    return head, body


def _length(head: bytes) -> int:
    return next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))


def _get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: node\r\n\r\n".encode()


def _read_body(port: int, target: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(_get(target))
        head = b""
        while b"\r\n\r\n" not in head:
            piece = sock.recv(65536)
            assert piece, head[:200]
            head += piece
        head, _, body = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        rest = _length(head) - len(body)
        while rest > 0:
            piece = sock.recv(min(MIB, rest))
            assert piece, f"the body ended {rest} bytes short"
            body += piece
            rest -= len(piece)
        return body


def _connect(port: int) -> socket.socket:
    """A client connection with a small receive buffer (so the node's writes fill up soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_part_then_wait(sock: socket.socket, target: str, release: threading.Event) -> tuple[bytes, int]:
    """GET ``target``, read its head and ``PART`` of the body, then nothing until ``release``; then to
    the end (the node cuts it): the head and the body bytes received in all."""
    sock.sendall(_get(target))
    head, body = _head_and_body(sock, PART)
    release.wait(60)
    received = len(body)
    try:
        while piece := sock.recv(MIB):
            received += len(piece)
    except (ConnectionResetError, TimeoutError):
        pass
    return head, received


def _stored(node: Node, path: str) -> tuple[bytes, int]:
    data = os.urandom(SIZE)
    answer = _upload(node.port.getHost().port, _target("alice", path), data)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
    return data, node.port.getHost().port


@pytest_twisted.inlineCallbacks
def test_a_reader_that_stops_mid_body_is_cut_at_the_stall_bound_while_another_is_served(  # type: ignore[no-untyped-def]
    tmp_path: Path,
):
    """The worker writing on the socket itself finds no room: after stalled_response_timeout_s (not
    before) the connection is cut and counted as the site counts a stalled response, and the
    worker is free; meanwhile another reader gets the whole file from the other worker, and after
    the cut, with that other worker held, a third read needs (and gets) the freed one."""
    node = Node(tmp_path, workers=2)
    release, gate = threading.Event(), threading.Event()
    stalled = _connect(node.port.getHost().port)
    try:
        data, port = yield threads.deferToThread(_stored, node, "/a/big")
        target = _target("bob", "/a/big", "OPEN")
        start = time.monotonic()
        reader = threads.deferToThread(_read_part_then_wait, stalled, target, release)
        served = yield threads.deferToThread(_read_body, port, target)
        assert served == data
        yield wait_until(lambda: node.site.refusals.total >= 1, "the reader that stopped is cut", 60)
        assert time.monotonic() - start >= LIMITS.stalled_response_timeout_s * 0.95
        assert node.site.refusals.counts() == {"response-stalled": 1}
        yield wait_until(lambda: len(node.webhdfs.bodies) == 0, "the stalled body's worker is free", 30)
        assert node.webhdfs.bodies.handed_over == 2  # (both bodies went on the socket from their workers)

        busy = node.run(lambda: gate.wait(60))  # one worker held: the next read needs the other one
        again = yield threads.deferToThread(_read_body, port, target)
        assert again == data
        gate.set()
        yield busy
        release.set()
        head, received = yield reader
        assert head.startswith(b"HTTP/1.1 200 ") and PART <= received < SIZE
    finally:
        release.set()
        gate.set()
        stalled.close()
        yield node.stop()


def _read_part_then_close(port: int, target: str) -> int:
    sock = _connect(port)
    try:
        sock.sendall(_get(target))
        _, body = _head_and_body(sock, PART)
        return len(body)
    finally:
        sock.close()  # (with most of the body unread: the kernel resets the connection)


@pytest_twisted.inlineCallbacks
def test_a_reader_that_closes_mid_body_frees_the_worker_without_a_stall(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The client closes after 2 MiB while the worker writes on the socket itself: the worker's next
    write fails, it is free at once (no stall is counted), and the node's only worker serves the
    next reader the whole file."""
    node = Node(tmp_path, workers=1, limits=HttpLimits(stalled_response_timeout_s=600.0))
    try:
        data, port = yield threads.deferToThread(_stored, node, "/a/big")
        target = _target("bob", "/a/big", "OPEN")
        received = yield threads.deferToThread(_read_part_then_close, port, target)
        assert received == PART
        yield wait_until(lambda: len(node.webhdfs.bodies) == 0, "the closed reader's worker is free", 30)
        assert node.site.refusals.total == 0 and node.webhdfs.bodies.handed_over == 1
        served = yield threads.deferToThread(_read_body, port, target)
        assert served == data
    finally:
        yield node.stop()


@pytest_twisted.inlineCallbacks
def test_the_datanode_stops_while_a_worker_writes_a_body_nobody_reads(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The DataNode stops as ``DataNodeRole.stop`` does, in the reactor: ``stop_all`` and then join
    the workers, while a worker waits for room on a connection whose client reads nothing (the stall
    bound far away).  The join returns within about ``POLL_MS``, and the connection is then cut.
    (A watchdog resets the client after 30 s, so a node that would wait for the client fails here.)"""
    node = Node(tmp_path, workers=1, limits=HttpLimits(stalled_response_timeout_s=600.0))
    release = threading.Event()
    stalled = _connect(node.port.getHost().port)
    try:
        data, port = yield threads.deferToThread(_stored, node, "/a/big")
        reader = threads.deferToThread(_read_part_then_wait, stalled, _target("bob", "/a/big", "OPEN"), release)
        yield wait_until(lambda: node.webhdfs.bodies.handed_over == 1, "the worker writes on the socket itself", 60)
        watchdog = threading.Timer(30, stalled.shutdown, (socket.SHUT_RDWR,))
        watchdog.start()
        start = time.monotonic()
        node.webhdfs.bodies.stop_all()
        node._pool.stop()  # (in the reactor's thread, as the role's stop)
        elapsed = time.monotonic() - start
        watchdog.cancel()
        assert elapsed < POLL_MS / 1000 + 10 and len(node.webhdfs.bodies) == 0
        release.set()
        head, received = yield reader
        assert head.startswith(b"HTTP/1.1 200 ") and PART <= received < SIZE  # cut, not completed
    finally:
        release.set()
        stalled.close()
        yield node.stop()


def _pipelined(port: int, requests: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Send ``requests`` at once on one connection; their answers' status lines and bodies, in order
    (an answer to a HEAD has none, whatever its Content-Length says)."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"".join(requests))
        pending = b""
        for request in requests:
            while b"\r\n\r\n" not in pending:
                piece = sock.recv(65536)
                assert piece, f"the connection ended inside a head: {pending[:200]!r}"
                pending += piece
            head, _, pending = pending.partition(b"\r\n\r\n")
            length = 0 if request.startswith(b"HEAD ") else _length(head)
            while len(pending) < length:
                piece = sock.recv(MIB)
                assert piece, f"the connection ended {len(pending)} bytes into a body of {length}"
                pending += piece
            answers.append((head.split(b"\r\n")[0], pending[:length]))
            pending = pending[length:]
        assert pending == b""
    return answers


@pytest_twisted.inlineCallbacks
def test_pipelined_answers_through_twisted_and_from_the_worker_do_not_mix(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Five requests at once on one connection: a whole 16 MiB body (its worker takes over the
    socket), a refusal (JSON through Twisted), 10 bytes across a piece boundary, a HEAD, and 3 MiB
    from an odd offset (its worker takes over again): each answer whole, in order."""
    node = Node(tmp_path, workers=2)
    try:
        data, port = yield threads.deferToThread(_stored, node, "/a/big")
        target = _target("bob", "/a/big", "OPEN")
        ranges = [(0, SIZE), (SIZE + 1, 1), (MIB - 3, 10), (None, None), (12_345, 3 * MIB)]
        requests = []
        for offset, length in ranges:
            if offset is None:
                requests.append(f"HEAD {target} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
            else:
                requests.append(_get(f"{target}&offset={offset}&length={length}"))
        answers = yield threads.deferToThread(_pipelined, port, requests)
        (s0, b0), (s1, b1), (s2, b2), (s3, b3), (s4, b4) = answers
        assert s0.startswith(b"HTTP/1.1 200 ") and b0 == data
        assert s1.startswith(b"HTTP/1.1 400 ") and b"IllegalArgumentException" in b1
        assert s2.startswith(b"HTTP/1.1 200 ") and b2 == data[MIB - 3 : MIB + 7]
        assert s3.startswith(b"HTTP/1.1 200 ") and b3 == b""
        assert s4.startswith(b"HTTP/1.1 200 ") and b4 == data[12_345 : 12_345 + 3 * MIB]
        assert node.webhdfs.bodies.handed_over == 2
    finally:
        yield node.stop()


def _read_over_tls(port: int, target: str) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # (a self-signed test certificate)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw, context.wrap_socket(raw) as sock:
        sock.sendall(_get(target))
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            assert piece, f"the connection ended inside the head: {data[:200]!r}"
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        while len(body) < _length(head):
            piece = sock.recv(MIB)
            assert piece
            body += piece
        return body


@pytest_twisted.inlineCallbacks
def test_over_tls_every_piece_goes_through_twisted(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The same site on a TLS port: the whole file arrives (encrypted by Twisted's TLS), and no
    worker took over a socket; on the plain port, the same read is handed over."""
    node = Node(tmp_path, workers=2)
    certificate = KeyPair.generate(size=2048).selfSignedCert(1, CN="node")
    tls_port: Callable[[], object] | None = None
    try:
        data, port = yield threads.deferToThread(_stored, node, "/a/big")
        listening = reactor().listenSSL(0, node.site, certificate.options(), interface="127.0.0.1")
        tls_port = listening.stopListening
        target = _target("bob", "/a/big", "OPEN")
        over_tls = yield threads.deferToThread(_read_over_tls, listening.getHost().port, target)
        assert over_tls == data and node.webhdfs.bodies.handed_over == 0
        plain = yield threads.deferToThread(_read_body, port, target)
        assert plain == data and node.webhdfs.bodies.handed_over == 1
    finally:
        if tls_port is not None:
            yield tls_port()
        # (Twisted's TLS wrapper cannot abort a connection it has closed: Node.stop cuts the plain ones)
        node.channels = [c for c in node.channels if isinstance(c.transport, tcp.Connection)]
        yield node.stop()
