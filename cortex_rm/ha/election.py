"""Which RM-eligible node should lead the RM's journal, as one member's view of the ring says.

The configuration or the ring names a preference, the journal decides (``journal.py``): the
*designated* node is the first live node of ``[ring] resource_managers`` in the order listed
(an operator ranks the eligible nodes; ``local-cluster`` lists its first node first), or, with
no order given, the first eligible live member at or after the RM key's point.  It alone
campaigns after ``election_timeout_s`` without a leader.  Any other eligible node waits
``FALLBACK_FACTOR`` times longer (plus a jitter): the designated node's log may be
behind, and then the journal refuses it and another must lead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cortex_rm.dht.ring_math import key_id

#: The ring key whose point the active RM is the first eligible node at or after (as its addresses' record).
RM_POINT = key_id("cortex:resourcemanager")
#: An eligible node that is not designated waits this many election timeouts before campaigning.
FALLBACK_FACTOR = 3.0


def designated(
    eligible: frozenset[int], live: Iterable[int], point: int = RM_POINT, preference: Sequence[int] = ()
) -> int | None:
    """The first live node of ``preference`` that is eligible, else the first eligible live member at or after
    ``point`` (wrapping round the ring); None if none is live."""
    candidates = sorted(eligible.intersection(live))
    if not candidates:
        return None
    preferred = next((node for node in preference if node in candidates), None)
    if preferred is not None:
        return preferred
    return next((node for node in candidates if node >= point), candidates[0])


def campaign_after(
    me: int, eligible: frozenset[int], live: Iterable[int], timeout_s: float, jitter: float,
    preference: Sequence[int] = (),
) -> float:
    """How long ``me`` waits without a leader before campaigning (``jitter`` in [0, 1): its random share)."""
    if me not in eligible:
        return float("inf")
    if designated(eligible, live, preference=preference) == me:
        return timeout_s
    return timeout_s * (FALLBACK_FACTOR + jitter)
