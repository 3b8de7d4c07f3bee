"""A twisted.web ``Site`` that stays bounded under hostile load: every web port of the daemon uses it.

twisted.web on its own keeps a connection that trickles its headers open for hours, waits
forever for a body its ``Content-Length`` promised, drops a too-long header line without
a word and answers unknown methods with HTML.  :class:`LimitedSite` (with its channel,
``http_channel.LimitedChannel``) puts a bound on each, from one frozen :class:`HttpLimits`:

* size: the request line (414), the header lines and their number (431), a declared
  ``Content-Length`` (413 before any of the body) and a chunked body as it arrives (413);
  a streamed body (``http_streams``) has its stream's bound;
* time, on the site's clock: the request line and headers must all arrive within
  ``header_timeout_s`` of the connection (or of the first byte of a later request on it)
  (408); a body must keep a pace of ``min_body_bytes_per_s`` measured over each
  ``body_window_s`` -- so a body of N bytes has about ``N / min_body_bytes_per_s`` seconds
  (408 otherwise); a kept-alive connection with no request for ``idle_timeout_s`` is closed
  (cut ``linger_s`` later if the client leaves its last answer unread); while the site works
  on a request no clock runs (a DataNode may stream for minutes) unless the client stops
  reading its answer: ``stalled_response_timeout_s`` of a full send buffer cuts it;
  a streamed body the site pauses (its sink lags: our slowness, not the client's) has no pace
  clock but may stay paused for ``paused_body_timeout_s`` at most (503 ``RetriableException``);
* connections: ``max_connections`` open, ``max_connections_per_address`` per host; more: 503.

Every refusal is a JSON ``RemoteException`` (``http_refusals``), then a half-close: the
client reads the answer; what it sends for ``linger_s`` more is dropped.  Refusals are
logged as a summary per interval (``http_refusals.RefusalLog``), and each answered request
as one access line with its method and path sanitised (never the client's raw bytes), up to
``access_log_burst`` lines per ``access_log_interval_s``, then one summary (``http_access``).
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Final, cast

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.web import resource
from twisted.web.server import Request, Site

from cortex_rm.yarn_api.http_access import AccessLog
from cortex_rm.yarn_api.http_channel import LimitedChannel
from cortex_rm.yarn_api.http_refusals import JsonErrorPages, Refusal, RefusalLog
from cortex_rm.yarn_api.http_streams import LimitedRequest
from cortex_rm.yarn_api.log_text import loggable_uri, sanitise


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
    paused_body_timeout_s: float = 120.0
    """A streamed body the site stopped reading because its own sink lags (a DataNode's disk or
    workers: ``http_streams``) may stay paused this long, then it is 503 ``RetriableException``.
    The client is not slow then, we are: this bound is its own, at least ``body_window_s``."""
    stalled_response_timeout_s: float = 120.0
    """A response under way whose client reads none of it (the connection's send buffer stays
    full) this long is cut: the worker writing it is freed for others."""
    max_connections: int = 1024
    """Open connections of the site at most: more are answered 503 and closed."""
    max_connections_per_address: int = 128
    """Open connections from one host at most: more are answered 503 and closed."""
    linger_s: float = 2.0
    """After a refusal, how long the client's further bytes are read and dropped before the connection is cut."""
    refusal_log_interval_s: float = 10.0
    """Refusals are logged as one summary line per interval."""
    access_log_burst: int = 100
    """Access lines logged per ``access_log_interval_s`` at most; the requests past them are summed up
    in one line at the interval's end (``http_access``)."""
    access_log_interval_s: float = 10.0
    """The interval access lines are counted over."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"HttpLimits.{name} must be positive, not {value}")
        if self.paused_body_timeout_s < self.body_window_s:
            raise ValueError("HttpLimits.paused_body_timeout_s cannot be shorter than body_window_s")
        if self.max_connections_per_address > self.max_connections:
            raise ValueError("HttpLimits.max_connections_per_address cannot exceed max_connections")


API_LIMITS: Final = HttpLimits()
"""For the JSON APIs: the RM's REST API and WebHDFS NameNode, the ring's status port."""

DATANODE_LIMITS: Final = HttpLimits()
"""For a node's web port.  The DataNode takes whole files (WebHDFS CREATE and APPEND, as the
client sends them after the NameNode's redirect) and block replicas from other nodes as streams
(``http_streams``), with their own bound; any other body on the port is spooled and bounded here."""


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
        self.access = AccessLog(name, clock, limits.access_log_burst, limits.access_log_interval_s)
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
        """One access line per answered request, sanitised, within the access log's bound (``http_access``);
        none for refusals (they are counted)."""
        if request in self._refused_requests:
            return
        self.access.answered(
            client=str(getattr(request.getClientAddress(), "host", "-")),
            method=sanitise(request.method, 20),
            path=loggable_uri(request.uri),
            status=int(request.code),
            length=int(request.sentLength),
        )

    def startFactory(self) -> None:
        """Nothing to open: twisted.web's access log file (and its per-second clock) is replaced by ``log``."""

    def stopFactory(self) -> None:
        self.refusals.flush()
        self.access.flush()
