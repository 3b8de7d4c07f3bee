"""Request bodies a resource takes as they arrive, instead of the copy twisted.web spools.

twisted.web reads a whole request body into a temporary file (memory below 100 kB) before
any resource sees the request: a node that takes a 1 GiB upload would write it twice, could
not start storing it before its end, and would spool the body of anyone, before any check
of who sends it.  A :class:`LimitedSite` (``http_limits``) instead asks, as soon as a
request's headers are complete, the leaf resource the request goes to: if it is a
:class:`StreamingResource`, its ``open_body`` sees the method, the target and the headers
and either refuses the request at once (it raises a ``RestError``: the answer goes out
before a byte of the body is read, and the connection closes) or returns the
:class:`BodyStream` that takes the body, piece by piece as it arrives (the chunked framing
removed).  The stream slows the client down through its :class:`BodyControl` (``pause``
stops reading from the connection, so TCP pushes back on the client) and may refuse the
rest of the body with an answer.  When the body is complete the request is rendered as any
other: the resource finds its stream in ``request.body_stream``.

Any other request keeps twisted.web's spooled body, within the site's ``max_body_bytes``.

While a body streams, each read from its socket may take ``STREAM_READ_BYTES`` (1 MiB)
instead of Twisted's 64 KiB: a 1 GiB upload then costs the reactor as few as 1,024 reads
through twisted.web instead of at least 16,384, which halves the reactor's CPU in a
replicated write (``bench/fs_throughput.py``).  The read size is set back when the body
is over.  (Twisted also takes ``bufferSize`` as the write buffer above which a registered
producer is paused; nothing of the answer is written while the body streams, bar a short
refusal, so that changes nothing.)
"""

from __future__ import annotations

import io
from typing import Any, Final, Protocol, cast
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.http import parse_qs
from twisted.web.server import Request

from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.log_text import loggable_uri, sanitise
from cortex_rm.yarn_api.rest_errors import RestError

log = Logger()

STREAM_READ_BYTES: Final = 1 << 20
"""How much one read of a streamed body's socket may take (module doc)."""


class BodyControl(Protocol):
    """What a :class:`BodyStream` may do to the connection its body arrives on (reactor thread only)."""

    def pause(self) -> None:
        """Stop reading the body until ``resume``: the pace clock stops, and the site's
        ``paused_body_timeout_s`` runs (a body paused longer is refused 503, to be retried)."""

    def resume(self) -> None:
        """Read the body again (a new pace window starts)."""

    def refuse(self, error: RestError) -> None:
        """Answer ``error`` now, read no more of the body and end the connection."""


class BodyStream(Protocol):
    """Takes one request's body as it arrives (reactor thread)."""

    @property
    def max_bytes(self) -> int:
        """The largest body it takes: a larger one is refused (413), declared or as it arrives."""

    def data(self, piece: bytes) -> None:
        """The next bytes of the body."""

    def end(self) -> None:
        """The body is complete; the request is rendered next."""

    def lost(self, reason: Failure) -> None:
        """The body will not be complete: the client went away or the site refused the request."""


class StreamingResource(resource.Resource):
    """A leaf resource that may take the bodies of its requests as they arrive (see the module docstring)."""

    isLeaf = True

    def open_body(self, request: Request, control: BodyControl) -> BodyStream | None:
        """The stream for ``request``'s body, None to let twisted.web spool it, or raise ``RestError``
        to refuse the request before its body is read.  ``request`` has its method, target,
        path, query (``args``) and headers; nothing of its body."""
        return None


class LimitedRequest(Request):
    """A request whose body may go to a :class:`BodyStream` instead of ``content``."""

    body_stream: BodyStream | None = None
    _body_over = False  # the stream was told the end of the body, or that it is lost
    _socket_reads: tuple[Any, int] | None = None  # the socket's transport and its read size before the stream

    def start_stream(self, stream: BodyStream) -> None:
        self.body_stream = stream
        transport = getattr(self.channel, "transport", None)
        socket: Any = getattr(transport, "transport", transport)  # (under TLS, the TCP transport it wraps)
        if isinstance(getattr(socket, "bufferSize", None), int):  # twisted.internet.tcp's read size
            self._socket_reads = (socket, socket.bufferSize)
            socket.bufferSize = STREAM_READ_BYTES

    def _body_done(self) -> None:
        self._body_over = True
        if self._socket_reads is not None:
            socket, size = self._socket_reads
            self._socket_reads = None
            socket.bufferSize = size

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted's name)
        if self.body_stream is None:
            super().gotLength(length)  # type: ignore[no-untyped-call]
        else:
            self.content = cast(Any, io.BytesIO())  # stays empty: nothing of the body is kept here

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        if self.body_stream is None:
            super().handleContentChunk(data)  # type: ignore[no-untyped-call]
        elif not self._body_over:
            self.body_stream.data(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if self.body_stream is not None and not self._body_over:
            self._body_done()
            self.body_stream.end()
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def abandon_body(self, reason: Failure) -> None:
        """The body will not be complete (refused, or the connection is lost): tell the stream, once."""
        if self.body_stream is not None and not self._body_over:
            self._body_done()
            self.body_stream.lost(reason)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        self.abandon_body(reason)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class StreamingChannel(Protocol):
    """What the channel of a streamed body does for it (``http_channel.LimitedChannel``)."""

    def pause_body(self, request: Request) -> None: ...

    def resume_body(self, request: Request) -> None: ...

    def refuse_body(self, request: Request, error: RestError) -> None: ...


class _StreamControl:
    """A stream's ``BodyControl``: its channel, for its one request (the channel ignores calls for another)."""

    def __init__(self, channel: StreamingChannel, request: Request) -> None:
        self._channel = channel
        self._request = request

    def pause(self) -> None:
        self._channel.pause_body(self._request)

    def resume(self) -> None:
        self._channel.resume_body(self._request)

    def refuse(self, error: RestError) -> None:
        self._channel.refuse_body(self._request, error)


def open_stream(
    root: resource.IResource, request: Request, command: bytes, target: bytes, channel: StreamingChannel
) -> BodyStream | None:
    """The stream that takes the body of ``request`` (its head just complete), if the resource it
    goes to is a :class:`StreamingResource` that takes it; ``RestError`` if that resource refuses
    the request (a bug in it is a 500)."""
    if not isinstance(request, LimitedRequest):
        return None
    leaf = streaming_resource(root, request, command, target)
    if leaf is None:
        return None
    try:
        stream = leaf.open_body(request, _StreamControl(channel, request))
    except RestError:
        raise
    except Exception as e:  # noqa: BLE001 (as twisted.web answers a failing render)
        log.failure("opening the body of {path} failed", path=loggable_uri(target))
        raise rest_errors.internal_error(sanitise(command, 20), loggable_uri(target), e) from None
    if stream is not None:
        request.start_stream(stream)
    return stream


def streaming_resource(root: resource.IResource, request: Request, command: bytes, target: bytes) -> StreamingResource | None:
    """The :class:`StreamingResource` a request for ``command target`` goes to, if it goes to one;
    ``request`` gets the method, target, path and query it will have when rendered."""
    request.method, request.uri = command, target
    path, _, query = target.partition(b"?")
    request.path = path
    request.args = parse_qs(query, 1) if query else {}
    request.prepath = []
    request.postpath = [unquote_to_bytes(segment) for segment in path[1:].split(b"/")]
    leaf = resource.getChildForRequest(root, request)  # (process() walks the tree again)
    return leaf if isinstance(leaf, StreamingResource) else None
