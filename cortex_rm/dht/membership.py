"""SWIM failure detection with Lifeguard, as a sans-IO core over a member's ring neighbours.

``Membership`` never sends, sleeps or reads a clock.  Every input takes ``now``
(seconds, the caller's clock) and returns actions (``Send``) and membership events
(``MemberJoined``/``Suspected``/``Alive``/``Died``/``Left``), and the evidence of
its own direct probes (``probe_evidence.py``: for the uptime witness).  The ring member calls
``tick(now)`` at ``next_deadline()`` (or more often), hands it every SWIM message
(``receive``), every piggyback (``receive_piggyback``) and every sender
(``heard_from``), and asks it for rumours to piggyback (``piggyback_for``).

The protocol (SWIM, Das et al. 2002; Lifeguard, Dadgar et al. 2018; memberlist's
defaults, ``SwimConfig``), this module's half being the probing:

1. **Probe** the next ring neighbour each probe interval (``ProbeScheduler``);
   with no ack by the probe timeout, ask k ALIVE members to probe it for us
   (``ProbeRequest``; each answers the target's ack, or ``Nack``).  We serve such
   requests only for members we know live, at our address for them (``probe_relays.py``).
2. **Suspect** it with no ack by the end of the period; the accusation is gossiped
   and pushed at once to k random members.  A member that hears a neighbour of
   its own suspected probes it next: a crash is confirmed in a period or two, a
   live suspect hears of it (buddy system: a message to a suspect leads with it).
3. **Refute or die** (``group_view.py``): the suspect refutes with a higher
   incarnation; the suspicion timer shortens with confirmations (``suspicion.py``);
   a death also needs two failed probes of our own (``suspect_checks.py``).
4. **Local health** (``local_health.py``): failures and missed nacks raise LHM,
   acks lower it; intervals scale by ``1 + LHM``.  A tick long after its deadline
   means *we* were paused: the probe in flight is inconclusive (LHM + 1, no
   suspicion), relayed probes get no nack, and expired suspicions wait until we
   have read what came in meanwhile.
5. **Gossip** rides on every message (``piggyback.py``).  Anti-entropy: every
   ``dead_probe_interval`` one random ALIVE member is gossiped again, so a member
   that missed an announcement learns it in time.

Partitions that outlast the suspicion timeout get each side declared DEAD by the
other (the ring must route around them).  Every ``dead_probe_interval`` each
member probes one random DEAD member with the news of its death; once the
partition heals it refutes and comes back (``MemberJoined``).  A restarted member
starts at a higher incarnation (``incarnation=``) and announces itself ALIVE.

A DEAD heard from someone else is a claim (``group_view.py``): we probe the member
ourselves (``death_claims.py``) and declare it DEAD (signed by us) only when that
probe, direct and indirect, goes unanswered.

Unasked messages (an ``Ack``/``Nack`` of an unknown or finished ``seq``, or from
a member we did not ask) are ignored deliberately: late answers of decided probes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cortex_rm.dht.death_claims import DeathClaims
from cortex_rm.dht.envelope import Send
from cortex_rm.dht.group_view import GroupView, SwimAction
from cortex_rm.dht.local_health import LocalHealth
from cortex_rm.dht.member_table import ALIVE, DEAD, GONE, LEFT, SUSPECT, Member, MemberTable
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.piggyback import BroadcastQueue, GossipSections, SizeOf
from cortex_rm.dht.probe_evidence import DirectProbeAcked, DirectProbeSent
from cortex_rm.dht.probe_relays import ProbeRelays
from cortex_rm.dht.probe_scheduler import ProbeScheduler
from cortex_rm.dht.ring_trust import OpenTrust, RingTrust
from cortex_rm.dht.suspect_checks import SuspectChecks, Verdict
from cortex_rm.dht.suspicion import SuspicionTimer, retransmit_limit
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import (
    Ack,
    MemberStatus,
    MemberUpdate,
    Nack,
    Piggyback,
    Probe,
    ProbeRequest,
    SwimMessage,
)

__all__ = ["Membership", "SwimAction"]


@dataclass(slots=True)
class _ProbeRound:
    """Our probe of ``target`` in the current probe period."""

    target: Peer
    seq: int
    timeout_at: float
    period_end: float
    acked: bool = False
    answered: bool = False  # the target's own ack came (a helper's may have come first)
    helpers: tuple[Peer, ...] | None = None  # None: no indirect probe asked yet
    nacks: set[int] = field(default_factory=set)


class Membership:
    """One member's view of the group and its side of SWIM; each step returns actions and events."""

    def __init__(
        self, me: Peer, config: SwimConfig, rng: random.Random, *, incarnation: int = 0, trust: RingTrust | None = None
    ) -> None:
        self.me = me
        self.trust: RingTrust = trust if trust is not None else OpenTrust(me.node_id)
        self.config = config
        self._rng = rng
        self.health = LocalHealth(config.awareness_max_multiplier, me.short())
        self.broadcasts = BroadcastQueue(config.max_broadcasts, retransmit_limit(config.retransmit_mult, 1))
        self.sections = GossipSections(self.broadcasts, me.short(), self.trust)
        self._scheduler = ProbeScheduler(me, rng)
        self.view = GroupView(
            me, config, self.health, self.broadcasts, incarnation, self._next_seq, self._suspected, self.trust, self._death_claim
        )
        self.claims = DeathClaims(config.indirect_checks, self._next_seq, rng)
        self.table: MemberTable = self.view.table
        self._suspicions: dict[int, SuspicionTimer] = self.view.suspicions
        self._checks = SuspectChecks()
        self._last_input = -math.inf  # when we last processed anything (to notice we were paused)
        self._round: _ProbeRound | None = None
        self._relays = ProbeRelays(me, self.table, config.indirect_probe_timeout, self._next_seq)
        self._seq = 0
        self._next_probe_at: float | None = None  # set by the first tick
        self._next_dead_probe_at = 0.0
        # Announce ourselves: our incarnation overrides whatever the group remembers of us.
        self.broadcasts.put(self.view.own_alive())

    # ------------------------------------------------------------ queries

    @property
    def incarnation(self) -> int:
        """Our incarnation: raised only by us, to refute a suspicion or death."""
        return self.view.incarnation

    @property
    def left(self) -> bool:
        """Whether we left the group."""
        return self.view.left

    def status_of(self, peer: Peer) -> MemberStatus | None:
        """What we believe of ``peer`` (None: never heard of it)."""
        if peer.node_id == self.me.node_id:
            return LEFT if self.left else ALIVE
        member = self.table.get(peer)
        return None if member is None else member.status

    def members(self) -> list[Member]:
        """Every member we heard of (ourselves excluded)."""
        return list(self.table)

    def suspicion_timer(self, peer: Peer) -> SuspicionTimer | None:
        """The running suspicion of ``peer``, if it is SUSPECT."""
        return self._suspicions.get(peer.node_id)

    @property
    def probe_in_flight(self) -> Peer | None:
        """The target of our current probe while it has not been acked."""
        r = self._round
        return None if r is None or r.acked else r.target

    def next_deadline(self) -> float:
        """When ``tick`` has something to do next (0.0 before the first tick: tick at once)."""
        if self._next_probe_at is None:
            return 0.0
        best = float("inf")
        if not self.left:
            best = self._next_probe_at
            if self.config.dead_probe_interval and self._next_dead_probe_at < best:
                best = self._next_dead_probe_at
        r = self._round
        if r is not None:
            best = min(best, r.timeout_at if not r.acked and r.helpers is None else r.period_end)
        best = min(best, self._relays.next_deadline(), self.claims.next_deadline())
        if self._suspicions:
            lead = self._verify_lead()
            for node_id, suspicion in self._suspicions.items():
                best = min(best, self._checks.next_due(node_id, suspicion, lead))
        return best

    # ------------------------------------------------------------ inputs

    def set_neighbours(self, peers: Iterable[Peer], now: float) -> list[SwimAction]:
        """The ring's current neighbours (successors, predecessor, fingers): the probe targets.

        Neighbours we never heard of join the member table.
        """
        added = self._scheduler.set_neighbours(peers)
        actions: list[SwimAction] = []
        for peer in added:
            actions += self.heard_from(peer, now)
        return actions

    def heard_from(self, peer: Peer, now: float) -> list[SwimAction]:
        """The ring got a message from ``peer``: a member we did not know joins the table ALIVE.

        Its incarnation is unknown, so it is taken as 0; the member's own ALIVE
        announcement, at its true incarnation, overrides that.
        """
        if peer.node_id == self.me.node_id or self.table.get(peer) is not None:
            return []
        return self._apply(MemberUpdate(peer, ALIVE, 0), now, "heard from")

    def tick(self, now: float) -> list[SwimAction]:
        """Do what is due: nacks of relayed probes, indirect probes, suspicions, deaths, the next probe."""
        # Woken up late?  Our process was paused (GC, swap, a stopped VM) past a deadline:
        # the acks and refutations that came meanwhile wait in our socket, unread.
        # Whatever expired during the pause says nothing about the others (Lifeguard).
        due = self.next_deadline()
        paused = self._next_probe_at is not None and now - max(due, self._last_input) > self.config.late_tick_limit
        self._last_input = now
        if paused:
            return self._woke_up(now)
        if self._next_probe_at is None:
            # Stagger the first probe so members started together do not probe in step.
            self._next_probe_at = now + self._rng.random() * self.config.probe_interval
            self._next_dead_probe_at = now + self._rng.random() * self.config.dead_probe_interval
        actions: list[SwimAction] = []
        if self._relays:
            actions += self._relays.expire(now)
        r = self._round
        if r is not None:
            if not r.acked and r.helpers is None and r.timeout_at <= now < r.period_end:
                actions += self._ask_helpers(r)
            if now >= r.period_end:
                self._round = None
                actions += self._finish(r, now)
        if self._suspicions:
            actions += self._decide_suspicions(now)
        if self.claims:
            actions += self._check_claims(now)
        self.view.reap(now)
        if not self.left:
            if self._round is None and now >= self._next_probe_at:
                actions += self._start_probe(now)
            if self.config.dead_probe_interval and now >= self._next_dead_probe_at:
                actions += self._probe_the_dead(now)
        return actions

    def receive(self, sender: Peer, message: SwimMessage, now: float) -> list[SwimAction]:
        """Handle a SWIM message from ``sender`` (as its transport authenticated it)."""
        self._last_input = now
        if isinstance(message, Probe):
            return [Send(sender, Ack(message.seq))]
        if isinstance(message, Ack):
            return self._acked(sender, message.seq)
        if isinstance(message, ProbeRequest):
            return list(self._relays.request(sender, message, now))
        if isinstance(message, Nack):
            r = self._round
            if r is not None and r.seq == message.seq and r.helpers and any(h.node_id == sender.node_id for h in r.helpers):
                r.nacks.add(sender.node_id)
            return []
        raise TypeError(f"not a SWIM message: {message!r}")

    def receive_piggyback(self, sender: Peer, items: Sequence[Piggyback], now: float) -> list[SwimAction]:
        """Apply the rumours piggybacked on a message from ``sender``; the resulting events."""
        self._last_input = now
        actions: list[SwimAction] = []
        for item in items:
            if isinstance(item, MemberUpdate):
                actions += self._apply(item, now, "gossip", relay=sender)
            else:
                self.sections.receive(item)
        return actions

    def piggyback_for(self, to: Peer, byte_budget: int, size_of: SizeOf) -> tuple[Piggyback, ...]:
        """Rumours for one message to ``to``, within ``byte_budget`` bytes, buddy news first (``GroupView``)."""
        return self.view.piggyback_for(to, byte_budget, size_of)

    def leave(self, now: float) -> list[SwimAction]:
        """Leave the group gracefully: gossip LEFT for ourselves and stop probing.

        The LEFT update rides on one probe to each neighbour (their acks are not
        awaited) and on whatever we send until we stop.
        """
        self.view.left = True
        self._round = None
        self.broadcasts.put(self.trust.sign_rumour(MemberUpdate(self.me, LEFT, self.incarnation)))
        targets = [p for p in self._scheduler.neighbours if self._probeable(p)]
        return [Send(p, Probe(self._next_seq())) for p in targets]

    # ------------------------------------------------------------ probing

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _probeable(self, peer: Peer) -> bool:
        member = self.table.get(peer)
        return member is None or member.status not in GONE

    def _start_probe(self, now: float) -> list[SwimAction]:
        target = self._scheduler.next_target(self._probeable)
        interval = self.health.scale(self.config.probe_interval)
        self._next_probe_at = now + interval
        if target is None:
            return []
        seq = self._next_seq()
        self._round = _ProbeRound(target, seq, now + self.health.scale(self.config.probe_timeout), now + interval)
        return [Send(target, Probe(seq)), DirectProbeSent(target)]

    def _ask_helpers(self, r: _ProbeRound) -> list[SwimAction]:
        candidates = [p for p in self.table.peers(ALIVE) if p.node_id != r.target.node_id]
        helpers = self._rng.sample(candidates, min(self.config.indirect_checks, len(candidates)))
        r.helpers = tuple(helpers)
        return [Send(helper, ProbeRequest(r.seq, r.target)) for helper in helpers]

    def _acked(self, sender: Peer, seq: int) -> list[SwimAction]:
        if self.claims:
            direct = self.claims.answers(sender, seq)
            if self.claims.acked(sender, seq):  # a DEAD claim refuted by the member's (or a helper's) answer
                return [DirectProbeAcked(sender)] if direct else []
        r = self._round
        if r is not None and r.seq == seq:
            direct = sender.node_id == r.target.node_id
            if direct or (r.helpers and any(h.node_id == sender.node_id for h in r.helpers)):
                if not r.acked:
                    r.acked = True
                    self.health.apply(-1, "probe acked")
                if direct and not r.answered:  # the target's own answer (a relayed one proves less)
                    r.answered = True
                    return [DirectProbeAcked(r.target)]
                return []
        return list(self._relays.acked(sender, seq))  # [] for an ack we never asked for, or too late

    def _finish(self, r: _ProbeRound, now: float) -> list[SwimAction]:
        """The probe period ended: nothing to do if acked, else local health and suspicion."""
        target_id = r.target.node_id
        if r.acked:
            self._checks.acked(target_id)
            return []
        self._checks.ended(target_id)
        if r.helpers:
            missed = len(r.helpers) - len(r.nacks)
            if missed:
                self.health.apply(missed, "missed nacks")
        else:
            self.health.apply(1, "probe failed")
        member = self.table.get(r.target)
        if member is None or member.status in GONE or self.left:
            return []
        accusation = self.trust.sign_rumour(MemberUpdate(member.peer, SUSPECT, member.incarnation, self.me))
        before = self._suspicions.get(target_id)
        already_accused = before is not None and self.me.node_id in before.accusers
        actions = self._apply(accusation, now, "probe failed")
        if target_id in self._suspicions:
            self._checks.failed(target_id, now)
            if not already_accused:
                # Our accusation is news (a new suspicion, or one more independent
                # confirmation): push it, so every member's timer hears all accusers.
                actions += self._announce(member.peer)
        return actions

    def _verify_lead(self) -> float:
        """How long before a suspicion's deadline we check the suspect ourselves: two probe periods."""
        return 2 * self.health.scale(self.config.probe_interval)

    def _decide_suspicions(self, now: float) -> list[SwimAction]:
        """Check suspects ourselves as their deadlines near; declare DEAD those we could not reach (``suspect_checks.py``)."""
        actions: list[SwimAction] = []
        lead = self._verify_lead()
        for node_id, suspicion in list(self._suspicions.items()):
            member = self.table.get_by_id(node_id)
            if member is None:
                continue
            verdict = self._checks.verdict(node_id, suspicion, now, lead)
            if verdict is Verdict.CHECK:
                self._scheduler.probe_next(member.peer)
            elif verdict is Verdict.DEAD:
                actions += self._declare_dead(member.peer, member.incarnation, now, "suspicion expired")
        return actions

    def _declare_dead(self, peer: Peer, incarnation: int, now: float, reason: str) -> list[SwimAction]:
        """Our own conclusion: ``peer`` is DEAD (signed by us as its accuser), pushed to k members."""
        death = self.trust.sign_rumour(MemberUpdate(peer, DEAD, incarnation, self.me))
        return self._apply(death, now, reason) + self._announce(peer)

    def _death_claim(self, peer: Peer) -> list[SwimAction]:
        """Gossip says ``peer`` (live to us) is DEAD: check it with a probe of our own (``death_claims.py``)."""
        if self.left:
            return []
        timeout, period = self.health.scale(self.config.probe_timeout), self.health.scale(self.config.probe_interval)
        sends: list[SwimAction] = list(self.claims.claim(peer, self._last_input, timeout, period))
        return sends + [DirectProbeSent(peer)] if sends else []

    def _check_claims(self, now: float) -> list[SwimAction]:
        """Indirect probes for claims our direct probe did not settle; DEAD for those nobody could reach."""
        sends, unanswered = self.claims.tick(now, self.table.peers(ALIVE))
        actions: list[SwimAction] = list(sends)
        for peer in unanswered:
            member = self.table.get(peer)
            if member is not None and member.status not in GONE and not self.left:
                actions += self._declare_dead(member.peer, member.incarnation, now, "claimed dead, and our probe failed")
        return actions

    def _announce(self, subject: Peer) -> list[SwimAction]:
        """Push our news about ``subject`` (an accusation, a death) to k random ALIVE members at once.

        Untracked probes whose piggyback leads with it (nothing queued was sent
        fewer times); so every member's suspicion timer starts, and ends, near ours.
        """
        candidates = [p for p in self.table.peers(ALIVE) if p.node_id != subject.node_id]
        chosen = self._rng.sample(candidates, min(self.config.indirect_checks, len(candidates)))
        return [Send(peer, Probe(self._next_seq())) for peer in chosen]

    def _suspected(self, peer: Peer) -> None:
        """Gossip says a neighbour of ours is SUSPECT: probe it next (a probe we make anyway, out of turn)."""
        if self._scheduler.is_neighbour(peer):
            self._scheduler.probe_next(peer)

    def _woke_up(self, now: float) -> list[SwimAction]:
        """The first tick after a pause: the probe in flight is inconclusive (its ack may wait unread), LHM + 1;
        relayed probes get no nack (a silence we did not witness); the next probe starts at once."""
        self.health.apply(1, "woke up late")
        self.claims.drop_all()
        if self._round is not None:
            self._checks.ended(self._round.target.node_id)
        self._round = None
        self._relays.drop_expired(now)
        if self._next_probe_at is not None:
            self._next_probe_at = min(self._next_probe_at, now)
        return []

    def _probe_the_dead(self, now: float) -> list[SwimAction]:
        """Probe one random DEAD member; gossip one random ALIVE member again (news only to whoever missed it)."""
        self._next_dead_probe_at = now + self.config.dead_probe_interval
        alive = [m for m in self.table if m.status is ALIVE]
        if alive:
            rumour = self._rng.choice(alive).rumour
            if rumour is not None and rumour.status is ALIVE:
                self.view.spread(rumour)  # its own signed ALIVE: we cannot sign for it
        dead = self.table.peers(DEAD)
        if not dead:
            return []
        # Untracked: its ack is ignored; a live "dead" member answers by refuting.
        return [Send(self._rng.choice(dead), Probe(self._next_seq()))]

    def _apply(self, update: MemberUpdate, now: float, reason: str, relay: Peer | None = None) -> list[SwimAction]:
        """Apply one update (``GroupView.apply``); a member no longer SUSPECT needs no more checks of ours."""
        actions = self.view.apply(update, now, reason, relay)
        node_id = update.peer.node_id
        if node_id not in self._suspicions:
            self._checks.forget(node_id)
        return actions
