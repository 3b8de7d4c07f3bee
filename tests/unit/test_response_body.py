"""ThreadedBody: a worker thread's response body under the connection's back-pressure, through
Twisted until the transport's buffer has drained, then on the socket by the worker itself.

Driven on the test's thread (``_write`` is what ``write_from_thread`` runs in the reactor),
with a request that records what reaches the connection through Twisted, and a real
socket pair for what the worker sends itself."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cortex_rm.yarn_api.webhdfs.response_body import ThreadedBody


class RecordingRequest:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: object | None = None

    def registerProducer(self, producer: object, streaming: bool) -> None:  # noqa: N802 (Twisted's name)
        assert streaming
        self.producer = producer

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _body(socket_fd: int | None = None) -> tuple[ThreadedBody, RecordingRequest]:
    request = RecordingRequest()
    body = ThreadedBody(request, Clock(), socket_fd)  # type: ignore[arg-type]
    assert request.producer is body
    return body, request


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
    body, request = _body(node.fileno())
    assert body._write(b"head+one").result is None  # type: ignore[attr-defined]
    body.pauseProducing()
    waiting = body._write(b"two")
    handed: list[int | None] = []
    waiting.addCallback(handed.append)
    body.resumeProducing()
    assert request.written == [b"head+one"]
    (fd,) = handed
    assert fd is not None and fd != node.fileno() and os.path.samestat(os.fstat(fd), os.fstat(node.fileno()))
    body._direct = fd  # (what write_from_thread keeps when the reactor hands it the descriptor)
    large = os.urandom(3 * 1024 * 1024)  # more than the socket pair's buffers: the worker polls for room
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
    assert request.written == [b"head+one"]


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


def test_a_client_gone_while_the_worker_sends_itself_stops_it_with_a_connection_error(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """A client that stops reading and goes away: the worker waiting for room in the socket's buffer
    ends with ConnectionError (the reactor's stopProducing, or the broken connection), not a hang."""
    node, client = connection
    body, _ = _body(node.fileno())
    body._direct = os.dup(node.fileno())
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            body.write_from_thread(b"x" * (16 * 1024 * 1024))  # far more than the buffers hold
        except ConnectionError as e:
            outcome.append(e)

    worker = threading.Thread(target=send)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive()  # blocked: nobody reads
    body.stopProducing()  # the reactor saw the connection go
    worker.join(30)
    assert not worker.is_alive() and len(outcome) == 1
    body.close_from_thread()


def test_a_write_on_a_connection_the_client_closed_is_a_connection_error(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The client closed its end: the worker's own write fails with ConnectionError (EPIPE or a reset)."""
    node, client = connection
    client.close()
    body, _ = _body(node.fileno())
    body._direct = os.dup(node.fileno())
    try:
        with pytest.raises(ConnectionError, match="sending to the client failed"):
            body.write_from_thread(b"y" * (1024 * 1024))
    finally:
        body.close_from_thread()
