"""A twisted.web ``Site`` that stays bounded under hostile load: every web port of the daemon uses it.

twisted.web on its own keeps a connection that trickles its headers open for hours, waits
forever for a body its ``Content-Length`` promised, drops a too-long header line without
a word and answers unknown methods with HTML.  :class:`LimitedSite` (with its channel,
:class:`LimitedChannel`) puts a bound on each, from one frozen :class:`HttpLimits`:

* size: the request line (414), the header lines and their number (431), a declared
  ``Content-Length`` (413 before any of the body) and a chunked body as it arrives (413);
  a streamed body (``http_streams``) has its stream's bound, and no pace clock while paused;
* time, on the site's clock: the request line and headers must all arrive within
  ``header_timeout_s`` of the connection (or of the first byte of a later request on it)
  (408); a body must keep a pace of ``min_body_bytes_per_s`` measured over each
  ``body_window_s`` -- so a body of N bytes has about ``N / min_body_bytes_per_s`` seconds
  (408 otherwise); a kept-alive connection with no request for ``idle_timeout_s`` is closed;
  while the site works on a request no clock runs (a DataNode may stream for minutes);
* connections: ``max_connections`` open, ``max_connections_per_address`` per host; more: 503.

Every refusal is a JSON ``RemoteException`` (``http_refusals``), then a half-close: the
client reads the answer; what it sends for ``linger_s`` more is dropped.  Refusals are
logged as a summary per interval (``http_refusals.RefusalLog``), and each answered request
as one access line with its method and path sanitised (never the client's raw bytes).
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.http_phases import TRANSITIONS, Event, Phase, body_window_need, next_phase
from cortex_rm.yarn_api.http_refusals import (
    JsonErrorPages,
    Refusal,
    RefusalLog,
    refusal_error,
    refusal_response,
)
from cortex_rm.yarn_api.http_streams import BodyStream, LimitedRequest, open_stream
from cortex_rm.yarn_api.log_text import loggable_uri, sanitise
from cortex_rm.yarn_api.rest_errors import RestError

log = Logger()


@dataclass(frozen=True)
class HttpLimits:
    """The bounds of one web site (see the module docstring for what each refusal answers)."""

    max_request_line_bytes: int = 8 << 10
    """The request line (method, target, version) at most: longer is 414."""
    max_header_bytes: int = 16 << 10
    """All header lines of one request together (CRLFs counted): more is 431."""
    max_headers: int = 100
    """Header lines in one request: more is 431."""
    header_timeout_s: float = 10.0
    """From a connection's start (or a later request's first byte) to the end of its headers: else 408."""
    idle_timeout_s: float = 60.0
    """A kept-alive connection waiting for its next request is closed after this long."""
    max_body_bytes: int = 1 << 20
    """A body larger (declared, or as a chunked body arrives) is 413."""
    min_body_bytes_per_s: int = 16 << 10
    """The slowest pace a body may arrive at, measured over each ``body_window_s``: else 408."""
    body_window_s: float = 10.0
    """The window the body's pace is measured over."""
    max_connections: int = 1024
    """Open connections of the site at most: more are answered 503 and closed."""
    max_connections_per_address: int = 128
    """Open connections from one host at most: more are answered 503 and closed."""
    linger_s: float = 2.0
    """After a refusal, how long the client's further bytes are read and dropped before the connection is cut."""
    refusal_log_interval_s: float = 10.0
    """Refusals are logged as one summary line per interval."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"HttpLimits.{name} must be positive, not {value}")
        if self.max_connections_per_address > self.max_connections:
            raise ValueError("HttpLimits.max_connections_per_address cannot exceed max_connections")


API_LIMITS: Final = HttpLimits()
"""For the JSON APIs: the RM's REST API and WebHDFS NameNode, the ring's status port."""

DATANODE_LIMITS: Final = HttpLimits()
"""For a node's web port.  The DataNode takes whole files (WebHDFS CREATE and APPEND, as the
client sends them after the NameNode's redirect) and block replicas from other nodes as streams
(``http_streams``), with their own bound; any other body on the port is spooled and bounded here."""


class LimitedChannel(HTTPChannel):
    """twisted.web's HTTP/1.1 channel with the bounds of its site's ``HttpLimits``."""

    site: LimitedSite  # set by Site.buildProtocol
    peer_host = "unknown"  # set by LimitedSite.buildProtocol

    def __init__(self) -> None:
        super().__init__()
        self.phase = Phase.HEAD
        self._timer: IDelayedCall | None = None
        self._admitted = False
        self._request_line_next = True
        self._head_bytes = 0
        self._header_count = 0
        self._declared: int | None = None
        self._body_limit = 0
        self._body_bytes = 0
        self._window_bytes = 0
        self._window_need = 0

    @property
    def limits(self) -> HttpLimits:
        return self.site.limits

    @property
    def refused(self) -> bool:
        return self.phase is Phase.REFUSED

    # -- connection

    def connectionMade(self) -> None:
        self.timeOut = None  # twisted's idle timer is replaced by the phases' clocks
        super().connectionMade()
        limits = self.limits
        # Ours are checked first; twisted.web's own checks stay as a backstop.
        self.MAX_LENGTH = max(limits.max_request_line_bytes, limits.max_header_bytes) + 1
        self.totalHeadersSize = limits.max_request_line_bytes + limits.max_header_bytes + 1
        self.maxHeaders = limits.max_headers + 1
        refusal = self.site.admit(self.peer_host)
        if refusal is not None:
            self._refuse(refusal, "too many connections; try again later", linger=False)
            return
        self._admitted = True
        self._arm(self.limits.header_timeout_s, self._head_over)  # (a new channel is in HEAD)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self._admitted:
            self._admitted = False
            self.site.release(self.peer_host)
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if self.phase is Phase.REFUSED:
            return
        self._next_request()
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self.phase is not Phase.REFUSED:  # (else: a body that came with a head refused in the same read)
            super().rawDataReceived(data)

    def _next_request(self) -> None:
        """Bytes arrive: on a kept-alive connection they begin the next request, and its head clock."""
        if self.phase is Phase.IDLE:
            self._move(Event.NEXT_REQUEST)
            self._arm(self.limits.header_timeout_s, self._head_over)

    # -- the request's head

    def lineReceived(self, line: bytes) -> None:
        if self.phase is Phase.REFUSED:
            return
        self._next_request()  # (a pipelined request is parsed from what arrived with the one before)
        limits = self.limits
        if self._request_line_next:
            if line:  # (an empty line before a request is tolerated once, as twisted.web does)
                if len(line) > limits.max_request_line_bytes:
                    self._refuse(Refusal.URI_TOO_LONG, f"the request line is longer than {limits.max_request_line_bytes} bytes")
                    return
                self._request_line_next = False
                self._head_bytes = 0
                self._header_count = 0
        else:
            self._head_bytes += len(line) + 2
            if self._head_bytes > limits.max_header_bytes:
                self._refuse(Refusal.HEADERS_TOO_LARGE, f"the request's headers are larger than {limits.max_header_bytes} bytes")
                return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self.phase is Phase.REFUSED:
            return
        self._next_request()
        if self._request_line_next:
            self._refuse(Refusal.URI_TOO_LONG, f"the request line is longer than {self.limits.max_request_line_bytes} bytes")
        else:
            self._refuse(Refusal.HEADERS_TOO_LARGE, f"a header line is longer than {self.limits.max_header_bytes} bytes")

    def headerReceived(self, line: bytes) -> bool:
        if self.phase is Phase.REFUSED:
            return False
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(Refusal.HEADERS_TOO_LARGE, f"the request has more than {self.limits.max_headers} headers")
            return False
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and len(value.strip()) > 18:  # int() of it could raise
            self._refuse(Refusal.BODY_TOO_LARGE, rest_errors.body_too_large(self.limits.max_body_bytes).message)
            return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        if self.phase is Phase.REFUSED:
            return
        stream = self._open_stream()
        if self.refused:  # the stream's resource refused the request
            return
        self._body_limit = self.limits.max_body_bytes if stream is None else stream.max_bytes
        declared = self.length
        if declared is not None and declared > self._body_limit:
            self._refuse(Refusal.BODY_TOO_LARGE, rest_errors.body_too_large(self._body_limit).message)
            return
        super().allHeadersReceived()  # (sends 100 Continue if asked: only for a body within the limit)
        if declared == 0:
            return  # twisted.web goes on to allContentReceived
        decoder = cast(Any, self._transferDecoder)
        if decoder is not None:  # count the body as it is decoded (chunked framing not counted)
            decoder.dataCallback = self._counting(decoder.dataCallback)
        self._declared = declared
        self._body_bytes = 0
        self._move(Event.BODY_FOLLOWS)
        self._start_body_window()

    def _open_stream(self) -> BodyStream | None:
        """The stream of the request whose head is complete, if its resource streams it (``http_streams``)."""
        try:
            return open_stream(self.site.resource, self.requests[-1], self._command, self._path, self)
        except RestError as e:
            self._refuse_with(Refusal.BODY_REFUSED, e)
            return None

    def pause_body(self, request: Request) -> None:
        """Stop reading ``request``'s streamed body (and its pace clock) until ``resume_body``."""
        if self.phase is Phase.BODY and self.requests[-1:] == [request]:
            self._move(Event.PAUSE)
            self._cancel_timer()
            cast(Any, self._networkProducer).pauseProducing()

    def resume_body(self, request: Request) -> None:
        if self.phase is Phase.BODY_PAUSED and self.requests[-1:] == [request]:
            self._move(Event.RESUME)
            cast(Any, self._networkProducer).resumeProducing()
            self._start_body_window()

    def refuse_body(self, request: Request, error: RestError) -> None:
        """Answer ``error`` to ``request`` while its body arrives, and end the connection."""
        if self.phase in (Phase.BODY, Phase.BODY_PAUSED) and self.requests[-1:] == [request]:
            if self.phase is Phase.BODY_PAUSED:
                cast(Any, self._networkProducer).resumeProducing()  # (the linger reads and drops what comes)
            self._refuse_with(Refusal.BODY_REFUSED, error)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self._refuse(Refusal.BAD_REQUEST, "the request is not well-formed HTTP/1.1")

    # -- the body

    def _counting(self, deliver: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def counted(data: bytes) -> None:
            if self.phase not in (Phase.BODY, Phase.BODY_PAUSED):  # (paused: the rest of a read in hand)
                return
            self._body_bytes += len(data)
            self._window_bytes += len(data)
            if self._body_bytes > self._body_limit:
                self._refuse(Refusal.BODY_TOO_LARGE, rest_errors.body_too_large(self._body_limit).message)
                return
            deliver(data)

        return counted

    def _start_body_window(self) -> None:
        self._window_bytes = 0
        self._window_need = body_window_need(self.limits, self._declared, self._body_bytes)
        self._arm(self.limits.body_window_s, self._body_window_over)

    def _body_window_over(self) -> None:
        self._timer = None
        if self._window_bytes < self._window_need:
            limits = self.limits
            self._refuse(
                Refusal.BODY_TIMEOUT,
                f"the request body arrives slower than {limits.min_body_bytes_per_s} bytes/s "
                f"(over {limits.body_window_s:g} s)",
            )
            return
        self._start_body_window()

    def allContentReceived(self) -> None:
        if self.phase is Phase.REFUSED:
            return
        self._cancel_timer()
        self._move(Event.REQUEST_COMPLETE)
        self._request_line_next = True
        super().allContentReceived()

    # -- between requests

    def requestDone(self, request: Request) -> None:
        if self.persistent and self.phase is not Phase.REFUSED:
            self._move(Event.ANSWERED)  # (a pipelined request, replayed now, starts its own head clock)
            self._arm(self.limits.idle_timeout_s, self._idle_over)
        super().requestDone(request)

    def _head_over(self) -> None:
        self._timer = None
        self._refuse(
            Refusal.HEADER_TIMEOUT, f"the request line and headers did not arrive within {self.limits.header_timeout_s:g} s"
        )

    def _idle_over(self) -> None:
        self._timer = None
        self.loseConnection()  # no request is under way: nothing to answer

    # -- refusing

    def _refuse(self, refusal: Refusal, message: str, linger: bool = True) -> None:
        """Answer ``refusal`` and end the connection (see the module docstring)."""
        self._refuse_with(refusal, refusal_error(refusal, message), linger)

    def _refuse_with(self, refusal: Refusal, error: RestError, linger: bool = True) -> None:
        if self.phase is Phase.REFUSED:
            return
        self._move(Event.REFUSE)
        self._cancel_timer()
        self.site.refusals.record(refusal, self.peer_host)
        if self.requests and isinstance(self.requests[-1], LimitedRequest):  # its stream gets no more
            self.requests[-1].abandon_body(Failure(ConnectionAbortedError(f"refused: {error.message}")))
        path = getattr(self, "_path", None)  # the request's target once its line is parsed
        response = refusal_response(error, typed=self.site.typed(path))
        transport = self.transport
        if transport is None:
            return
        transport.write(response)
        half_close = getattr(transport, "loseWriteConnection", None)
        if not linger or half_close is None:
            self.loseConnection()
            return
        cast(Any, self._networkProducer).unregisterProducer()  # (the transport, which HTTPChannel registered with)
        half_close()
        self._arm(self.limits.linger_s, cast(Any, transport).abortConnection)

    def _move(self, event: Event) -> None:
        self.phase = next_phase(self.phase, event)

    def _arm(self, seconds: float, call: Callable[[], object]) -> None:
        self._cancel_timer()
        self._timer = self.site.clock.callLater(seconds, call)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class LimitedSite(Site):
    """A ``Site`` whose connections obey ``limits`` and whose refusals and errors are JSON.

    ``name`` names the site in the log; ``untyped_prefixes`` are the paths (WebHDFS's) whose
    JSON replies carry no Content-Type; ``clock`` runs every timeout.
    """

    protocol = LimitedChannel  # type: ignore[assignment]  # a plain HTTP/1.1 channel (no HTTP/2 negotiation)
    requestFactory = LimitedRequest

    def __init__(
        self,
        root: resource.IResource,
        *,
        limits: HttpLimits,
        clock: IReactorTime,
        name: str,
        untyped_prefixes: tuple[bytes, ...] = (),
    ) -> None:
        super().__init__(root, reactor=clock, parsePOSTFormSubmission=False)
        self.timeOut = None
        self.displayTracebacks = False
        self.limits = limits
        self.clock = clock
        self.name = name
        self.untyped_prefixes = untyped_prefixes
        self.refusals = RefusalLog(name, clock, limits.refusal_log_interval_s)
        self.open_connections = 0
        self._by_address: Counter[str] = Counter()
        self._refused_requests: weakref.WeakSet[Request] = weakref.WeakSet()

    def buildProtocol(self, addr: IAddress | None) -> LimitedChannel:  # type: ignore[override]
        channel = cast(LimitedChannel, super().buildProtocol(addr))
        channel.peer_host = str(getattr(addr, "host", "unknown"))
        return channel

    def admit(self, host: str) -> Refusal | None:
        """Count a new connection from ``host``, or say why it is refused (it is then not counted)."""
        if self.open_connections >= self.limits.max_connections:
            return Refusal.TOO_MANY_CONNECTIONS
        if self._by_address[host] >= self.limits.max_connections_per_address:
            return Refusal.TOO_MANY_FROM_ADDRESS
        self.open_connections += 1
        self._by_address[host] += 1
        return None

    def release(self, host: str) -> None:
        """A connection ``admit`` counted has closed."""
        self.open_connections -= 1
        self._by_address[host] -= 1
        if self._by_address[host] <= 0:
            del self._by_address[host]

    def typed(self, path: bytes | None) -> bool:
        """Whether a JSON reply for ``path`` names its Content-Type."""
        return path is None or not path.startswith(self.untyped_prefixes)

    def refused(self, request: Request, refusal: Refusal) -> None:
        """``request`` was answered with ``refusal`` by the site's resources (counted, no access line)."""
        self.refusals.record(refusal, str(getattr(request.getClientAddress(), "host", "unknown")))
        self._refused_requests.add(request)

    def getResourceFor(self, request: Request) -> resource.IResource:
        return JsonErrorPages(super().getResourceFor(request), self.refused, lambda r: self.typed(r.path))

    def log(self, request: Request) -> None:  # type: ignore[override]  # (twisted.web.http's Request)
        """One access line per answered request, sanitised; none for refusals (they are counted)."""
        if request in self._refused_requests:
            return
        log.info(
            "{site} {client} {method} {path} -> {status} {length}",
            site=self.name,
            client=str(getattr(request.getClientAddress(), "host", "-")),
            method=sanitise(request.method, 20),
            path=loggable_uri(request.uri),
            status=request.code,
            length=request.sentLength,
        )

    def startFactory(self) -> None:
        """Nothing to open: twisted.web's access log file (and its per-second clock) is replaced by ``log``."""

    def stopFactory(self) -> None:
        self.refusals.flush()
