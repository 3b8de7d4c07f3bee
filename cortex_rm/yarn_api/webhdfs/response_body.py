"""A response body written by a worker thread: through Twisted at first, then straight to the socket.

The DataNode streams blocks to its readers from worker threads (``block_work.py``).
Through Twisted each 1 MiB piece costs the reactor a call from the thread and eight
128 KiB sends, each a turn of the loop: on a 2-core machine that reactor time and the
GIL it holds were most of a read's cost.  So ``ThreadedBody`` sends a body in two steps:

1. Pieces are written with ``request.write`` under the connection's back-pressure (the
   worker waits while the transport has paused the body).  The first one carries the
   response's head.
2. When the transport says its buffer is empty again (``resumeProducing`` after a
   ``pauseProducing``: a piece of more than its 64 KiB ``bufferSize`` was written), and
   the connection is plain TCP, the rest of the body is the worker's: it writes each
   piece itself, on a duplicate of the socket's descriptor (so the number cannot be
   reused under it if the reactor closes the connection), waiting with ``poll`` while
   the kernel's buffer is full.  Nothing else writes on the connection meanwhile: the
   transport's buffer is empty and the channel answers no other request before this
   one finishes; the request is finished only after the worker's last write.

A piece is sent from the memory it was checked in (the worker's buffer), not with
``sendfile``: what reaches the client is exactly what was checked against the CRCs, and
on this project's machines ``sendfile`` from the page cache over loopback was no faster.
Over TLS, or with any other transport, every piece goes through Twisted (step 1 only).
"""

from __future__ import annotations

import os
import select

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IPushProducer, IReactorFromThreads, ISSLTransport
from twisted.internet.threads import blockingCallFromThread
from twisted.web.server import Request
from zope.interface import implementer

#: How long the worker waits in one ``poll`` for room in the socket's buffer before it looks
#: again whether the connection was lost meanwhile.
POLL_MS = 250


def plain_tcp_socket(request: Request) -> int | None:
    """The descriptor of ``request``'s connection if it is plain TCP (no TLS), else None."""
    transport = getattr(request.channel, "transport", None)
    if not isinstance(transport, tcp.Connection) or ISSLTransport.providedBy(transport):
        return None
    return transport.fileno()


@implementer(IPushProducer)
class ThreadedBody:
    """Lets a worker thread write a response body with the connection's back-pressure (see the module
    docstring).  ``socket_fd`` is the connection's descriptor if the worker may write on it itself
    (``plain_tcp_socket``), None to go through Twisted only.  The worker calls ``close_from_thread``
    when it is done, whatever happened."""

    def __init__(self, request: Request, reactor: IReactorFromThreads, socket_fd: int | None = None) -> None:
        self.request = request
        self.reactor = reactor
        self._socket_fd = socket_fd
        self._paused = False
        self._stopped = False
        self._drained = False  # the transport's buffer is empty and nothing was written since
        self._waiting: defer.Deferred[int | None] | None = None
        self._direct: int | None = None  # the worker's duplicate of the socket, once it writes itself
        self.sent_directly = 0
        request.registerProducer(self, True)

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        self._drained = True  # (the transport resumes its producer only once its buffer is empty)
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    def stopProducing(self) -> None:  # noqa: N802
        self._stopped = True
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(ConnectionError("the client closed the connection"))

    def _write(self, piece: bytes | memoryview) -> defer.Deferred[int | None]:
        """In the reactor: write ``piece`` as soon as the connection takes more, or, if the transport's
        buffer is empty and the worker may write on the socket, hand it a duplicate of the socket's
        descriptor (it then sends ``piece`` and the rest itself).  Fires with that descriptor or None.

        The worker thread returns as soon as a piece is written, and reads and checks the next piece
        while this one is sent (so one piece at most waits in the connection's buffer, one in the
        worker's hands)."""
        if self._stopped:
            raise ConnectionError("the client closed the connection")
        if self._paused:
            self._waiting = defer.Deferred()
            return self._waiting.addCallback(lambda _: self._write(piece))
        if self._drained and self._socket_fd is not None:
            return defer.succeed(os.dup(self._socket_fd))
        self.request.write(bytes(piece))
        self._drained = False
        return defer.succeed(None)

    def write_from_thread(self, piece: bytes | memoryview) -> None:
        """In the worker: send ``piece`` (the worker may reuse its memory as soon as this returns)."""
        if self._direct is None:
            handed: int | None = blockingCallFromThread(self.reactor, self._write, piece)  # type: ignore[arg-type]
            if handed is None:
                return
            self._direct = handed
        self._send(self._direct, memoryview(piece))

    def _send(self, fd: int, view: memoryview) -> None:
        """Write all of ``view`` on the non-blocking socket ``fd``, waiting for room with ``poll``;
        ConnectionError if the connection breaks or is lost meanwhile."""
        room = select.poll()
        room.register(fd, select.POLLOUT)
        while view:
            if self._stopped:
                raise ConnectionError("the client closed the connection")
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                room.poll(POLL_MS)
                continue
            except OSError as e:
                raise ConnectionError(f"sending to the client failed: {e.strerror or e}") from None
            view = view[sent:]
            self.sent_directly += sent

    def close_from_thread(self) -> None:
        """In the worker, when the body is sent or has failed: close its duplicate of the socket."""
        if self._direct is not None:
            fd, self._direct = self._direct, None
            os.close(fd)
