"""Lifeguard's suspicion maths: how long a suspected member has to refute, and how often rumours repeat.

Pure functions of the group size, the probe interval and the multipliers of
``SwimConfig`` (after hashicorp memberlist's ``suspicion.go`` and ``util.go``), and
``SuspicionTimer``, the state of one suspicion.  Nothing here reads a clock: times
are seconds on the caller's clock.

**Suspicion timeout.**  SWIM gives a suspected member a fixed time to refute before
it is declared dead.  Lifeguard (Dadgar et al., 2018) starts from a long timeout
and shortens it as *independent* members confirm the suspicion, because one slow
accuser (a stalled process, a lossy link) is likely wrong, while several accusers
agreeing are likely right::

    min = suspicion_mult * max(1, log10(N)) * probe_interval
    max = suspicion_max_timeout_mult * min
    timeout(C) = max - (max - min) * log(C + 1) / log(K + 1),   floored at min

C is the number of confirmations beyond the first accusation and K the number
expected (``suspicion_confirmations``, memberlist's ``suspicion_mult - 2``, or 0 when the group is too small to supply
that many other accusers; then the timeout is min at once).  The log makes the
first confirmations count most.  The log10(N) factor gives gossip about the
suspicion time to reach the suspect in a larger group, where dissemination
takes O(log N) rounds.

**Retransmit limit.**  A rumour is piggybacked ``retransmit_mult * ceil(log10(N + 1))``
times by each member that learns it: enough rounds of infection-style gossip to
reach all N members with high probability, and no more.
"""

from __future__ import annotations

import math

from cortex_rm.dht.peer import Peer


def suspicion_timeout_bounds(n: int, probe_interval: float, suspicion_mult: int, max_timeout_mult: int) -> tuple[float, float]:
    """(min, max) suspicion timeout in seconds for a group of ``n`` live members.

    ``min = suspicion_mult * max(1, log10(n)) * probe_interval`` and
    ``max = max_timeout_mult * min``; groups of up to 10 members use the factor 1.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    minimum = suspicion_mult * node_scale * probe_interval
    return minimum, max_timeout_mult * minimum


def expected_confirmations(confirmations: int, n: int) -> int:
    """K, the independent confirmations a suspicion waits for: ``confirmations`` if ``n`` allows.

    Besides the suspect and ourselves only ``n - 2`` members can accuse; when they
    are fewer than K, no confirmation is waited for (K = 0, the timeout is min).
    (memberlist: ``suspicion_mult - 2``; ``SwimConfig.suspicion_confirmations``.)
    """
    k = max(0, confirmations)
    return k if n - 2 >= k else 0


def suspicion_timeout(confirmations: int, expected: int, minimum: float, maximum: float) -> float:
    """Seconds from the first accusation to death, after ``confirmations`` independent ones.

    ``max - (max - min) * log(C + 1) / log(K + 1)``, never below ``min``; with no
    confirmation expected (K < 1) it is ``min``.
    """
    if expected < 1:
        return minimum
    fraction = math.log(confirmations + 1) / math.log(expected + 1)
    return max(minimum, maximum - (maximum - minimum) * fraction)


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times each member piggybacks one rumour: ``retransmit_mult * ceil(log10(n + 1))``."""
    return retransmit_mult * math.ceil(math.log10(max(0, n) + 1))


class SuspicionTimer:
    """One suspicion of one member at one incarnation: when it started and who accused.

    The first accuser starts it; every further *distinct* accuser is one
    confirmation and brings the deadline forward (never back).  The same accuser
    heard again through another relay confirms nothing.
    """

    __slots__ = ("start", "minimum", "maximum", "expected", "accuser", "accusers", "deadline")

    def __init__(self, start: float, minimum: float, maximum: float, expected: int, accuser: Peer) -> None:
        self.start = start
        self.minimum = minimum
        self.maximum = maximum
        self.expected = expected
        self.accuser = accuser
        """The first accuser (repeated when the suspicion is passed on)."""
        self.accusers: set[int] = {accuser.node_id}
        self.deadline = start + suspicion_timeout(0, expected, minimum, maximum)

    @property
    def confirmations(self) -> int:
        """Independent accusers beyond the first."""
        return len(self.accusers) - 1

    def confirm(self, accuser: Peer) -> bool:
        """Count ``accuser``'s suspicion; whether it was a new, independent one."""
        if accuser.node_id in self.accusers:
            return False
        self.accusers.add(accuser.node_id)
        timeout = suspicion_timeout(self.confirmations, self.expected, self.minimum, self.maximum)
        self.deadline = self.start + timeout
        return True

    def expired(self, now: float) -> bool:
        """Whether the suspect had its time to refute."""
        return now >= self.deadline
