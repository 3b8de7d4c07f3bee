"""When a node offers its caps: ``[nodemanager] schedule``, e.g. ``"22:00-07:00"`` (only at night) or
``"08:00-12:00, 14:00-18:00"``, in the machine's local time.  Pure functions of a clock reading.

A window ``A-B`` holds from ``A`` (included) to ``B`` (excluded); ``B`` before ``A`` wraps past
midnight (``22:00-07:00`` is 22:00 to 07:00 the next morning); ``00:00-24:00`` is the whole day.
The empty schedule (the default) is always on.

Outside every window the node offers nothing new: its heartbeats say so (``NodeHealth.offering``)
and the RM's scheduler leaves it out of placement until it offers again; the containers it runs
go on to their end (``roles/node_caps.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

_WINDOW: Final = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})")
DAY_MIN: Final = 24 * 60


class ScheduleError(ValueError):
    """A schedule that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class OfferSchedule:
    """Windows of the day, as (start, end) minutes after midnight; none: always."""

    windows: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> OfferSchedule:
        """``"HH:MM-HH:MM[, HH:MM-HH:MM...]"``; ScheduleError for anything else."""
        windows = []
        for part in (p.strip() for p in text.split(",")) if text.strip() else ():
            m = _WINDOW.fullmatch(part)
            if m is None:
                raise ScheduleError(f"{part!r} is not a window HH:MM-HH:MM (e.g. 22:00-07:00)")
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
                raise ScheduleError(f"{part!r} is not a time of day (00:00 to 23:59, or 24:00 as an end)")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start == end:
                raise ScheduleError(f"{part!r} is empty: its start and end are the same time")
            windows.append((start, end))
        return cls(tuple(windows))

    def offers_at(self, minute: float) -> bool:
        """Whether ``minute`` (after local midnight, 0 <= minute < 1440) is in a window."""
        if not self.windows:
            return True
        for start, end in self.windows:
            if start < end and start <= minute < end:
                return True
            if end < start and (minute >= start or minute < end):  # (wraps past midnight)
                return True
        return False

    def offers(self, seconds: float, localtime: Callable[[float], time.struct_time] = time.localtime) -> bool:
        """Whether the node offers at clock reading ``seconds`` (POSIX time), in local time."""
        t = localtime(seconds)
        return self.offers_at(t.tm_hour * 60 + t.tm_min + t.tm_sec / 60)

    def __str__(self) -> str:
        if not self.windows:
            return "always"
        return ", ".join(f"{s // 60:02}:{s % 60:02}-{e // 60:02}:{e % 60:02}" for s, e in self.windows)
