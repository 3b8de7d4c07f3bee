"""Which ring neighbour to probe next: round robin over a shuffled list, reshuffled each pass.

SWIM picks probe targets so that every member is probed within a bounded time
(Das et al., section 4.3): a random permutation of the members, walked in order,
and shuffled again at the end.  A member that fails is thus first probed after at
most about two passes (the end of one pass and the start of the next), not after
an unbounded run of bad luck as with uniformly random picks.

Here the targets are the member's *ring neighbours* (successors, predecessor,
fingers), which the ring hands over whenever they change.  A new neighbour is
inserted at a random place of the current pass, so it is probed within this pass
or the next.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from cortex_rm.dht.peer import Peer


class ProbeScheduler:
    """The order in which a member probes its neighbours."""

    def __init__(self, me: Peer, rng: random.Random) -> None:
        self.me = me
        self._rng = rng
        self._neighbours: list[Peer] = []
        self._pass: list[Peer] = []  # the rest of the current pass, next target last
        self._priority: list[Peer] = []  # probed before the pass, first come first

    @property
    def neighbours(self) -> tuple[Peer, ...]:
        """The current ring neighbours, without duplicates and without ourselves."""
        return tuple(self._neighbours)

    def set_neighbours(self, peers: Iterable[Peer]) -> list[Peer]:
        """Replace the neighbours; those that were not neighbours before (returned) join the pass."""
        unique = list(dict.fromkeys(p for p in peers if p.node_id != self.me.node_id))
        known = set(self._neighbours)
        added = [p for p in unique if p not in known]
        self._neighbours = unique
        current = set(unique)
        self._pass = [p for p in self._pass if p in current]
        for peer in added:
            self._pass.insert(self._rng.randint(0, len(self._pass)), peer)
        return added

    def probe_next(self, peer: Peer) -> None:
        """Probe ``peer`` before the rest (a suspect we check before declaring it dead).

        It need not be a neighbour; the pass goes on afterwards where it was.
        """
        if peer not in self._priority:
            self._priority.append(peer)

    def next_target(self, eligible: Callable[[Peer], bool]) -> Peer | None:
        """The next neighbour for which ``eligible`` holds (None when there is none).

        Members given to ``probe_next`` come first; then the pass, walking at most
        the rest of this pass and one whole new pass.
        """
        while self._priority:
            peer = self._priority.pop(0)
            if eligible(peer):
                return peer
        for _ in range(2):
            while self._pass:
                peer = self._pass.pop()
                if eligible(peer):
                    return peer
            if not self._neighbours:
                return None
            self._pass = list(self._neighbours)
            self._rng.shuffle(self._pass)
        return None
