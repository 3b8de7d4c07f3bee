"""What a hardened web site says when it refuses a connection or a request, and how it logs it.

A refusal is answered in the JSON form every Cortex web API uses for its errors (YARN's and
WebHDFS's ``RemoteException``, ``rest_errors.RestError``), never with one of twisted.web's
HTML pages, and the connection is closed after it (``Connection: close``).

Refusals are not logged one line each: a client that opens thousands of bad connections
must not be able to fill the daemon's log.  :class:`RefusalLog` counts them by reason and
writes one line per interval with the counts and the number of distinct addresses.  No
byte the client sent reaches that line; what is logged of a request elsewhere (the access
line of :class:`~cortex_rm.yarn_api.http_limits.LimitedSite`) passes through ``log_text.sanitise``.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.error import UnsupportedMethod
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.log_text import sanitise
from cortex_rm.yarn_api.rest_errors import RestError

log = Logger()

JSON_CONTENT_TYPE: Final = b"application/json; charset=utf-8"
# Methods HTTP defines: a resource that does not serve one of them answers 405, any other method is 501.
HTTP_METHODS: Final = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT"})
# At most this many distinct addresses are remembered per interval (the count then reads "at least").
MAX_TRACKED_ADDRESSES: Final = 10_000


class Refusal(enum.Enum):
    """Why a connection or request was refused: the log's name for it and the HTTP status answered."""

    BAD_REQUEST = ("bad-request", 400)
    NOT_FOUND = ("not-found", 404)
    METHOD_NOT_ALLOWED = ("method-not-allowed", 405)
    HEADER_TIMEOUT = ("header-timeout", 408)
    BODY_TIMEOUT = ("body-timeout", 408)
    BODY_TOO_LARGE = ("body-too-large", 413)
    BODY_REFUSED = ("body-refused", 403)  # a streamed body's resource refused it (its answer says why)
    URI_TOO_LONG = ("uri-too-long", 414)
    HEADERS_TOO_LARGE = ("headers-too-large", 431)
    NOT_IMPLEMENTED = ("not-implemented", 501)
    TOO_MANY_CONNECTIONS = ("too-many-connections", 503)
    TOO_MANY_FROM_ADDRESS = ("too-many-from-address", 503)
    BODY_STALLED = ("body-stalled", 503)  # a streamed body's sink took nothing more for paused_body_timeout_s
    RESPONSE_STALLED = ("response-stalled", 408)  # its client read nothing of the answer for a while: cut, not answered

    def __init__(self, label: str, status: int) -> None:
        self.label = label
        self.status = status


# The Java exception each status is reported as: Jersey's for the statuses it decides itself
# (rest_errors.WEB_APPLICATION), YARN's webapp exceptions for 400 and 404.
_EXCEPTIONS: Final = {400: rest_errors.BAD_REQUEST, 404: rest_errors.NOT_FOUND}
_REASON_PHRASES: Final = {
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
}


def refusal_error(refusal: Refusal, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> RestError:
    """The ``RestError`` a refusal is answered with."""
    return RestError(refusal.status, _EXCEPTIONS.get(refusal.status, rest_errors.WEB_APPLICATION), message, headers)


def reason_phrase(status: int) -> bytes:
    """The reason phrase of the status line for ``status`` (the few statuses refusals use)."""
    return _REASON_PHRASES.get(status, b"Error")


def error_body(error: RestError) -> bytes:
    """``error`` as the JSON body of a reply."""
    return json.dumps(error.body()).encode("utf-8")


def refusal_response(error: RestError, *, typed: bool) -> bytes:
    """A complete HTTP/1.1 response carrying ``error`` that tells the client the connection closes.

    ``typed``: whether it names its Content-Type (WebHDFS replies must not: Hadoop's client
    parses a ``RemoteException`` only from an untyped reply).
    """
    body = error_body(error)
    lines = [b"HTTP/1.1 %d %s" % (error.status, reason_phrase(error.status))]
    if typed:
        lines.append(b"Content-Type: " + JSON_CONTENT_TYPE)
    lines += [b"%s: %s" % header for header in error.headers]
    lines += [b"Cache-Control: no-cache", b"Connection: close", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class RefusalLog:
    """Counts refusals and logs them as one line per ``interval_s`` (none while there are none).

    The first refusal after a quiet spell starts the interval; at its end the counts per
    reason and the number of distinct addresses are logged and forgotten.  ``flush()``
    logs what is counted at once (when the site stops).
    """

    def __init__(self, site_name: str, clock: IReactorTime, interval_s: float, logger: Logger = log) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.site_name = site_name
        self._clock = clock
        self._interval_s = interval_s
        self._log = logger
        self._counts: Counter[str] = Counter()
        self._addresses: set[str] = set()
        self._more_addresses = False
        self._started = 0.0
        self._timer: IDelayedCall | None = None
        self.total = 0  # refusals since the site started (for tests and benchmarks)

    def record(self, refusal: Refusal, address: str) -> None:
        """Count one refusal of a client at ``address`` (its host, never anything it sent)."""
        self.total += 1
        self._counts[refusal.label] += 1
        if len(self._addresses) < MAX_TRACKED_ADDRESSES:
            self._addresses.add(address)
        elif address not in self._addresses:
            self._more_addresses = True
        if self._timer is None:
            self._started = self._clock.seconds()
            self._timer = self._clock.callLater(self._interval_s, self._interval_over)

    def counts(self) -> dict[str, int]:
        """The refusals counted in the current interval, by reason."""
        return dict(self._counts)

    def _interval_over(self) -> None:
        self._timer = None
        self._write()

    def flush(self) -> None:
        """Log what is counted now and end the interval."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._write()

    def _write(self) -> None:
        if not self._counts:
            return
        counts = ", ".join(f"{label} {n}" for label, n in sorted(self._counts.items()))
        addresses = f"at least {len(self._addresses)}" if self._more_addresses else str(len(self._addresses))
        self._log.info(
            "{site}: refused {total} HTTP connections or requests in {seconds:.0f} s from {addresses} "
            "addresses: {counts}",
            site=self.site_name,
            total=sum(self._counts.values()),
            seconds=self._clock.seconds() - self._started,
            addresses=addresses,
            counts=counts,
            refusals=dict(self._counts),
        )
        self._counts.clear()
        self._addresses.clear()
        self._more_addresses = False


class JsonErrorPages(resource.Resource):
    """Renders the resource a request resolved to, answering in JSON where twisted.web would
    answer with an HTML page: its "No Such Resource" (404), "Method Not Allowed" (405),
    "Huh?" (501, a method it does not know) and "Processing Failed" (500).

    ``refused(request, refusal)`` is told of each refusal (the site counts it and writes no
    access line for it); ``typed(request)`` says whether the reply names its Content-Type.
    """

    isLeaf = True

    def __init__(
        self,
        inner: resource.IResource,
        refused: Callable[[Request, Refusal], None],
        typed: Callable[[Request], bool],
    ) -> None:
        super().__init__()
        self.inner = inner
        self._refused = refused
        self._typed = typed

    def render(self, request: Request) -> bytes | int:
        method = request.method or b"GET"
        path = sanitise(request.path)
        if isinstance(self.inner, resource._UnsafeErrorPageBase):  # twisted.web's error pages (NoResource...)
            code = int(self.inner.code)
            if code == 404:
                return self._refuse(request, refusal_error(Refusal.NOT_FOUND, f"no resource at {path}"), Refusal.NOT_FOUND)
            error = RestError(code, _EXCEPTIONS.get(code, rest_errors.WEB_APPLICATION), str(self.inner.brief))
            return self._answer(request, error)
        try:
            body = self.inner.render(request)
        except UnsupportedMethod as e:
            methods: list[object] = list(e.allowedMethods)
            allowed = [m for m in methods if isinstance(m, bytes)]
            if method == b"HEAD" and b"GET" in allowed:
                raise  # twisted.web answers HEAD with the headers of a GET
            shown = sanitise(method, 40)
            if method in HTTP_METHODS:
                allow = b", ".join(sorted(allowed))
                message = f"HTTP method {shown} is not supported by {path}; allowed: {allow.decode('ascii', 'replace')}"
                error = refusal_error(Refusal.METHOD_NOT_ALLOWED, message, ((b"Allow", allow),))
                return self._refuse(request, error, Refusal.METHOD_NOT_ALLOWED)
            error = refusal_error(Refusal.NOT_IMPLEMENTED, f"HTTP method {shown} is not implemented by this server")
            return self._refuse(request, error, Refusal.NOT_IMPLEMENTED)
        except Exception as e:  # noqa: BLE001 (any bug behind a resource is answered 500, as twisted.web does)
            log.failure("{method} {path} failed", method=sanitise(method, 40), path=path)
            return self._answer(request, rest_errors.internal_error(sanitise(method, 40), path, e))
        if body is NOT_DONE_YET or isinstance(body, bytes):
            return body
        log.error("{resource} answered {method} {path} with {kind}, not bytes", resource=type(self.inner).__name__,
                  method=sanitise(method, 40), path=path, kind=type(body).__name__)
        return self._answer(request, rest_errors.internal_error(sanitise(method, 40), path, TypeError("not bytes")))

    def _refuse(self, request: Request, error: RestError, refusal: Refusal) -> bytes:
        self._refused(request, refusal)
        return self._answer(request, error)

    def _answer(self, request: Request, error: RestError) -> bytes:
        request.setResponseCode(error.status)
        request.defaultContentType = None  # else twisted.web adds text/html
        request.responseHeaders.removeHeader(b"content-type")
        if self._typed(request):
            request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-cache")
        for name, value in error.headers:
            request.setHeader(name, value)
        return error_body(error)
