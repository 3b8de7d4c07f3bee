"""BodyPipe: an upload's body between the reactor and the worker that stores it, in bounded memory.

The reactor's side (``data``, ``end``, ``lost``) is called on the test's thread; the worker's
``read`` too, except where a test needs it to wait (a real thread then, joined with a timeout
that only a hang reaches).  Resumes the worker asks for are queued and run by the test, as the
reactor would run them."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from twisted.python.failure import Failure

from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.webhdfs.body_pipe import BodyPipe

PIECE = 64 * 1024
HIGH, LOW = 4 * PIECE, 2 * PIECE


class Connection:
    """The pipe's BodyControl: whether the connection is paused."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.refused: list[RestError] = []

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False

    def refuse(self, error: RestError) -> None:
        self.refused.append(error)


def _pipe() -> tuple[BodyPipe, Connection, list[Callable[[], None]]]:
    connection = Connection()
    queued: list[Callable[[], None]] = []
    pipe = BodyPipe(connection, queued.append, high_water=HIGH, low_water=LOW)
    return pipe, connection, queued


def test_a_fast_client_and_a_stalled_worker_hold_at_most_the_high_water_mark() -> None:
    """The client sends while the worker reads nothing: the connection is paused at the high-water
    mark, and what the transport still hands over (at most one read) is all that is added."""
    pipe, connection, _ = _pipe()
    sent = 0
    while not connection.paused:  # the client sends as long as the connection reads
        pipe.data(b"x" * PIECE)
        sent += PIECE
    assert connection.pauses == 1 and sent == HIGH
    pipe.data(b"x" * PIECE)  # the rest of the read that was in hand when it paused
    assert pipe.peak_buffered <= HIGH + PIECE


def test_the_connection_resumes_once_the_worker_has_read_down_to_the_low_water_mark() -> None:
    pipe, connection, queued = _pipe()
    for _ in range(4):
        pipe.data(b"y" * PIECE)
    assert connection.paused
    assert pipe.read(PIECE) == b"y" * PIECE and queued == []  # 3 pieces still wait: above the low mark
    assert pipe.read(PIECE) == b"y" * PIECE and len(queued) == 1
    queued.pop()()  # the reactor runs the resume
    assert not connection.paused


def test_reads_cut_and_join_the_pieces_as_the_writer_wants_them_and_end_gives_the_rest() -> None:
    pipe, _, _ = _pipe()
    for piece in (b"abc", b"defgh", b"ij"):
        pipe.data(piece)
    assert pipe.read(4) == b"abcd"
    assert pipe.read(3) == b"efg"
    pipe.end()
    assert pipe.read(100) == b"hij"
    assert pipe.read(100) == b""


def test_a_worker_waits_for_a_whole_piece_until_the_body_brings_it() -> None:
    pipe, _, _ = _pipe()
    got: list[bytes] = []
    worker = threading.Thread(target=lambda: got.append(pipe.read(6)))
    worker.start()
    pipe.data(b"abc")
    pipe.data(b"def")
    worker.join(timeout=30)
    assert got == [b"abcdef"]


def test_a_body_cut_off_makes_the_waiting_worker_fail_and_frees_what_waited() -> None:
    pipe, _, _ = _pipe()
    pipe.data(b"z" * 10)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            pipe.read(PIECE)
        except ConnectionError as e:
            errors.append(e)

    worker = threading.Thread(target=read)
    worker.start()
    pipe.lost(Failure(ConnectionResetError("reset by peer")))
    worker.join(timeout=30)
    assert len(errors) == 1 and "cut off" in str(errors[0])
    with pytest.raises(ConnectionError):
        pipe.read(1)


def test_after_the_worker_closes_the_pipe_the_rest_of_the_body_is_dropped() -> None:
    pipe, connection, _ = _pipe()
    pipe.data(b"a" * PIECE)
    pipe.close()
    for _ in range(10):
        pipe.data(b"b" * PIECE)
    assert pipe.peak_buffered == PIECE and not connection.paused


def test_the_marks_must_leave_room_between_them() -> None:
    with pytest.raises(ValueError):
        BodyPipe(Connection(), lambda call: None, high_water=LOW, low_water=LOW)
