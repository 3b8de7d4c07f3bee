"""Our own evidence against the members we suspect: when to check them, and when they are dead.

Lifeguard's suspicion timer (``suspicion.py``) says how long a suspect has to
refute, from the accusations of the group.  A death declared on the timer alone
trusts the group's news and the gossip of refutations; on a lossy network one
member can miss the refutation for the whole timeout (gossip is probabilistic),
and then a single failed probe of its own -- 1 in 130 probes fail at 10% loss
even with k = 3 indirect paths -- made it declare a live member dead.

``SuspectChecks`` asks for evidence of our own as well:

* **Two failed probes in a row.**  A suspect is declared DEAD only when two
  probes of ours failed in a row (no ack between them), the later one ending
  within ``lead`` (two probe periods) before the deadline or after it.  Each
  probe carried the suspicion (buddy system), so a live suspect had two chances
  to answer us with its refutation, besides the gossip: about 1 in 16,000 at 10%
  loss, where a lone failure was 1 in 130.
* **Checked before the deadline.**  So that a crash is not declared later for it,
  the check starts ``lead`` before the deadline (out of turn, ``ProbeScheduler.probe_next``)
  and usually ends by it; a check still in flight at the deadline is waited for.
  An acked probe clears the evidence: the suspect lives, its refutation will come
  (it is checked again each period until then).

Evidence lasts as long as the suspicion: the owner calls ``forget`` when the
member is no longer SUSPECT.
"""

from __future__ import annotations

import enum
import math

from cortex_rm.dht.suspicion import SuspicionTimer


class Verdict(enum.Enum):
    """What to do about one suspect now."""

    WAIT = "wait"  # nothing yet (or our check is in flight)
    CHECK = "check"  # probe it next: we need evidence of our own
    DEAD = "dead"  # the deadline passed and our own evidence agrees


class SuspectChecks:
    """Our failed probes of each suspect, and the checks in flight."""

    def __init__(self) -> None:
        self._failed: dict[int, tuple[int, float]] = {}  # suspect -> (our failed probes in a row, when the last)
        self._checking: set[int] = set()

    def failed(self, node_id: int, now: float) -> None:
        """Our probe of ``node_id`` (a suspect) ended without an ack at ``now``."""
        failures, _ = self._failed.get(node_id, (0, now))
        self._failed[node_id] = (failures + 1, now)
        self._checking.discard(node_id)

    def acked(self, node_id: int) -> None:
        """Our probe of ``node_id`` was acked: it is alive, whatever it is suspected of."""
        self._failed.pop(node_id, None)
        self._checking.discard(node_id)

    def ended(self, node_id: int) -> None:
        """Our probe of ``node_id`` ended (acked or failed): no check of ours is in flight."""
        self._checking.discard(node_id)

    def forget(self, node_id: int) -> None:
        """``node_id`` is no longer SUSPECT: its evidence is void."""
        self._failed.pop(node_id, None)
        self._checking.discard(node_id)

    def verified(self, node_id: int, since: float) -> bool:
        """Whether two probes of ours failed in a row, the later one ending at ``since`` or after."""
        failures, failed_at = self._failed.get(node_id, (0, -math.inf))
        return failures >= 2 and failed_at >= since

    def next_due(self, node_id: int, suspicion: SuspicionTimer, lead: float) -> float:
        """When ``verdict`` may change for this suspect (inf while our check is in flight)."""
        if node_id in self._checking:
            return math.inf
        due = suspicion.deadline
        return due if self.verified(node_id, due - lead) else due - lead

    def verdict(self, node_id: int, suspicion: SuspicionTimer, now: float, lead: float) -> Verdict:
        """WAIT, CHECK (and the check counts as in flight from now) or DEAD."""
        due = suspicion.deadline
        if node_id in self._checking or now < due - lead:
            return Verdict.WAIT
        if not self.verified(node_id, due - lead):
            self._checking.add(node_id)
            return Verdict.CHECK
        return Verdict.DEAD if now >= due else Verdict.WAIT
