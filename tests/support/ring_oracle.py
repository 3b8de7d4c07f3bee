"""What a correct ring looks like, for the simulations' checks: true owners and true neighbours."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from cortex_rm.dht.chord import ChordNode
from cortex_rm.dht.peer import Peer


def true_owner(ring: Sequence[Peer], key: int) -> Peer:
    """The first peer at or after ``key`` on the circle; ``ring`` is sorted by ring id."""
    ids = [peer.node_id for peer in ring]
    return ring[bisect.bisect_left(ids, key) % len(ring)]


def neighbour_errors(nodes: Sequence[ChordNode]) -> list[str]:
    """Every node whose successor or predecessor is not its true neighbour among ``nodes``."""
    ring = sorted(nodes, key=lambda n: n.node_id)
    errors = []
    for i, node in enumerate(ring):
        succ, pred = ring[(i + 1) % len(ring)], ring[i - 1]
        if node.successor != succ.me:
            errors.append(f"{node.me.address}: successor {node.successor.address}, should be {succ.me.address}")
        if len(ring) > 1 and node.predecessor != pred.me:
            got = node.predecessor.address if node.predecessor else None
            errors.append(f"{node.me.address}: predecessor {got}, should be {pred.me.address}")
    return errors
