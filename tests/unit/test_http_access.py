"""Access lines of a ``LimitedSite`` (``http_access.AccessLog``): a burst per interval, then one
summary line, so a flood of valid requests cannot grow the daemon's log without bound.

A real ``LimitedSite`` over in-memory transports on a ``Clock`` (``test_http_limits``'s harness).
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, formatEvent

from cortex_rm.yarn_api.http_access import MAX_TRACKED_ADDRESSES, AccessLog, details_allowed
from tests.unit.test_http_limits import LIMITS, Site, get


def _access_lines(logged: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in logged if e.get("log_namespace") == "cortex_rm.yarn_api.http_access"]


def test_a_flood_of_valid_requests_writes_a_burst_of_access_lines_then_one_summary_per_interval(
    logged: list[LogEvent],
) -> None:
    """1,000 answered requests in one interval: the first ``access_log_burst`` get their line, the
    rest one summary line at the interval's end (count, statuses, addresses); the next interval
    starts with a fresh burst.  The log grows by the burst per interval, not by the flood."""
    s = Site(replace(LIMITS, access_log_burst=20, access_log_interval_s=10, max_connections=10,
                     max_connections_per_address=10))
    connections = [s.connect() for _ in range(3)]
    for i in range(1000):
        connections[i % 3].send(get("/echo") if i % 10 else b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert len(_access_lines(logged)) == 20 and s.site.access.unlogged == 980
    s.clock.advance(10)
    lines = _access_lines(logged)
    assert len(lines) == 21
    assert "test web: 980 more requests answered in 10 s than the 20 access lines logged" in lines[-1]
    assert "from 1 addresses (most from 192.168.1.1: 980)" in lines[-1]  # (StringTransport's peer)
    assert "by status: 200 980" in lines[-1]
    s.clock.advance(600)  # nothing answered since: no more lines
    assert len(_access_lines(logged)) == 21
    s.connect().send(get("/echo"))
    assert len(_access_lines(logged)) == 22 and "GET /echo -> 200" in _access_lines(logged)[-1]


def test_the_access_summary_tells_at_most_a_bounded_number_of_addresses_apart() -> None:
    clock = Clock()
    events: list[LogEvent] = []
    access = AccessLog("x", clock, burst=1, interval_s=1, logger=Logger(observer=events.append))  # type: ignore[arg-type]
    for i in range(MAX_TRACKED_ADDRESSES + 6):
        access.answered(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "GET", "/", 404, 0)
    access.flush()
    assert f"from at least {MAX_TRACKED_ADDRESSES} addresses" in formatEvent(events[-1])
    assert "by status: 404 4101" in formatEvent(events[-1])


def test_reasons_for_refusals_are_logged_only_within_the_sites_burst() -> None:
    """``details_allowed`` follows the site's access lines: a refusal's reason may be logged while
    they are within the burst, not past it, and again once the interval is over; a site without
    an AccessLog always allows it."""
    clock = Clock()
    access = AccessLog("rm-web", clock, burst=2, interval_s=10.0, logger=Logger())

    class Request:
        site = type("S", (), {"access": access})()

    assert details_allowed(Request())
    access.answered("10.0.0.1", "GET", "/x", 404, 10)
    access.answered("10.0.0.1", "GET", "/x", 404, 10)
    assert not details_allowed(Request())
    clock.advance(10)
    assert details_allowed(Request())
    assert details_allowed(object())  # no site, no access log: nothing to bound it against
