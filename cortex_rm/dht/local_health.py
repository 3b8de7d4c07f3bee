"""Lifeguard's local health multiplier: how much a member distrusts its own timeliness.

A member whose process stalls, or whose network drops its packets, sees its probes
fail although the targets are fine, and accuses healthy members.  Lifeguard
(Dadgar et al., 2018, "Local Health Aware Probe") has each member keep a score
LHM in ``0..S`` from evidence about *itself*:

* +1 when a probe failed and no indirect probe was sent (we cannot tell whose
  fault it was),
* +1 per nack we expected from a helper and did not get (the helpers are alive
  and answered the request; missing their nacks means our own messages are slow
  or lost),
* +1 when we had to refute a suspicion of ourselves (others found us slow),
* -1 when a probe succeeded.

The probe interval and the probe timeout are multiplied by ``1 + LHM``: an
unhealthy member probes less often and waits longer before accusing, so its
false accusations become rarer while it recovers.
"""

from __future__ import annotations

from twisted.logger import Logger

log = Logger()


class LocalHealth:
    """The local health multiplier of one member, bounded to ``0..max_multiplier``."""

    __slots__ = ("max_multiplier", "score", "_name")

    def __init__(self, max_multiplier: int, name: str = "") -> None:
        if max_multiplier < 0:
            raise ValueError(f"max_multiplier must not be negative, not {max_multiplier}")
        self.max_multiplier = max_multiplier
        self.score = 0
        self._name = name

    def apply(self, delta: int, reason: str) -> int:
        """Add ``delta``, clamped to ``0..max_multiplier``; the new score (logged when it changed)."""
        old = self.score
        self.score = min(self.max_multiplier, max(0, old + delta))
        if self.score != old:
            log.info(
                "swim {node} local health {old} -> {new} ({reason})",
                node=self._name,
                old=old,
                new=self.score,
                reason=reason,
            )
        return self.score

    def scale(self, seconds: float) -> float:
        """``seconds * (1 + LHM)``: a probe interval or timeout as this member should use it now."""
        return seconds * (1 + self.score)
