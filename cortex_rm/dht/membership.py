"""SWIM failure detection with Lifeguard, as a sans-IO core over a member's ring neighbours.

``Membership`` never sends, sleeps or reads a clock.  Every input is a method that
takes ``now`` (seconds, from the caller's clock) and returns a list of actions
(``Send``) and membership events (``MemberJoined``, ``MemberSuspected``,
``MemberAlive``, ``MemberDied``, ``MemberLeft``).  The ring member calls
``tick(now)`` at ``next_deadline()`` (or more often), hands it every SWIM message
(``receive``), every piggyback (``receive_piggyback``) and the sender of every
message (``heard_from``), and asks it for rumours to piggyback on whatever it
sends (``piggyback_for``).

The protocol (Das et al., "SWIM", 2002; Dadgar et al., "Lifeguard", 2018; the
defaults of hashicorp memberlist, see ``SwimConfig``):

1. **Probe.**  Once per probe interval a member probes the next of its ring
   neighbours (``ProbeScheduler``: round robin over a shuffled list): ``Probe(seq)``,
   answered by ``Ack(seq)``.
2. **Indirect probe.**  With no ack after the probe timeout, it asks k random
   other ALIVE members to probe the target for it (``ProbeRequest``).  Each helper
   probes the target and forwards its ack, or answers ``Nack`` if the target did
   not answer within ``indirect_probe_timeout``.
3. **Suspect.**  With no ack at all by the end of the probe period, the target
   becomes SUSPECT and the suspicion is gossiped, naming us as accuser.
4. **Refute or die.**  A suspect that hears of its suspicion (gossip reaches it;
   the *buddy system* puts the suspicion first on every message we send to a
   suspect) raises its incarnation and gossips ALIVE, which overrides the
   suspicion.  If the suspicion timer expires first, the member is DEAD, gossiped.
   The timer starts long and shortens with independent confirmations
   (``suspicion.py``); a death is final for its incarnation.
5. **Local health.**  Failed probes, missed nacks and refutations of ourselves
   raise our local health multiplier, acked probes lower it; the probe interval
   and timeout scale by ``1 + LHM`` (``local_health.py``).
6. **Gossip** rides on every message (``piggyback.py``): each update we newly
   apply is queued again (infection style) and sent ``retransmit_limit`` times.

Partitions.  A partition that outlasts the suspicion timeout gets both sides
declared DEAD by the other.  That is deliberate: the ring must route around
members it cannot reach.  Once the partition heals, every member probes one
random DEAD member every ``dead_probe_interval``; the probe carries the news of
the death (buddy system), the dead member refutes it with a higher incarnation,
and its ALIVE update brings it back (``MemberJoined``) everywhere.

A restarted member starts at an incarnation higher than any it used before
(``Membership(..., incarnation=...)``: a persisted counter plus one, or the time
in milliseconds) and announces itself ALIVE, which overrides its old DEAD state.

Messages nobody asked for (an ``Ack`` or ``Nack`` of an unknown or finished
``seq``, or from a member we did not ask) are ignored deliberately: they are late
answers of probes already decided.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.group_view import GroupView, SwimAction
from cortex_rm.dht.local_health import LocalHealth
from cortex_rm.dht.member_table import ALIVE, DEAD, GONE, LEFT, SUSPECT, Member, MemberTable
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.piggyback import BroadcastQueue, GossipSections, SizeOf
from cortex_rm.dht.probe_scheduler import ProbeScheduler
from cortex_rm.dht.suspicion import SuspicionTimer, retransmit_limit
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import Ack, MemberStatus, MemberUpdate, Nack, Piggyback, Probe, ProbeRequest, SwimMessage

__all__ = ["Membership", "SwimAction"]


@dataclass(slots=True)
class _ProbeRound:
    """Our probe of ``target`` in the current probe period."""

    target: Peer
    seq: int
    timeout_at: float
    period_end: float
    acked: bool = False
    helpers: tuple[Peer, ...] | None = None  # None: no indirect probe asked yet
    nacks: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Relay:
    """A probe of ``target`` we make for ``requester`` (its ``seq``)."""

    requester: Peer
    seq: int
    target: Peer
    deadline: float


class Membership:
    """One member's view of the group and its side of SWIM; each step returns actions and events."""

    def __init__(self, me: Peer, config: SwimConfig, rng: random.Random, *, incarnation: int = 0) -> None:
        self.me = me
        self.config = config
        self._rng = rng
        self.health = LocalHealth(config.awareness_max_multiplier, me.short())
        self.broadcasts = BroadcastQueue(config.max_broadcasts, retransmit_limit(config.retransmit_mult, 1))
        self.sections = GossipSections(self.broadcasts, me.short())
        self._scheduler = ProbeScheduler(me, rng)
        self.view = GroupView(me, config, self.health, self.broadcasts, incarnation, self._next_seq, lambda peer: None)
        self.table: MemberTable = self.view.table
        self._suspicions: dict[int, SuspicionTimer] = self.view.suspicions
        self._verifying: set[int] = set()  # suspects we probe before declaring them dead
        self._failed: dict[int, float] = {}  # member -> when our latest probe of it failed
        self._round: _ProbeRound | None = None
        self._relays: dict[int, _Relay] = {}
        self._seq = 0
        self._next_probe_at: float | None = None  # set by the first tick
        self._next_dead_probe_at = 0.0
        # Announce ourselves: our incarnation overrides whatever the group remembers of us.
        self.broadcasts.put(MemberUpdate(me, ALIVE, incarnation))

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
        for relay in self._relays.values():
            best = min(best, relay.deadline)
        for node_id, suspicion in self._suspicions.items():
            if node_id not in self._verifying:
                best = min(best, suspicion.deadline)
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
        if self._next_probe_at is None:
            # Stagger the first probe so members started together do not probe in step.
            self._next_probe_at = now + self._rng.random() * self.config.probe_interval
            self._next_dead_probe_at = now + self._rng.random() * self.config.dead_probe_interval
        actions: list[SwimAction] = []
        if self._relays:
            for seq, relay in list(self._relays.items()):
                if relay.deadline <= now:
                    del self._relays[seq]
                    actions.append(Send(relay.requester, Nack(relay.seq)))
        r = self._round
        if r is not None:
            if not r.acked and r.helpers is None and r.timeout_at <= now < r.period_end:
                actions += self._ask_helpers(r)
            if now >= r.period_end:
                self._round = None
                actions += self._finish(r, now)
        if self._suspicions:
            for node_id, suspicion in list(self._suspicions.items()):
                member = self.table.get_by_id(node_id)
                if not suspicion.expired(now) or member is None or node_id in self._verifying:
                    continue
                failed_at = self._failed.get(node_id)
                if failed_at is not None and now - failed_at <= suspicion.minimum:
                    death = MemberUpdate(member.peer, DEAD, member.incarnation)
                    actions += self._apply(death, now, "suspicion expired")
                else:
                    # No fresh failure of our own (a probe of ours that failed within the
                    # minimum suspicion timeout): probe it before declaring it dead.  Its
                    # refutation may have missed us; the buddy system puts the suspicion
                    # on our probe, and the suspect's ack brings the refutation back.
                    self._verifying.add(node_id)
                    self._scheduler.probe_next(member.peer)
        if not self.left:
            if self._round is None and now >= self._next_probe_at:
                actions += self._start_probe(now)
            if self.config.dead_probe_interval and now >= self._next_dead_probe_at:
                actions += self._probe_the_dead(now)
        return actions

    def receive(self, sender: Peer, message: SwimMessage, now: float) -> list[SwimAction]:
        """Handle a SWIM message from ``sender`` (as its transport authenticated it)."""
        if isinstance(message, Probe):
            return [Send(sender, Ack(message.seq))]
        if isinstance(message, Ack):
            return self._acked(sender, message.seq)
        if isinstance(message, ProbeRequest):
            if message.target.node_id == self.me.node_id:
                return [Send(sender, Ack(message.seq))]
            seq = self._next_seq()
            self._relays[seq] = _Relay(sender, message.seq, message.target, now + self.config.indirect_probe_timeout)
            return [Send(message.target, Probe(seq))]
        if isinstance(message, Nack):
            r = self._round
            if r is not None and r.seq == message.seq and r.helpers and any(h.node_id == sender.node_id for h in r.helpers):
                r.nacks.add(sender.node_id)
            return []
        raise TypeError(f"not a SWIM message: {message!r}")

    def receive_piggyback(self, sender: Peer, items: Sequence[Piggyback], now: float) -> list[SwimAction]:
        """Apply the rumours piggybacked on a message from ``sender``; the resulting events."""
        actions: list[SwimAction] = []
        for item in items:
            if isinstance(item, MemberUpdate):
                actions += self._apply(item, now, "gossip", relay=sender)
            else:
                self.sections.receive(item)
        return actions

    def piggyback_for(self, to: Peer, byte_budget: int, size_of: SizeOf) -> tuple[Piggyback, ...]:
        """Rumours for one message to ``to``, within ``byte_budget`` bytes as ``size_of`` counts them.

        Buddy system: when we believe ``to`` SUSPECT or DEAD, that news goes first,
        so it can refute it.
        """
        member = self.table.get(to)
        if member is None or member.status is ALIVE or member.status is LEFT:
            return tuple(self.broadcasts.take(byte_budget, size_of))
        suspicion = self._suspicions.get(to.node_id)
        accuser = suspicion.accuser if suspicion is not None else None
        buddy = MemberUpdate(member.peer, member.status, member.incarnation, accuser)
        rest = self.broadcasts.take(byte_budget - size_of(buddy), size_of)
        return (buddy, *[item for item in rest if item != buddy])

    def leave(self, now: float) -> list[SwimAction]:
        """Leave the group gracefully: gossip LEFT for ourselves and stop probing.

        The LEFT update rides on one probe to each neighbour (their acks are not
        awaited) and on whatever we send until we stop.
        """
        self.view.left = True
        self._round = None
        self.broadcasts.put(MemberUpdate(self.me, LEFT, self.incarnation))
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
        return [Send(target, Probe(seq))]

    def _ask_helpers(self, r: _ProbeRound) -> list[SwimAction]:
        candidates = [p for p in self.table.peers(ALIVE) if p.node_id != r.target.node_id]
        helpers = self._rng.sample(candidates, min(self.config.indirect_checks, len(candidates)))
        r.helpers = tuple(helpers)
        return [Send(helper, ProbeRequest(r.seq, r.target)) for helper in helpers]

    def _acked(self, sender: Peer, seq: int) -> list[SwimAction]:
        r = self._round
        if r is not None and r.seq == seq and not r.acked:
            if sender.node_id == r.target.node_id or (r.helpers and any(h.node_id == sender.node_id for h in r.helpers)):
                r.acked = True
                self.health.apply(-1, "probe acked")
                return []
        relay = self._relays.get(seq)
        if relay is not None and relay.target.node_id == sender.node_id:
            del self._relays[seq]
            return [Send(relay.requester, Ack(relay.seq))]
        return []  # an ack we never asked for, or too late: ignored

    def _finish(self, r: _ProbeRound, now: float) -> list[SwimAction]:
        """The probe period ended: nothing to do if acked, else local health and suspicion."""
        target_id = r.target.node_id
        self._verifying.discard(target_id)
        if r.acked:
            self._failed.pop(target_id, None)
            return []
        self._failed[target_id] = now
        if r.helpers:
            missed = len(r.helpers) - len(r.nacks)
            if missed:
                self.health.apply(missed, "missed nacks")
        else:
            self.health.apply(1, "probe failed")
        member = self.table.get(r.target)
        if member is None or member.status in GONE or self.left:
            return []
        accusation = MemberUpdate(member.peer, SUSPECT, member.incarnation, self.me)
        return self._apply(accusation, now, "probe failed")

    def _probe_the_dead(self, now: float) -> list[SwimAction]:
        self._next_dead_probe_at = now + self.config.dead_probe_interval
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
            self._verifying.discard(node_id)
            self._failed.pop(node_id, None)
        return actions
