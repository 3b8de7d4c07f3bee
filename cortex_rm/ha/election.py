"""Which RM-eligible node should lead the RM's journal, as one member's view of the ring says.

The ring names a preference, the journal decides (``journal.py``): the *designated*
node is the first eligible live member at or after the RM key's point, and it alone
campaigns after ``election_timeout_s`` without a leader.  Any other eligible node waits
``FALLBACK_FACTOR`` times longer (plus a jitter): the designated node's log may be
behind, and then the journal refuses it and another must lead.
"""

from __future__ import annotations

from collections.abc import Iterable

from cortex_rm.dht.ring_math import key_id

#: The ring key whose point the active RM is the first eligible node at or after (as its addresses' record).
RM_POINT = key_id("cortex:resourcemanager")
#: An eligible node that is not designated waits this many election timeouts before campaigning.
FALLBACK_FACTOR = 3.0


def designated(eligible: frozenset[int], live: Iterable[int], point: int = RM_POINT) -> int | None:
    """The first eligible live member at or after ``point`` (wrapping round the ring); None if none is live."""
    candidates = sorted(eligible.intersection(live))
    if not candidates:
        return None
    return next((node for node in candidates if node >= point), candidates[0])


def campaign_after(me: int, eligible: frozenset[int], live: Iterable[int], timeout_s: float, jitter: float) -> float:
    """How long ``me`` waits without a leader before campaigning (``jitter`` in [0, 1): its random share)."""
    if me not in eligible:
        return float("inf")
    if designated(eligible, live) == me:
        return timeout_s
    return timeout_s * (FALLBACK_FACTOR + jitter)
