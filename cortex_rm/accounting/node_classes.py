"""Static or volatile: a node's class from its attested uptime, with hysteresis.

ApplicationMasters go to static nodes only (DESIGN.md), so *static* should mean
"likely to stay up for the next hour or so".  What is known about how long peers
stay, from Stutzbach and Rejaie, "Understanding Churn in Peer-to-Peer Networks"
(IMC 2006, pp. 189-202), which measured Gnutella, Kad and BitTorrent:

* session lengths are not exponential: they fit Weibull distributions with
  shape 0.34 to 0.59, i.e. a *decreasing* hazard -- the longer a peer has been
  up, the longer it is likely to stay;
* a large portion of the peers up at any time are highly stable, while the
  remaining peers turn over quickly;
* a peer's session lengths across consecutive appearances are correlated, so
  its past uptime predicts its next sessions;
* downtimes are heavy-tailed too.

Hence two pieces of evidence, both from the ledger (``payouts.UptimeTally``),
never from the node: the **current session's length** (the decreasing hazard)
and the **attested uptime fraction** over a window (the correlation across
sessions).  The thresholds, with our own arithmetic on that Weibull model (the
paper's fitted scales are not used; we assume a median session of one hour,
which is ``bench/payout_sim.py``'s churn): a session ``a`` hours old lasts
one more hour with probability ``exp((a/l)**k - ((a+1)/l)**k)``:

=====  ======  ======  ======  ======
shape  a = 0   a = 6   a = 12  a = 24
=====  ======  ======  ======  ======
0.34   0.50    0.93    0.96    0.97
0.59   0.50    0.83    0.87    0.90
=====  ======  ======  ======  ======

So a node becomes static after a 12-hour session (0.87 to 0.96 over the next
hour, against 0.5 for a fresh one) if it was also up 90% of the window (the
last 7 days, or since the ring first gave it a prober or it was first
attested, whichever is earlier).  **Hysteresis**: a static node
stays static until its fraction falls below 75% or it is gone for longer than
``freshness_ms``; a short restart (a gap below ``session_gap_ms``) neither ends
its session nor demotes it.  A demoted node must earn the promotion again, so a
node hovering around one threshold does not flap.  Since attestations reach the
ledger up to an attestation interval late (``WitnessConfig``), the view ends at
the node's last attested instant while it counts as up.

Sans-IO: ``NodeClasses.update`` takes the node's attested intervals and the time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.logger import Logger

from cortex_rm.accounting.intervals import Interval, clipped, merged, total

_HOUR_MS = 3_600_000


class NodeClass(enum.Enum):
    """Where a node's containers may go: AMs to static nodes only."""

    STATIC = "static"
    VOLATILE = "volatile"


@dataclass(frozen=True)
class ClassThresholds:
    """When a node changes class (module doc for the reasons)."""

    window_ms: int = 7 * 24 * _HOUR_MS
    promote_fraction: float = 0.90
    demote_fraction: float = 0.75
    promote_session_ms: int = 12 * _HOUR_MS
    session_gap_ms: int = 15 * 60_000
    """A gap in the attested uptime at most this long does not end a session (a restart, an upgrade)."""
    freshness_ms: int = 90 * 60_000
    """A node whose last attested instant is older than this is gone (one attestation interval late, and more)."""

    def __post_init__(self) -> None:
        if not 0 <= self.demote_fraction <= self.promote_fraction <= 1:
            raise ValueError("need 0 <= demote_fraction <= promote_fraction <= 1")
        if min(self.window_ms, self.freshness_ms) <= 0 or min(self.promote_session_ms, self.session_gap_ms) < 0:
            raise ValueError("window and freshness must be positive, session thresholds not negative")


@dataclass(frozen=True)
class ClassEvidence:
    """What the ledger says about a node now."""

    up: bool  # its last attested instant is at most freshness_ms old
    uptime_fraction: float  # attested uptime over the window (since it was first known, if later)
    session_ms: int  # how long its current session has lasted (0 when not up)


def class_evidence(
    uptime: Sequence[Interval], now_ms: int, thresholds: ClassThresholds, member_since_ms: int | None = None
) -> ClassEvidence:
    """The evidence in ``uptime`` (a node's attested intervals, any order) at ``now_ms``.

    The fraction counts from the node's first attested instant or, if earlier,
    ``member_since_ms`` (when the ledger's membership first gave it a prober): a
    node that went down before any attestation of it reached the ledger was
    still there, and the time it was down counts against it.
    """
    spans = clipped(merged(uptime), -1 << 62, now_ms)
    if not spans:
        return ClassEvidence(False, 0.0, 0)
    last_end = spans[-1][1]
    up = now_ms - last_end <= thresholds.freshness_ms
    horizon = last_end if up else now_ms  # while up, what comes after the last attested instant is not known yet
    first = spans[0][0] if member_since_ms is None else min(spans[0][0], member_since_ms)
    low = max(horizon - thresholds.window_ms, first)
    fraction = total(clipped(spans, low, horizon)) / (horizon - low) if horizon > low else 0.0
    if not up:
        return ClassEvidence(False, fraction, 0)
    session_start = spans[-1][0]
    for start, end in reversed(spans[:-1]):
        if session_start - end > thresholds.session_gap_ms:
            break
        session_start = start
    return ClassEvidence(True, fraction, horizon - session_start)


def next_class(current: NodeClass, evidence: ClassEvidence, thresholds: ClassThresholds) -> NodeClass:
    """The class after ``current`` given ``evidence``: promote on both thresholds, demote on either lower one."""
    if current is NodeClass.VOLATILE:
        if (
            evidence.up
            and evidence.uptime_fraction >= thresholds.promote_fraction
            and evidence.session_ms >= thresholds.promote_session_ms
        ):
            return NodeClass.STATIC
        return NodeClass.VOLATILE
    if not evidence.up or evidence.uptime_fraction < thresholds.demote_fraction:
        return NodeClass.VOLATILE
    return NodeClass.STATIC


class NodeClasses:
    """Every node's current class; a node never seen is volatile."""

    log = Logger()

    def __init__(self, thresholds: ClassThresholds | None = None) -> None:
        self.thresholds = thresholds or ClassThresholds()
        self._classes: dict[int, NodeClass] = {}

    def class_of(self, node: int) -> NodeClass:
        return self._classes.get(node, NodeClass.VOLATILE)

    def update(
        self, node: int, uptime: Sequence[Interval], now_ms: int, member_since_ms: int | None = None
    ) -> NodeClass:
        """Re-classify ``node`` from its attested ``uptime`` at ``now_ms`` (``class_evidence``); its class after."""
        current = self.class_of(node)
        evidence = class_evidence(uptime, now_ms, self.thresholds, member_since_ms)
        new = next_class(current, evidence, self.thresholds)
        if new is not current:
            self.log.info(
                "node {node} is now {node_class} (uptime fraction {fraction:.3f}, session {session_ms} ms)",
                node=f"{node:040x}",
                node_class=new.value,
                previous_class=current.value,
                fraction=evidence.uptime_fraction,
                session_ms=evidence.session_ms,
            )
        if new is NodeClass.VOLATILE:
            self._classes.pop(node, None)
        else:
            self._classes[node] = new
        return new

    def static_nodes(self) -> frozenset[int]:
        """The nodes classed static now."""
        return frozenset(self._classes)
