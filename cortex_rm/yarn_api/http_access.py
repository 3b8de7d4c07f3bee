"""The access lines of a web site, bounded: a burst per interval, then one summary line.

Each request a ``LimitedSite`` answers is worth an access line (its method and path
sanitised, never the client's raw bytes: ``log_text``), but a flood of valid requests must
not become a flood of log -- ``local-cluster`` keeps each daemon's log in one file that
nothing rotates.  :class:`AccessLog` writes the first ``burst`` lines of an interval of
``interval_s``; the requests past them are only counted, and when the interval ends one
line says how many were not logged, by status, from how many addresses and which one sent
the most.  The first request after a quiet spell starts the next interval.  So a site
writes at most ``burst + 1`` lines per interval however many requests it answers, and
memory stays bounded (at most ``MAX_TRACKED_ADDRESSES`` addresses are told apart).
(Refusals are counted apart, by ``http_refusals.RefusalLog``, and have no access line.)
A request answered with an error may also get a line that says why (``rest_errors.log_refused``):
only while its site's access lines are within the burst (``details_allowed``), so those
lines are bounded the same way; past it, the summary counts the request by its status.

Who a request comes from is decided here too, once for the RM's REST API and its status pages
(``caller_of``, ``anonymous_access_of``), so the two apply the same rule: a site without a
``UserAuthenticator`` checks no credentials and every caller is anonymous, whatever she sends;
with one, a valid RM delegation token makes its owner the caller, a token that is not valid is
refused (``InvalidToken``), and no credential is anonymous, seeing what ``anonymous_access`` allows.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from cortex_rm.yarn.delegation import (
    ANONYMOUS,
    REST_TOKEN_HEADER,
    RM_DELEGATION_KIND,
    DelegationIdentifier,
    InvalidToken,
    Principal,
)
from cortex_rm.yarn_api.user_auth import ANONYMOUS_CLUSTER_INFO, UserAuthenticator

log = Logger()

#: Distinct client addresses told apart per interval; more are counted as "at least".
MAX_TRACKED_ADDRESSES: Final = 4096


class AccessLog:
    """One site's access lines: ``burst`` per ``interval_s`` at most, the rest summed up (module docstring)."""

    def __init__(
        self, site_name: str, clock: IReactorTime, burst: int, interval_s: float, logger: Logger = log
    ) -> None:
        if burst <= 0 or interval_s <= 0:
            raise ValueError(f"burst and interval_s must be positive, not {burst}, {interval_s}")
        self.site_name = site_name
        self._clock = clock
        self._burst = burst
        self._interval_s = interval_s
        self._log = logger
        self._timer: IDelayedCall | None = None
        self._started = 0.0
        self._logged = 0  # lines written in this interval
        self._unlogged: Counter[int] = Counter()  # requests past the burst, by status
        self._by_address: Counter[str] = Counter()
        self._more_addresses = False
        self.lines = 0  # access lines written since the site started (tests, benchmarks)
        self.unlogged = 0  # requests answered without a line of their own, in all

    def answered(self, client: str, method: str, path: str, status: int, length: int) -> None:
        """One request answered: its line, or a count in the interval's summary.  ``method`` and
        ``path`` must be sanitised already; ``client`` is the peer's host as the kernel gave it."""
        if self._timer is None:
            self._started = self._clock.seconds()
            self._timer = self._clock.callLater(self._interval_s, self._interval_over)
        if self._logged < self._burst:
            self._logged += 1
            self.lines += 1
            self._log.info(
                "{site} {client} {method} {path} -> {status} {length}",
                site=self.site_name, client=client, method=method, path=path, status=status, length=length,
            )
            return
        self.unlogged += 1
        self._unlogged[status] += 1
        if client in self._by_address or len(self._by_address) < MAX_TRACKED_ADDRESSES:
            self._by_address[client] += 1
        else:
            self._more_addresses = True

    def may_detail(self) -> bool:
        """Whether this interval's access lines are still within the burst (an error's reason may be logged)."""
        return self._logged < self._burst

    def _interval_over(self) -> None:
        self._timer = None
        self._summarise()

    def flush(self) -> None:
        """End the interval now, writing its summary if requests went unlogged (the site stops)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._summarise()

    def _summarise(self) -> None:
        if self._unlogged:
            [(top, top_count)] = self._by_address.most_common(1)
            addresses = len(self._by_address)
            self._log.info(
                "{site}: {count} more requests answered in {seconds:.0f} s than the {burst} access lines logged, "
                "from {addresses} addresses (most from {top_address}: {top_count}); by status: {statuses}",
                site=self.site_name,
                count=sum(self._unlogged.values()),
                seconds=self._clock.seconds() - self._started,
                burst=self._burst,
                addresses=f"at least {addresses}" if self._more_addresses else str(addresses),
                top_address=top,
                top_count=top_count,
                statuses=", ".join(f"{status} {n}" for status, n in sorted(self._unlogged.items())),
                unlogged=dict(self._unlogged),
            )
        self._logged = 0
        self._unlogged.clear()
        self._by_address.clear()
        self._more_addresses = False


def details_allowed(request: object) -> bool:
    """Whether a line saying why ``request`` was refused may be logged: its site's access lines are
    within their burst (always, for a site without an ``AccessLog``)."""
    access = getattr(getattr(request, "site", None), "access", None)
    return not isinstance(access, AccessLog) or access.may_detail()


# -- who calls -------------------------------------------------------------------------


def anonymous_access_of(auth: UserAuthenticator | None) -> str:
    """What a caller without a credential may see: ``auth``'s ``anonymous_access``; the cluster's
    info without ``auth`` (a site that checks no credentials has no one to keep it from)."""
    return auth.anonymous_access if auth is not None else ANONYMOUS_CLUSTER_INFO


def caller_of(
    auth: UserAuthenticator | None, request: Request, basic: bool = False
) -> tuple[Principal, DelegationIdentifier | None]:
    """Who sent ``request`` and the RM delegation token she sent (module docstring): ANONYMOUS without
    ``auth`` or without a credential.  The credential is the REST header's value, or (``basic``: a
    browser, which sends no such header) the password of HTTP Basic authentication -- the user name
    is not trusted, the token names its owner.  InvalidToken for a token, or a Basic header, not valid."""
    if auth is None:
        return ANONYMOUS, None
    text = _credential(request, basic)
    if text is None:
        return ANONYMOUS, None
    return auth.url_token(text, RM_DELEGATION_KIND)


def _credential(request: Request, basic: bool) -> str | None:
    header = request.getHeader(REST_TOKEN_HEADER.encode("ascii"))
    if header is not None and header.strip():
        return header.decode("ascii", errors="replace")
    authorization = request.getHeader(b"authorization") if basic else None
    if authorization is None or not authorization[:6].lower() == b"basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidToken("the Authorization header is not Basic user:password") from None
    return decoded.partition(":")[2].strip() or None
