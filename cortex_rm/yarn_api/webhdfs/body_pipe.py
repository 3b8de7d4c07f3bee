"""A request body on its way from the reactor to the DataNode worker that stores it, with bounded memory.

The node's web site hands an upload's body over as it arrives (``http_streams``): the
reactor calls ``data`` with each piece, a worker thread ``read``s it in the pieces the
block writer wants.  Between them at most ``high_water`` bytes wait: when that much is
buffered the pipe pauses the connection (the kernel's socket buffer fills, TCP makes the
client wait), and it resumes it once the worker has taken the buffer down to
``low_water``.  So one upload holds at most ``high_water`` plus one network read (up to
1 MiB: ``http_streams.STREAM_READ_BYTES``) plus the worker's piece, however fast the
client sends and however slow the disk or the replicas of the write pipeline are.

If the body will not be complete (the client went away, the site refused it) the worker's
next ``read`` raises ``ConnectionError``; a worker that gives up first calls ``close`` and
the rest of the body is dropped as it arrives.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from twisted.python.failure import Failure

from cortex_rm.yarn_api.http_streams import BodyControl

MAX_UPLOAD_BYTES: Final = 64 << 30  # one CREATE, APPEND or block replica: 64 GiB at most
HIGH_WATER: Final = 4 << 20
LOW_WATER: Final = 2 << 20


class BodyPipe:
    """One body between the reactor (``data``, ``end``, ``lost``) and a worker (``read``, ``close``)."""

    def __init__(
        self,
        control: BodyControl,
        call_from_thread: Callable[[Callable[[], None]], object],
        *,
        max_bytes: int = MAX_UPLOAD_BYTES,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
    ) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError(f"need 0 <= low_water < high_water, not {low_water}, {high_water}")
        self.max_bytes = max_bytes
        self.high_water = high_water
        self.low_water = low_water
        self._control = control
        self._call_from_thread = call_from_thread
        self._ready = threading.Condition()
        self._pieces: deque[bytes] = deque()
        self._buffered = 0  # bytes in _pieces
        self._ended = False  # the whole body has arrived
        self._broken: str | None = None  # why the body will not be complete (or the worker closed the pipe)
        self._paused = False  # the connection is paused by this pipe
        self._resume_asked = False  # a resume is on its way to the reactor
        self._wanted = 0  # the bytes the waiting worker needs (0: it does not wait)
        self.peak_buffered = 0  # the most bytes ever waiting here (tests, benchmarks)

    # -- the reactor's side (BodyStream)

    @property
    def ended(self) -> bool:
        return self._ended

    def data(self, piece: bytes) -> None:
        with self._ready:
            if self._broken is not None:
                return  # the worker gave up: drop the rest
            self._pieces.append(piece)
            self._buffered += len(piece)
            self.peak_buffered = max(self.peak_buffered, self._buffered)
            if self._wanted and self._buffered >= self._wanted:
                self._ready.notify()  # (not for every piece: the worker waits for a whole one)
            pause = self._buffered >= self.high_water and not self._paused
            if pause:
                self._paused = True
        if pause:
            self._control.pause()

    def end(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify()

    def lost(self, reason: Failure) -> None:
        self._break(f"the body was cut off: {reason.getErrorMessage()}")

    def _resume(self) -> None:
        with self._ready:
            self._resume_asked = False
            resume = self._paused and self._buffered <= self.low_water and self._broken is None
            if resume:
                self._paused = False
        if resume:
            self._control.resume()

    # -- the worker's side

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes of the body (fewer only at its end, ``b""`` after it); waits for
        them.  ``ConnectionError`` if the body will not be complete."""
        if size <= 0:
            return b""
        with self._ready:
            while self._buffered < size and not self._ended and self._broken is None:
                self._wanted = size
                self._ready.wait()
            self._wanted = 0
            if self._broken is not None:
                raise ConnectionError(self._broken)
            taken = self._take(size)
            resume = self._paused and self._buffered <= self.low_water and not self._resume_asked
            if resume:
                self._resume_asked = True
        if resume:
            self._call_from_thread(self._resume)
        return taken

    def _take(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted and self._pieces:
            piece = self._pieces.popleft()
            if len(piece) > wanted:
                self._pieces.appendleft(piece[wanted:])
                piece = piece[:wanted]
            parts.append(piece)
            wanted -= len(piece)
        taken = parts[0] if len(parts) == 1 else b"".join(parts)
        self._buffered -= len(taken)
        return taken

    def close(self, why: str = "the upload stopped") -> None:
        """The worker reads no more: what waits is dropped, and so is what still arrives."""
        self._break(why)

    def _break(self, why: str) -> None:
        with self._ready:
            if self._broken is None:
                self._broken = why
            self._pieces.clear()
            self._buffered = 0
            self._ready.notify_all()
