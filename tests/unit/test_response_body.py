"""ThreadedBody: a worker thread's response body under the connection's back-pressure, through
Twisted until the transport's buffer has drained, then on the socket by the worker itself, within
the site's stalled-response bound.

Driven on the test's thread (``_write`` is what ``write_from_thread`` runs in the reactor), with a
request that records what reaches the connection through Twisted, a stand-in reactor that runs
what a worker hands it only when the test says so, and a real socket pair for what the worker
sends itself.  Waits on real time are bounded generously: a broken body fails, never hangs."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Request

from cortex_rm.yarn_api.http_limits import HttpLimits, LimitedSite
from cortex_rm.yarn_api.webhdfs.response_body import POLL_MS, DirectSocket, ResponseBodies, ThreadedBody, direct_socket

MIB = 1 << 20


class RecordingRequest:
    """What ThreadedBody uses of a twisted.web ``Request``: the pieces written through Twisted."""

    def __init__(self, chunked: bool = False) -> None:
        self.written: list[bytes] = []
        self.producer: object | None = None
        self.startedWriting = 0
        self.chunked = int(chunked)

    def registerProducer(self, producer: object, streaming: bool) -> None:  # noqa: N802 (Twisted's name)
        assert streaming
        self.producer = producer

    def write(self, data: bytes) -> None:
        self.startedWriting = 1  # (the first write sends the head)
        self.written.append(data)


class HeldReactor:
    """A reactor seen from the workers: what they hand it waits until the test runs it (``run``)."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:  # noqa: N802 (Twisted's name)
        with self._lock:
            self.calls.append(lambda: f(*args))

    def run(self) -> int:
        """Run what the workers handed over so far (in the test's thread: the reactor's); how many."""
        with self._lock:
            calls, self.calls = self.calls, []
        for call in calls:
            call()
        return len(calls)


class Cuts:
    """Records the site's answer to a stalled response (``LimitedChannel.cut_stalled_response``)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _body(
    direct: DirectSocket | None = None, reactor: Any = None, bodies: ResponseBodies | None = None, chunked: bool = False
) -> tuple[ThreadedBody, RecordingRequest]:
    request = RecordingRequest(chunked)
    body = ThreadedBody(request, reactor or Clock(), direct, bodies)  # type: ignore[arg-type]
    assert request.producer is body
    return body, request


def _direct(sock: socket.socket, timeout_s: float = 120.0, cuts: Callable[[], None] = lambda: None) -> DirectSocket:
    return DirectSocket(sock.fileno(), timeout_s, cuts)


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The node's end (non-blocking, as Twisted keeps it) and the client's end of a connection."""
    node, client = socket.socketpair()
    node.setblocking(False)
    yield node, client
    node.close()
    client.close()


def _receive(client: socket.socket, count: int) -> bytes:
    received = bytearray()
    while len(received) < count:
        piece = client.recv(count - len(received))
        if not piece:
            break
        received += piece
    return bytes(received)


def _wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class Worker:
    """A worker thread writing ``pieces`` through ``body`` (then ``close_from_thread``): its error, if any."""

    def __init__(self, body: ThreadedBody, pieces: list[bytes | memoryview]) -> None:
        self.error: BaseException | None = None
        self.finished = threading.Event()

        def work() -> None:
            try:
                for piece in pieces:
                    body.write_from_thread(piece)
            except BaseException as e:  # noqa: BLE001 (the test looks at it)
                self.error = e
            finally:
                body.close_from_thread()
                self.finished.set()

        self.thread = threading.Thread(target=work, daemon=True)  # (daemon: a broken body fails the test, not the run)
        self.thread.start()

    def wait(self, seconds: float = 30.0) -> bool:
        return self.finished.wait(seconds)


def _hand_over(body: ThreadedBody) -> int:
    """Drive ``body`` as the reactor does through its first piece (head + piece through Twisted, the
    transport pauses, then drains): the descriptor the reactor hands the worker for its second piece."""
    assert body._write(b"head+one").result is None  # type: ignore[attr-defined]
    body.pauseProducing()
    handed: list[int | None] = []
    body._write(b"").addCallback(handed.append)
    body.resumeProducing()
    (fd,) = handed
    assert fd is not None
    body._fd = fd  # (what write_from_thread keeps when the reactor hands it the descriptor)
    return fd


def test_a_piece_is_written_at_once_while_the_connection_takes_more() -> None:
    body, request = _body()
    done = body._write(b"one")
    assert request.written == [b"one"] and done.called


def test_while_paused_the_next_piece_waits_and_the_worker_with_it_until_the_connection_drains() -> None:
    body, request = _body()
    body._write(b"one")
    body.pauseProducing()  # the connection's buffer is full: "one" is still being sent
    waiting = body._write(b"two")
    assert request.written == [b"one"] and not waiting.called  # one piece in the buffer, one in hand
    body.resumeProducing()
    assert request.written == [b"one", b"two"] and waiting.called


def test_a_client_that_goes_away_stops_the_worker_and_nothing_more_is_written() -> None:
    body, request = _body()
    body._write(b"one")
    body.pauseProducing()
    waiting = body._write(b"two")
    failures: list[BaseException | None] = []

    def failed(failure: Failure) -> None:
        failures.append(failure.value)

    waiting.addErrback(failed)
    body.stopProducing()
    assert len(failures) == 1 and isinstance(failures[0], ConnectionError)
    with pytest.raises(ConnectionError):
        body._write(b"three")
    assert request.written == [b"one"]


def test_once_the_buffer_drains_the_worker_gets_its_own_socket_and_sends_the_rest_in_order(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The first piece goes through Twisted (with the head); the next one waits while it is sent;
    when the transport resumes the body (its buffer is empty) the worker is handed a duplicate of
    the socket instead, and what it sends follows on the connection, byte for byte."""
    node, client = connection
    bodies = ResponseBodies()
    body, request = _body(_direct(node), bodies=bodies)
    fd = _hand_over(body)
    assert request.written == [b"head+one"] and bodies.handed_over == 1 and len(bodies) == 1
    assert fd != node.fileno() and os.path.samestat(os.fstat(fd), os.fstat(node.fileno()))
    large = os.urandom(3 * MIB)  # more than the socket pair's buffers: the worker polls for room
    reader = threading.Thread(target=lambda: received.append(_receive(client, 3 + len(large) + 4)))
    received: list[bytes] = []
    reader.start()
    body.write_from_thread(b"two")
    body.write_from_thread(memoryview(large))
    body.write_from_thread(b"last")
    reader.join(30)
    assert received == [b"two" + large + b"last"] and body.sent_directly == 3 + len(large) + 4
    body.close_from_thread()
    with pytest.raises(OSError):
        os.fstat(fd)  # the duplicate is closed; the connection's own descriptor is not
    os.fstat(node.fileno())
    assert request.written == [b"head+one"] and len(bodies) == 0


def test_without_a_socket_every_piece_goes_through_twisted_even_after_a_drain() -> None:
    """Over TLS or another transport (no socket given), a drained buffer hands nothing over."""
    body, request = _body(None)
    body._write(b"one")
    body.pauseProducing()
    body._write(b"two")
    body.resumeProducing()
    done = body._write(memoryview(b"three"))
    assert request.written == [b"one", b"two", b"three"] and done.called
    assert all(type(piece) is bytes for piece in request.written)  # (Twisted keeps them: never a view)


def test_a_drain_before_the_first_piece_hands_nothing_over_the_head_goes_through_twisted(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The transport may drain (an answer before this one, on the same connection) before the body
    writes anything: the first piece still goes through Twisted, which writes the head before it."""
    node, _ = connection
    body, request = _body(_direct(node))
    body.resumeProducing()  # the previous answer's last bytes are sent
    assert body._write(b"head+one").result is None  # type: ignore[attr-defined]
    assert request.written == [b"head+one"]


def test_a_chunked_body_stays_with_twisted(connection: tuple[socket.socket, socket.socket]) -> None:
    """A body without a length (chunked: each piece needs its framing) is never handed over."""
    node, _ = connection
    body, request = _body(_direct(node), chunked=True)
    body._write(b"one")
    body.pauseProducing()
    body._write(b"two")
    body.resumeProducing()
    assert request.written == [b"one", b"two"]


def test_a_client_gone_while_the_worker_sends_itself_stops_it_with_a_connection_error(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """A client that stops reading and goes away: the worker waiting for room in the socket's buffer
    ends with ConnectionError (the reactor's stopProducing, or the broken connection), not a hang."""
    node, client = connection
    body, _ = _body(_direct(node))
    _hand_over(body)
    worker = Worker(body, [b"x" * (16 * MIB)])  # far more than the buffers hold
    assert not worker.wait(0.5)  # blocked: nobody reads
    body.stopProducing()  # the reactor saw the connection go
    assert worker.wait() and isinstance(worker.error, ConnectionError)


def test_a_write_on_a_connection_the_client_closed_is_a_connection_error(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The client closed its end: the worker's own write fails with ConnectionError (EPIPE or a reset)."""
    node, client = connection
    client.close()
    body, _ = _body(_direct(node))
    _hand_over(body)
    worker = Worker(body, [b"y" * MIB])
    assert worker.wait() and isinstance(worker.error, ConnectionError)
    assert "sending to the client failed" in str(worker.error)


def test_a_client_that_closes_mid_body_frees_the_worker_at_once(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The client reads part of the body, then closes with data unread while the worker waits for room:
    the worker's poll wakes and its next write fails (no stall bound involved, no cut counted)."""
    node, client = connection
    cuts = Cuts()
    body, _ = _body(_direct(node, timeout_s=600, cuts=cuts))
    _hand_over(body)
    worker = Worker(body, [b"z" * (16 * MIB)])
    assert len(_receive(client, MIB)) == MIB
    assert not worker.wait(0.2)
    client.close()
    assert worker.wait() and isinstance(worker.error, ConnectionError)
    assert cuts.count == 0 and body.sent_directly >= MIB


def test_a_client_that_reads_nothing_is_cut_after_the_stall_bound_and_others_are_served_meanwhile() -> None:
    """A body whose client stops reading: its worker gives up once a piece has found no room for the
    bound (not before), asks the reactor to cut the connection (the site counts it), and ends;
    meanwhile another worker's client, who reads, gets its whole body."""
    stalled_node, stalled_client = socket.socketpair()
    served_node, served_client = socket.socketpair()
    for s in (stalled_node, served_node):
        s.setblocking(False)
    try:
        reactor, cuts, bodies = HeldReactor(), Cuts(), ResponseBodies()
        timeout_s = 1.0
        stalled, _ = _body(_direct(stalled_node, timeout_s, cuts), reactor, bodies)
        served, _ = _body(_direct(served_node, timeout_s, cuts), reactor, bodies)
        _hand_over(stalled)
        _hand_over(served)
        start = time.monotonic()
        stalled_worker = Worker(stalled, [b"s" * (16 * MIB)])
        data = os.urandom(8 * MIB)
        served_worker = Worker(served, [memoryview(data)[i : i + MIB] for i in range(0, len(data), MIB)])
        assert _receive(served_client, len(data)) == data
        assert served_worker.wait() and served_worker.error is None
        assert stalled_worker.wait() and isinstance(stalled_worker.error, ConnectionError)
        elapsed = time.monotonic() - start
        assert timeout_s * 0.95 <= elapsed < timeout_s + 30
        assert "read none of the answer for 1 s" in str(stalled_worker.error)
        assert cuts.count == 0 and reactor.run() == 1 and cuts.count == 1  # the cut runs in the reactor
        assert len(bodies) == 0
    finally:
        for s in (stalled_node, stalled_client, served_node, served_client):
            s.close()


def test_a_cut_the_reactor_runs_after_the_connection_is_gone_counts_nothing(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The worker gave up on a stalled client, but the connection was lost before the reactor got to
    the cut: nothing is counted (the connection is not a stalled one any more)."""
    node, _ = connection
    reactor, cuts = HeldReactor(), Cuts()
    body, _ = _body(_direct(node, 0.2, cuts), reactor)
    _hand_over(body)
    worker = Worker(body, [b"s" * (16 * MIB)])
    assert worker.wait() and isinstance(worker.error, ConnectionError)
    body.stopProducing()
    assert reactor.run() == 1 and cuts.count == 0


def test_stopping_ends_a_worker_waiting_for_a_reactor_that_joins_the_workers() -> None:
    """The DataNode stops while a worker waits for the reactor to take a piece (the connection is
    paused): the reactor, joining its workers, will not run the worker's call, yet ``stop_all``
    ends the worker with ConnectionError; when the reactor runs the call later, nothing is written."""
    reactor, bodies = HeldReactor(), ResponseBodies()
    body, request = _body(None, reactor, bodies)
    worker = Worker(body, [b"one", b"two"])
    assert _wait_for(lambda: reactor.run() == 1)
    body.pauseProducing()
    assert _wait_for(lambda: len(reactor.calls) == 1)  # "two" is handed to the reactor...
    bodies.stop_all()  # ... which stops the DataNode and joins its workers instead of running it
    assert worker.wait() and isinstance(worker.error, ConnectionError) and len(bodies) == 0
    assert reactor.run() == 1 and request.written == [b"one"]


def test_stopping_ends_a_worker_that_writes_on_the_socket_itself(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The DataNode stops while a worker waits for room on a connection nobody reads (well within the
    stall bound): ``stop_all`` ends it within about ``POLL_MS``, not at the bound."""
    node, _ = connection
    bodies = ResponseBodies()
    body, _ = _body(_direct(node, timeout_s=600), bodies=bodies)
    _hand_over(body)
    worker = Worker(body, [b"w" * (16 * MIB)])
    assert not worker.wait(0.3)
    bodies.stop_all()
    assert worker.wait(POLL_MS / 1000 + 30) and isinstance(worker.error, ConnectionError) and len(bodies) == 0


def test_the_worker_writes_itself_only_on_a_connection_of_a_limited_site() -> None:
    """``direct_socket``: None for a transport that is not a TCP connection (a test's; TLS's wrapper,
    tested on real sockets in tests/integration/test_datanode_read_bounds.py) or a channel that is not
    a ``LimitedSite``'s (no stall bound to keep)."""
    site = LimitedSite(object(), limits=HttpLimits(), clock=Clock(), name="test")  # type: ignore[arg-type]
    channel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    assert direct_socket(site.requestFactory(channel)) is None
    plain = object.__new__(Request)
    plain.channel = None
    assert direct_socket(plain) is None
