"""Pay periods: calendar months in UTC by default, or fixed lengths from an origin.

A period is half-open, ``[start_ms, end_ms)`` in milliseconds since the Unix epoch
(UTC), like every interval of the accounting (``intervals.py``).  ``PeriodScheme``
is the configured choice; ``period_at`` answers which period an instant belongs
to, so the RM, the witnesses and anyone recomputing a payout agree on the edges.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

_UTC = datetime.timezone.utc


@dataclass(frozen=True, order=True)
class Period:
    """``[start_ms, end_ms)``: the instants one payout statement pays for."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_ms < self.end_ms < 1 << 63:
            raise ValueError(f"a period needs 0 <= start < end < 2**63, not [{self.start_ms}, {self.end_ms})")

    @property
    def length_ms(self) -> int:
        return self.end_ms - self.start_ms


def _ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp()) * 1000


def calendar_month(at_ms: int) -> Period:
    """The UTC calendar month holding ``at_ms``: from 00:00 on its 1st to 00:00 on the next month's 1st."""
    moment = datetime.datetime.fromtimestamp(at_ms // 1000, _UTC)
    start = datetime.datetime(moment.year, moment.month, 1, tzinfo=_UTC)
    following = datetime.datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=_UTC)
    return Period(_ms(start), _ms(following))


@dataclass(frozen=True)
class PeriodScheme:
    """How time is cut into pay periods.

    ``length_ms == 0`` (the default): UTC calendar months.  Otherwise periods of
    ``length_ms`` each, the first starting at ``origin_ms`` (for tests, and for
    clusters that pay weekly: ``PeriodScheme(7 * 86_400_000, origin_ms=<a Monday>)``).
    """

    length_ms: int = 0
    origin_ms: int = 0

    def __post_init__(self) -> None:
        if self.length_ms < 0 or self.origin_ms < 0:
            raise ValueError("a period scheme's length and origin must not be negative")

    def period_at(self, at_ms: int) -> Period:
        """The period holding the instant ``at_ms`` (which must not be before ``origin_ms``)."""
        if at_ms < self.origin_ms:
            raise ValueError(f"{at_ms} is before the first period, which starts at {self.origin_ms}")
        if self.length_ms == 0:
            return calendar_month(at_ms)
        index = (at_ms - self.origin_ms) // self.length_ms
        start = self.origin_ms + index * self.length_ms
        return Period(start, start + self.length_ms)

    def following(self, period: Period) -> Period:
        """The period right after ``period``."""
        return self.period_at(period.end_ms)
