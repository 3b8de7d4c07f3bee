"""Someone else says a member is DEAD: our own probe decides.

A DEAD rumour is signed by its accuser (``ring_trust.py``), but a member that may
accuse can lie, and one lie used to make every member drop a live neighbour and
change its successor.  So a DEAD from gossip about a member we hold ALIVE or
SUSPECT changes nothing at once (``group_view.py``); it opens a *check* here:

1. a direct ``Probe`` at once (its own ``seq``, outside the probe rounds, so many
   claims -- half the ring crashing -- are checked in parallel, not one a period);
2. no ack within ``probe_timeout``: ``ProbeRequest`` to k live members (indirect
   probes, as SWIM's round does), so one lost packet does not kill a live member;
3. an ``Ack`` of the check's ``seq`` from the member or a helper by the end of the
   probe period refutes the claim (it is dropped); none, and ``expired`` names the
   member: the owner declares it DEAD, signed by itself as the accuser.

Checks are bounded (``MAX_CHECKS``): claims beyond it are ignored (our own SWIM
probes and the accuser's repeats still reach the member).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import Probe, ProbeRequest

MAX_CHECKS = 256
"""DEAD claims checked at once (remote input: bounded)."""


@dataclass(slots=True)
class _Check:
    peer: Peer
    seq: int
    timeout_at: float
    deadline: float
    helpers: tuple[Peer, ...] | None = None


class DeathClaims:
    """The DEAD claims being checked by our own probes."""

    def __init__(self, indirect_checks: int, next_seq: Callable[[], int], rng: random.Random) -> None:
        self.indirect_checks = indirect_checks
        self._next_seq = next_seq
        self._rng = rng
        self._checks: dict[int, _Check] = {}  # member id -> its check
        self.refuted = 0  # claims our probe refuted (the member answered)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._checks

    def __len__(self) -> int:
        return len(self._checks)

    def claim(self, peer: Peer, now: float, probe_timeout: float, period: float) -> list[Send]:
        """Check ``peer`` (said to be DEAD): probe it now, unless a check of it runs already."""
        if peer.node_id in self._checks or len(self._checks) >= MAX_CHECKS:
            return []
        check = _Check(peer, self._next_seq(), now + probe_timeout, now + period)
        self._checks[peer.node_id] = check
        return [Send(peer, Probe(check.seq))]

    def answers(self, sender: Peer, seq: int) -> bool:
        """Whether an ``Ack(seq)`` from ``sender`` is the claimed member's own answer to its check (not a helper's)."""
        check = self._checks.get(sender.node_id)
        return check is not None and check.seq == seq

    def acked(self, sender: Peer, seq: int) -> bool:
        """Whether an ``Ack(seq)`` from ``sender`` answers a check (then the claim is refuted and dropped)."""
        for node_id, check in self._checks.items():
            if check.seq == seq and (sender.node_id == node_id or any(h.node_id == sender.node_id for h in check.helpers or ())):
                del self._checks[node_id]
                self.refuted += 1
                return True
        return False

    def next_deadline(self) -> float:
        """When ``tick`` has something to do for the checks."""
        return min((c.timeout_at if c.helpers is None else c.deadline for c in self._checks.values()), default=math.inf)

    def tick(self, now: float, alive: Sequence[Peer]) -> tuple[list[Send], list[Peer]]:
        """Indirect probes for checks past their timeout; the members whose check ended unanswered."""
        sends: list[Send] = []
        dead: list[Peer] = []
        for node_id, check in list(self._checks.items()):
            if now >= check.deadline:
                del self._checks[node_id]
                dead.append(check.peer)
            elif check.helpers is None and now >= check.timeout_at:
                candidates = [p for p in alive if p.node_id != node_id]
                check.helpers = tuple(self._rng.sample(candidates, min(self.indirect_checks, len(candidates))))
                sends += [Send(helper, ProbeRequest(check.seq, check.peer)) for helper in check.helpers]
        return sends, dead

    def drop_all(self) -> None:
        """Forget every check (we were paused: their silence proves nothing)."""
        self._checks.clear()
