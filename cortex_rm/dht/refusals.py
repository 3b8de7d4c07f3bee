"""What a ring member refused from others, in totals a person can read (``/ws/v1/ring``, ``cortex-rm ring``).

Each part of the member counts its own refusals by reason (``Counter``s: the reasons
name keys and errors); ``Refusals.of`` adds them up into the few figures an
operator watches.  Growing ``rumours``, ``records`` or ``senders`` on an otherwise
quiet ring means someone is forging: the node's log names the first of each reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

RATE_LIMITED_PUTS = "puts over the rate limit"
RATE_LIMITED_RUMOURS = "rumours over the rate limit"
RATE_LIMITED_DIRECT = "direct messages over the rate limit"


@dataclass(frozen=True)
class Refusals:
    """Totals since the member started; every one only grows."""

    senders: int = 0
    """Envelopes dropped whole: the sender's key does not hash to its id, fails the key puzzle, or its work
    does not check."""

    rumours: int = 0
    """Rumours (ALIVE, SUSPECT, DEAD, LEFT) with a bad signature, a wrong signer or an accuser we do not know;
    an ALIVE whose key fails the key puzzle or whose work does not check."""

    gossip: int = 0
    """Gossip items (capacity reports...) not signed by their publisher, or refused by their section."""

    records: int = 0
    """Records refused by their signature or the key's write policy (a put, a push, anti-entropy, a hand-off)."""

    rate_limited: int = 0
    """Rumours, puts and direct messages dropped because their sender went over its rate limit."""

    refuted_deaths: int = 0
    """DEAD claims about a member that answered our own probe (the claim changed nothing)."""

    @classmethod
    def of(
        cls,
        envelopes: Counter[str],
        rumours: Counter[str],
        gossip: Counter[str],
        records: Counter[str],
        refuted_deaths: int,
    ) -> Refusals:
        """The totals from the members' counters: ``envelopes`` (``RingMember.refused``: senders and rate
        limits), ``rumours`` (``GroupView.refused``), ``gossip`` (``GossipSections.refused``), ``records``
        (``RecordGate.refused``) and the refuted claims (``DeathClaims.refuted``)."""
        limited = envelopes[RATE_LIMITED_PUTS] + envelopes[RATE_LIMITED_RUMOURS] + envelopes[RATE_LIMITED_DIRECT]
        return cls(
            senders=sum(envelopes.values()) - limited,
            rumours=sum(rumours.values()),
            gossip=sum(gossip.values()),
            records=sum(records.values()),
            rate_limited=limited,
            refuted_deaths=refuted_deaths,
        )
