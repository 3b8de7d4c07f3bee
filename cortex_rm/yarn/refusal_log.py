"""Refusals of hostile connections logged without flooding the log or quoting the client.

A flood of hostile connections must not become a flood of log lines, nor put client
bytes in the log.  :class:`RefusalLog` counts refusals per reason and writes one
warning per reason per interval::

    IPC port ApplicationClientProtocolPB refused 37 connections from 12 addresses in the
    last 10 s: too many connections (most from 10.0.0.5: 20)

Only the reason and the peer's host, as the kernel reported it, are ever logged.
Protocol errors (a bad frame, a failed handshake) are worth a line each -- an operator
needs the detail -- so the first ten of an interval may be logged one by one
(:meth:`RefusalLog.may_detail`), their messages :func:`sanitised`; the rest are counted.
The first refusal after a quiet interval starts the interval; its count is written when
the interval ends.  The IPC ports, the tracker and the ring's listener use it.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: Distinct addresses remembered per reason and interval; more are counted but not kept.
MAX_TRACKED_ADDRESSES: Final = 4096
#: Protocol errors (bad frames, failed SASL) logged one by one per interval; the rest are counted.
MAX_DETAILED_PER_INTERVAL: Final = 10
#: The reason under which protocol errors past the detailed ones are counted.
PROTOCOL_ERRORS_SUPPRESSED: Final = "protocol errors past the first 10 logged"
#: Longest error message logged; what a client sent can appear in one (a protocol name).
MAX_MESSAGE_CHARS: Final = 300


def sanitised(message: str) -> str:
    """``message`` fit for a log line: non-printable characters escaped, at most MAX_MESSAGE_CHARS."""
    clean = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message[: MAX_MESSAGE_CHARS + 1])
    return clean if len(clean) <= MAX_MESSAGE_CHARS else clean[:MAX_MESSAGE_CHARS] + "..."


class RefusalLog:
    """Counts refusals per reason and logs them once per ``interval`` seconds.

    Without a ``clock`` every refusal is logged at once (still one line, without client
    bytes); daemons always pass their reactor.
    """

    def __init__(
        self, log: Logger, port: str, interval: float, clock: IReactorTime | None, what: str = "IPC port"
    ) -> None:
        self._log = log
        self.port = port
        self.what = what
        self.interval = interval
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._addresses: dict[str, Counter[str]] = {}
        self._flush_call: IDelayedCall | None = None
        self._detailed = 0

    def may_detail(self, host: str) -> bool:
        """May one more protocol error from ``host`` be logged in detail now?  If not, it is counted.

        The first MAX_DETAILED_PER_INTERVAL of an interval may (always, without a clock).
        """
        if self._clock is None:
            return True
        if self._detailed < MAX_DETAILED_PER_INTERVAL:
            self._detailed += 1
            if self._flush_call is None:
                self._flush_call = self._clock.callLater(self.interval, self._interval_over)
            return True
        self.refused(PROTOCOL_ERRORS_SUPPRESSED, host)
        return False

    def refused(self, reason: str, host: str) -> None:
        """Count one connection from ``host`` refused or cut for ``reason``."""
        self._counts[reason] += 1
        by_host = self._addresses.setdefault(reason, Counter())
        if host in by_host or len(by_host) < MAX_TRACKED_ADDRESSES:
            by_host[host] += 1
        if self._clock is None:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(self.interval, self._interval_over)

    def _interval_over(self) -> None:
        self._flush_call = None
        self.flush()

    def flush(self) -> None:
        """Log what was counted since the last flush, one warning per reason, and start afresh."""
        for reason, count in sorted(self._counts.items()):
            by_host = self._addresses.get(reason, Counter())
            [(top, top_count)] = by_host.most_common(1) or [("-", 0)]
            self._log.warn(
                "{where} refused {count} connections from {addresses} addresses in the last "
                "{interval:g} s: {reason} (most from {top_address}: {top_count})",
                where=f"{self.what} {self.port}".strip(),
                port=self.port,
                count=count,
                addresses=len(by_host),
                interval=self.interval,
                reason=reason,
                top_address=top,
                top_count=top_count,
            )
        self._counts.clear()
        self._addresses.clear()
        self._detailed = 0

    def stop(self) -> None:
        """Cancel the pending flush (the port is closing); what was counted is logged now."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.flush()
