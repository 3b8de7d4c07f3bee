"""ThreadedBody: a worker thread's response body under the connection's back-pressure.

Driven on the test's thread (``_write`` is what ``write_from_thread`` runs in the reactor),
with a request that records what reaches the connection."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cortex_rm.yarn_api.webhdfs.datanode_resource import ThreadedBody


class RecordingRequest:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: object | None = None

    def registerProducer(self, producer: object, streaming: bool) -> None:  # noqa: N802 (Twisted's name)
        assert streaming
        self.producer = producer

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _body() -> tuple[ThreadedBody, RecordingRequest]:
    request = RecordingRequest()
    body = ThreadedBody(request, Clock())  # type: ignore[arg-type]
    assert request.producer is body
    return body, request


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
