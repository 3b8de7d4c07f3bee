"""The connection of a ``LimitedSite`` (``http_limits``): twisted.web's HTTP/1.1 channel, bounded.

:class:`LimitedChannel` moves through the phases of ``http_phases`` and runs, on its site's
clock, the clock of the phase it is in; it counts the request line, the headers and the body
as they arrive and refuses (``http_refusals``) what breaks a bound of its site's
``HttpLimits``.  A streamed body (``http_streams``) may pause and resume the connection
through it, and refuse the rest of the body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.http_phases import Event, Phase, body_window_need, next_phase
from cortex_rm.yarn_api.http_refusals import Refusal, refusal_error, refusal_response
from cortex_rm.yarn_api.http_streams import BodyStream, LimitedRequest, open_stream
from cortex_rm.yarn_api.rest_errors import RestError

if TYPE_CHECKING:
    from cortex_rm.yarn_api.http_limits import HttpLimits, LimitedSite

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
        """Stop reading ``request``'s streamed body until ``resume_body``: its sink lags.  The pace
        clock stops (the client is not slow, we are); the paused clock, a longer bound, runs."""
        if self.phase is Phase.BODY and self.requests[-1:] == [request]:
            self._move(Event.PAUSE)
            cast(Any, self._networkProducer).pauseProducing()
            self._arm(self.limits.paused_body_timeout_s, self._paused_over)

    def resume_body(self, request: Request) -> None:
        """Read ``request``'s streamed body again: a new pace window starts."""
        if self.phase is Phase.BODY_PAUSED and self.requests[-1:] == [request]:
            self._move(Event.RESUME)
            if not self._waitingForTransport:  # (else the transport resumes us once it drains: resumeProducing)
                cast(Any, self._networkProducer).resumeProducing()
            self._start_body_window()

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's name)
        """The transport cannot send more for now (the client reads slowly or not at all): a response
        under way may wait ``stalled_response_timeout_s`` for it to drain, then the connection is cut
        (the worker writing the response is freed)."""
        if self.phase is Phase.HANDLING and self._timer is None:  # (the transport says it again at each write)
            self._arm(self.limits.stalled_response_timeout_s, self._response_stalled)
        super().pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        """The transport drained what we wrote: twisted.web reads again, but not a paused body."""
        if self.phase is Phase.HANDLING:
            # Before the producer resumes: it may write at once and fill the transport again, and
            # the pause that brings (nested in this call) arms the wait anew.
            self._cancel_timer()
        super().resumeProducing()
        if self.phase is Phase.BODY_PAUSED:
            cast(Any, self._networkProducer).pauseProducing()

    def refuse_body(self, request: Request, error: RestError) -> None:
        """Answer ``error`` to ``request`` while its body arrives, and end the connection."""
        if self.phase in (Phase.BODY, Phase.BODY_PAUSED) and self.requests[-1:] == [request]:
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

    def _paused_over(self) -> None:
        self._timer = None
        self._refuse_with(Refusal.BODY_STALLED, rest_errors.retriable(
            f"this node could not take more of the request body for {self.limits.paused_body_timeout_s:g} s "
            "(its storage is busy); try again later"
        ))

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
        transport = self.transport
        if transport is not None:  # (what the client leaves unread would keep it open: cut it after the linger)
            self._arm(self.limits.linger_s, cast(Any, transport).abortConnection)

    def cut_stalled_response(self) -> None:
        """The writer of a response that sends on the socket itself (a DataNode's worker:
        ``webhdfs.response_body``) found that its client read none of it for
        ``stalled_response_timeout_s``: as when the transport's buffer stays full that long,
        the stall is counted and the connection cut."""
        self._cancel_timer()
        self._response_stalled()

    def _response_stalled(self) -> None:
        self._timer = None
        self.site.refusals.record(Refusal.RESPONSE_STALLED, self.peer_host)
        transport = self.transport
        if transport is not None:  # the answer has begun: nothing else can be said
            cast(Any, transport).abortConnection()

    # -- refusing

    def _refuse(self, refusal: Refusal, message: str, linger: bool = True) -> None:
        """Answer ``refusal`` and end the connection (see the module docstring)."""
        self._refuse_with(refusal, refusal_error(refusal, message), linger)

    def _refuse_with(self, refusal: Refusal, error: RestError, linger: bool = True) -> None:
        if self.phase is Phase.REFUSED:
            return
        paused = self.phase is Phase.BODY_PAUSED
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
        if paused:
            cast(Any, self._networkProducer).resumeProducing()  # (the linger reads and drops what comes)
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
