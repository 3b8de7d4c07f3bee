"""A response body written by a worker thread: through Twisted at first, then straight to the socket.

The DataNode streams blocks to its readers from worker threads (``block_work.py``).
Through Twisted each 1 MiB piece costs the reactor a call from the thread and eight
128 KiB sends, each a turn of the loop: on a 2-core machine that reactor time and the
GIL it holds were most of a read's cost.  So ``ThreadedBody`` sends a body in two steps:

1. Pieces are written with ``request.write`` under the connection's back-pressure (the
   worker waits while the transport has paused the body).  The first one carries the
   response's head.
2. When the transport says its buffer is empty again (``resumeProducing``: it calls it only
   once it has sent all it holds) and nothing was written since, the head is out, the body
   is not chunked and the connection is plain TCP of a ``LimitedSite`` (``direct_socket``),
   the rest of the body is the worker's: it writes each piece itself, on a duplicate of
   the socket's descriptor (so the number cannot be reused under it if the reactor closes
   the connection), waiting with ``poll`` while the kernel's buffer is full.  Nothing else
   writes on the connection meanwhile: the transport's buffer is empty, and the channel
   parses no further request (it buffers what arrives) and answers nothing before this
   one finishes; the request is finished only after the worker's last write.

The bounds of step 1 hold in step 2 (``HttpLimits.stalled_response_timeout_s``): a piece
the worker cannot hand to the kernel within that long of the first refusal (as a piece in
Twisted's buffer must drain within it) is a stalled response, and the site does what it
does when its transport stays full: the stall is counted and the connection aborted
(``LimitedChannel.cut_stalled_response``); the worker ends at once with ``ConnectionError``.
A client that closes or resets the connection fails the worker's next write; one the
reactor loses otherwise (``stopProducing``) is seen within ``POLL_MS``.  And when the
DataNode stops, ``ResponseBodies.stop_all`` ends every body under way, in either step,
before the worker threads are joined: a worker never waits for a reactor that is waiting
for it.

A piece is sent from the memory it was checked in (the worker's buffer), not with
``sendfile``: what reaches the client is exactly what was checked against the CRCs, and
on this project's machines ``sendfile`` from the page cache over loopback was no faster.
Over TLS, or with any other transport, every piece goes through Twisted (step 1 only).
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IPushProducer, IReactorFromThreads, ISSLTransport
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from cortex_rm.yarn_api.http_channel import LimitedChannel

#: How long the worker waits at most (in one ``poll`` for room in the socket's buffer, or for the
#: reactor) before it looks again whether the body was stopped meanwhile.
POLL_MS = 250

_GONE = "the client closed the connection"


@dataclass(frozen=True)
class DirectSocket:
    """A connection a worker may write a body on itself, and what bounds a stall on it."""

    fd: int
    """The connection's descriptor (the reactor's: the worker writes on a duplicate)."""
    stalled_timeout_s: float
    """How long a piece may wait for room (the site's ``HttpLimits.stalled_response_timeout_s``)."""
    cut: Callable[[], None]
    """In the reactor: what the site does with a response stalled that long (counts it, aborts the connection)."""


def direct_socket(request: Request) -> DirectSocket | None:
    """How a worker may write ``request``'s body itself: if its connection is plain TCP (no TLS) and
    its channel a ``LimitedSite``'s (whose stall bound the worker keeps); else None (through Twisted)."""
    channel = request.channel
    transport = getattr(channel, "transport", None)
    if not isinstance(channel, LimitedChannel) or not isinstance(transport, tcp.Connection):
        return None
    if ISSLTransport.providedBy(transport):
        return None
    return DirectSocket(transport.fileno(), channel.limits.stalled_response_timeout_s, channel.cut_stalled_response)


class ResponseBodies:
    """The bodies a node's workers are writing (added and removed by ``ThreadedBody``), so that a
    stopping DataNode can end them all before it joins its workers (``stop_all``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # (added in the reactor, removed by the workers)
        self._under_way: set[ThreadedBody] = set()
        self.handed_over = 0
        """Bodies whose worker took over the socket (step 2 of the module docstring), since the start."""

    def add(self, body: ThreadedBody) -> None:
        with self._lock:
            self._under_way.add(body)

    def remove(self, body: ThreadedBody) -> None:
        with self._lock:
            self._under_way.discard(body)

    def __len__(self) -> int:
        with self._lock:
            return len(self._under_way)

    def stop_all(self) -> None:
        """In the reactor, when the DataNode stops: every body under way ends, its worker with
        ``ConnectionError`` within ``POLL_MS`` (its connection is then aborted as any broken
        body's is)."""
        with self._lock:
            bodies = list(self._under_way)
        for body in bodies:
            body.stopProducing()


@implementer(IPushProducer)
class ThreadedBody:
    """Lets a worker thread write a response body with the connection's back-pressure (see the module
    docstring).  ``direct`` is how the worker may write on the connection itself (``direct_socket``),
    None to go through Twisted only; ``bodies`` counts the body as under way until the worker calls
    ``close_from_thread``, which it does when it is done, whatever happened.  ``clock`` times a stall."""

    def __init__(
        self,
        request: Request,
        reactor: IReactorFromThreads,
        direct: DirectSocket | None = None,
        bodies: ResponseBodies | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request = request
        self.reactor = reactor
        self._direct = direct
        self._bodies = bodies
        self._clock = clock
        self._paused = False
        self._stopped = False
        self._drained = False  # the transport's buffer is empty and nothing was written since
        self._waiting: defer.Deferred[int | None] | None = None
        self._fd: int | None = None  # the worker's duplicate of the socket, once it writes itself
        self.sent_directly = 0
        if bodies is not None:
            bodies.add(self)
        request.registerProducer(self, True)

    # -- the producer, in the reactor

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        self._drained = True  # (the transport resumes its producer only once its buffer is empty)
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    def stopProducing(self) -> None:  # noqa: N802
        """The connection is gone (or the DataNode stops): the worker ends with ``ConnectionError``."""
        self._stopped = True
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(ConnectionError(_GONE))

    def _write(self, piece: bytes | memoryview) -> defer.Deferred[int | None]:
        """In the reactor: write ``piece`` as soon as the connection takes more, or, if the transport's
        buffer is empty and the worker may write on the socket, hand it a duplicate of the socket's
        descriptor (it then sends ``piece`` and the rest itself).  Fires with that descriptor or None.

        The worker thread returns as soon as a piece is written, and reads and checks the next piece
        while this one is sent (so one piece at most waits in the connection's buffer, one in the
        worker's hands)."""
        if self._stopped:
            raise ConnectionError(_GONE)
        if self._paused:
            self._waiting = defer.Deferred()
            return self._waiting.addCallback(lambda _: self._write(piece))
        if self._may_hand_over():
            assert self._direct is not None
            if self._bodies is not None:
                self._bodies.handed_over += 1
            return defer.succeed(os.dup(self._direct.fd))
        self.request.write(bytes(piece))
        self._drained = False
        return defer.succeed(None)

    def _may_hand_over(self) -> bool:
        """Whether the worker may write the rest itself: the head is out (through Twisted), the body
        is not chunked (each piece would need its framing), and Twisted's buffer is empty."""
        request = self.request
        return (
            self._drained and self._direct is not None and bool(request.startedWriting) and not request.chunked
        )

    def _cut(self) -> None:
        """In the reactor: the worker gave up on a stalled client; unless the connection is gone
        already, the site counts the stall and aborts it."""
        if not self._stopped and self._direct is not None:
            self._direct.cut()

    # -- the worker's side

    def write_from_thread(self, piece: bytes | memoryview) -> None:
        """In the worker: send ``piece`` (the worker may reuse its memory as soon as this returns);
        ``ConnectionError`` if the client is gone, stalled or the body was stopped."""
        if self._fd is None:
            handed = self._in_reactor(piece)
            if handed is None:
                return
            self._fd = handed
        self._send(self._fd, memoryview(piece))

    def _in_reactor(self, piece: bytes | memoryview) -> int | None:
        """Run ``_write(piece)`` in the reactor and wait for it, as ``blockingCallFromThread`` would,
        but give up once the body is stopped: a reactor that is joining the workers never runs it
        (and when it does, later, ``_write`` finds the body stopped and touches nothing)."""
        done = threading.Event()
        outcome: list[int | None | Failure] = []

        def call() -> None:
            d = defer.maybeDeferred(self._write, piece)
            d.addBoth(outcome.append).addBoth(lambda _: done.set())

        self.reactor.callFromThread(call)
        while not done.wait(POLL_MS / 1000):
            if self._stopped:
                raise ConnectionError(_GONE)
        (result,) = outcome
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def _send(self, fd: int, view: memoryview) -> None:
        """Write all of ``view`` on the non-blocking socket ``fd``, waiting for room with ``poll``.
        ``ConnectionError`` if the connection breaks or is lost meanwhile, or if the piece finds no
        room for ``stalled_timeout_s`` from the first time it found none (the connection is then cut)."""
        assert self._direct is not None
        timeout_s = self._direct.stalled_timeout_s
        room = select.poll()
        room.register(fd, select.POLLOUT)
        deadline: float | None = None
        while view:
            if self._stopped:
                raise ConnectionError(_GONE)
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                now = self._clock()
                if deadline is None:
                    deadline = now + timeout_s
                elif now >= deadline:
                    self.reactor.callFromThread(self._cut)
                    raise ConnectionError(f"the client read none of the answer for {timeout_s:g} s") from None
                room.poll(max(1, min(POLL_MS, math.ceil((deadline - now) * 1000))))
                continue
            except OSError as e:
                raise ConnectionError(f"sending to the client failed: {e.strerror or e}") from None
            view = view[sent:]
            self.sent_directly += sent

    def close_from_thread(self) -> None:
        """In the worker, when the body is sent or has failed: close its duplicate of the socket; the
        body is no longer under way."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._bodies is not None:
            self._bodies.remove(self)
