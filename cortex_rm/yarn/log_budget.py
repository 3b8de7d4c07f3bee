"""A bound on warning lines: at most ``limit`` per interval, the rest summed up in one line.

Where a flood of bad input could become a flood of log lines (members with false
addresses, capacity reports that are not believed), the code logs each case while
the interval's budget lasts and counts the others; when the next interval starts
(``roll``), the count of the one that ended is there to be written as one line.
Sans-IO: the caller passes the time.
"""

from __future__ import annotations


class LogBudget:
    """``limit`` lines per ``interval_s``; ``suppressed`` counts every line refused since the start."""

    def __init__(self, limit: int, interval_s: float) -> None:
        self.limit = limit
        self.interval_s = interval_s
        self.suppressed = 0
        self._started = float("-inf")
        self._spent = 0

    def roll(self, now: float) -> int:
        """Start a new interval at ``now`` if the last one has ended; how many lines that one refused (0 else)."""
        if now - self._started < self.interval_s:
            return 0
        ended = max(0, self._spent - self.limit)
        self._started, self._spent = now, 0
        return ended

    def spend(self) -> bool:
        """One more line in the current interval: whether it may be written (else it is counted)."""
        self._spent += 1
        if self._spent > self.limit:
            self.suppressed += 1
            return False
        return True
