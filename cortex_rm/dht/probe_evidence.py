"""What our own direct probes showed: the events membership emits for the uptime witness.

SWIM hears that a member is alive in many ways: its ack of our probe, an ack a
helper relays for it, its rumours, any message it sends.  Only one of them is
this member's own observation that the other answered *when asked*: a ``Probe``
we sent straight to it, answered by an ``Ack`` from it (the transport
authenticated the sender).  That is what a witness may sign
(``accounting/uptime_witness.py``), so ``Membership`` reports exactly those two
steps, and nothing else, as events beside its actions:

* ``DirectProbeSent``: a probe of our own went straight to ``peer`` -- a probe
  round (``ProbeScheduler``'s pass, or a suspect checked out of turn) or the
  direct probe of a DEAD claim's check (``death_claims.py``).  Not the probes we
  make for others (``probe_relays.py``), nor the untracked ones (the push of an
  accusation, the probe of a DEAD member, the goodbyes of a leave).
* ``DirectProbeAcked``: ``peer`` itself acked such a probe, within its probe
  period.  Not an ack a helper relays (it proves the helper heard *something*),
  not a ``Nack``, not an ack of an unknown or finished ``seq``.

They are not membership events: the ring member consumes them
(``uptime_watch.py``) and hands them to nobody else.
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.dht.peer import Peer


@dataclass(frozen=True)
class DirectProbeSent:
    """We sent ``peer`` a probe of our own, straight to it."""

    peer: Peer


@dataclass(frozen=True)
class DirectProbeAcked:
    """``peer`` itself acked a direct probe of ours (the first ack of that probe)."""

    peer: Peer


ProbeEvidence = DirectProbeSent | DirectProbeAcked
