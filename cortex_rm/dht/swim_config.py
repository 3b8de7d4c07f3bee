"""The settings of SWIM failure detection with Lifeguard, as one frozen, documented object.

Defaults follow hashicorp memberlist's ``DefaultLANConfig``; the formulas that use
them are in ``suspicion.py`` and ``local_health.py``.  ``SwimConfig.lan()`` is the
default profile and ``SwimConfig.wan()`` the one for members spread over the
internet (slower probes, longer timeouts), as memberlist has them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SwimConfig:
    """How often members probe, how long they wait, and how suspicion and gossip are bounded."""

    probe_interval: float = 1.0
    """Seconds between two probes started by a member (times ``1 + LHM``).

    It is also the probe *period*: a probe that has no ack by the end of its period
    has failed and its target becomes SUSPECT.
    """

    probe_timeout: float = 0.5
    """Seconds to wait for a direct ack before asking ``indirect_checks`` helpers (times ``1 + LHM``).

    About the 99th percentile of a round trip; must be shorter than the interval.
    """

    indirect_checks: int = 3
    """k, the ALIVE members asked to probe a target that did not answer us directly."""

    indirect_probe_timeout: float = 0.4
    """Seconds a helper waits for the target's ack before answering the prober with a Nack.

    Must be below ``probe_interval - probe_timeout``, so that the nack reaches the
    prober before its probe period ends and counts as evidence of its own health.
    """

    suspicion_mult: int = 3
    """The minimum suspicion timeout is ``suspicion_mult * max(1, log10(N)) * probe_interval``.

    3 s for up to 10 members, 5.1 s for 50, 9 s for 1,000 (memberlist: 4).  The
    minimum is the time a live suspect has to refute, and ours gets the news
    sooner than memberlist's: its neighbours probe it as soon as they hear of the
    suspicion, each probe carrying it (buddy system), and it answers each in its
    ack.  Neither does a death rest on the timeout alone: it takes two failed
    probes of the member's own (``membership.py``).  With 1 s probes a crash among
    10 members is first probed after under 3.6 s (p99) and suspected a second
    later; 3 s of suspicion and a pushed death keep every member within 8 s.
    """

    suspicion_confirmations: int = 2
    """K, the independent confirmations after which a suspicion lasts only the minimum.

    memberlist has ``suspicion_mult - 2`` (2 for its 4); we keep its K while the
    minimum is shorter: one lossy link, or a member that was paused, rarely fails
    three independent probers at once.
    """

    suspicion_max_timeout_mult: int = 6
    """The maximum suspicion timeout (one accuser only) is ``suspicion_max_timeout_mult * min``."""

    retransmit_mult: int = 4
    """Each member piggybacks a rumour ``retransmit_mult * ceil(log10(N + 1))`` times."""

    awareness_max_multiplier: int = 8
    """S, the largest local health multiplier: at worst, probes are ``1 + S`` times slower."""

    dead_probe_interval: float = 10.0
    """Seconds between probes of one random DEAD member (0 disables them).

    The probe carries the news of its death (buddy system), so a member that was
    declared dead behind a partition learns it once the partition heals, and
    refutes with a higher incarnation.  Members that LEFT are never probed.
    """

    dead_member_retention: float = 1800.0
    """Seconds a DEAD or LEFT member stays in the member table before it is forgotten.

    memberlist's ``GossipToTheDeadTime`` (30 s on a LAN) is much shorter, but
    memberlist also heals partitions by push-pull state sync and by re-joining
    through its seeds; we have neither: a member declared dead behind a partition
    comes back only when someone probes it (``dead_probe_interval``) while it is
    still in their table.  So the retention is the longest partition that heals
    by itself: 30 minutes, 180 dead probes of 10 s, far beyond the 2-minute
    partition of the ring scenarios.  Keeping the dead that long is cheap: the
    table is bounded (``max_members``) and the dead cost one probe per
    ``dead_probe_interval`` in total, however many there are.  Forgetting them
    bounds the table against gossip of made-up members (each is probed, dies,
    and is gone after this time).  A forgotten member that comes back announces
    itself ALIVE and joins again.
    """

    max_members: int = 16384
    """Bound on the member table (ourselves not counted): beyond it, new members are refused.

    Gossip is unauthenticated by content, so any member can announce made-up ones;
    the bound caps what that costs.  Far above the largest YARN clusters (about
    10,000 nodes); a row is a few hundred bytes.  Members already known are
    updated as usual; the first refusal is logged (once, until there is room again).
    """

    late_tick_limit: float = 0.25
    """Seconds a tick may come after the deadline it was due at before we count ourselves paused.

    A member whose process was paused (GC, swap, a stopped VM) wakes up with its
    timers long expired and the answers that came meanwhile still unread.  Its
    probe in flight is then inconclusive, not failed: no suspicion, LHM + 1
    (Lifeguard: a member that was slow distrusts itself).  Half the probe timeout:
    a busy reactor is late by milliseconds, a pause by much more.
    """

    max_broadcasts: int = 1024
    """Bound on queued rumours; when full, the one sent most often is dropped first.

    Gossip section items (``GossipItem``) have their own bound, half of this, and
    make room only by dropping other section items: a flood of them never
    pushes out a membership update (``piggyback.BroadcastQueue``).
    """

    def __post_init__(self) -> None:
        if self.probe_interval <= 0 or self.probe_timeout <= 0:
            raise ValueError("probe_interval and probe_timeout must be positive")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError(f"probe_timeout {self.probe_timeout} must be shorter than probe_interval {self.probe_interval}")
        if not 0 < self.indirect_probe_timeout < self.probe_interval - self.probe_timeout:
            raise ValueError(
                f"indirect_probe_timeout {self.indirect_probe_timeout} must lie in (0, probe_interval - probe_timeout)"
            )
        if self.indirect_checks < 0 or self.retransmit_mult < 1 or self.suspicion_mult < 1:
            raise ValueError("indirect_checks must be >= 0, retransmit_mult and suspicion_mult >= 1")
        if self.suspicion_confirmations < 0:
            raise ValueError("suspicion_confirmations must be >= 0")
        if self.suspicion_max_timeout_mult < 1 or self.awareness_max_multiplier < 0:
            raise ValueError("suspicion_max_timeout_mult must be >= 1 and awareness_max_multiplier >= 0")
        if self.late_tick_limit <= 0:
            raise ValueError("late_tick_limit must be positive")
        if self.dead_member_retention <= 0 or self.max_members < 1:
            raise ValueError("dead_member_retention must be positive and max_members >= 1")
        if self.dead_probe_interval < 0 or self.max_broadcasts < 1:
            raise ValueError("dead_probe_interval must be >= 0 and max_broadcasts >= 1")

    @classmethod
    def lan(cls) -> SwimConfig:
        """memberlist's LAN defaults: 1 s probes, 0.5 s timeout, k = 3."""
        return cls()

    @classmethod
    def wan(cls) -> SwimConfig:
        """memberlist's WAN profile: 5 s probes, 3 s timeout, suspicion mult 6 (K = 4)."""
        return cls(probe_interval=5.0, probe_timeout=3.0, indirect_probe_timeout=1.5, suspicion_mult=6, suspicion_confirmations=4)
