"""One ring member: Chord routing, SWIM membership and the key space, composed as one sans-IO core.

``RingMember`` owns a ``ChordNode`` (routing), a ``Membership`` (failure detection and gossip) and a
``KeySpace`` (replicated records).  Like them it never sends, sleeps or reads a clock: every input takes
``now`` and returns actions -- ``Transmit`` an envelope -- and outcomes for its owner: ``LookupDone``,
``PutDone``, ``GetDone``, membership events (``MemberDied``...), ``Joined``, ``JoinFailed``, and
``DirectReceived`` (a ``Direct`` message for a service above the ring; ``send_direct`` sends one, never
piggybacked).  The Twisted edge (``ring_service.py``) and ``tests/support/ring_sim.py`` drive it alike.

How the parts are wired:

* Every message any part sends goes out in an ``Envelope`` carrying as many membership rumours
  and gossip items as fit in ``piggyback_bytes``.  Every envelope received first tells membership
  it heard from the sender and applies its rumours, then goes to the part its body belongs to.
* After each step, if the routing state changed, membership gets the new neighbours (whom it
  probes) and the key space the new predecessor and successors (whom it replicates to).
* Membership drives routing: Chord's check_predecessor is SWIM's probing of the predecessor (it is one of
  the neighbours probed, directly and indirectly, so one lost ping does not clear it); a member declared DEAD
  or LEFT is forgotten by Chord (and is what the RM turns into a LOST node); a member that comes ALIVE is
  *considered* by Chord, which is how two rings merge again after a partition heals and how a node left
  alone finds the others.
* ``put``/``get`` first look the key's owner up through Chord, then ask the key space; a put refused by a
  node that is no longer the owner is retried after a fresh lookup (``MAX_KEY_ATTEMPTS`` times).
* ``join`` tries a list of peers in order (the neighbour log's, then the introducers).
* **Outsiders cannot steer it** (``ring_trust.py``): an envelope whose sender's key fails the key puzzle or
  shows no valid work is dropped whole (so such an id never joins, is never taken as a neighbour, never
  gossiped about); rumours and records are signed and checked by membership and the key space; each peer's
  rumours, puts and direct messages (``direct_limits.py``: before any handler) are rate limited; drops in ``refused``.
* **Uptime witnessing** (``uptime_watch.py``): membership's evidence of our direct probes goes to
  our witness (successors and predecessor only); ``attestations_due``/``flush_attestations``.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.logger import Logger

from cortex_rm.accounting.attestations import Attestation
from cortex_rm.dht import kv_messages, swim_messages
from cortex_rm.dht.chord import ChordNode
from cortex_rm.dht.chord_lookups import Joined, JoinFailed, LookupDone
from cortex_rm.dht.chord_messages import ChordMessage
from cortex_rm.dht.direct_limits import DirectLimit
from cortex_rm.dht.direct_messages import Direct, DirectReceived
from cortex_rm.dht.envelope import Envelope, Send
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.key_space import KeySpace
from cortex_rm.dht.kv_messages import KeySpaceMessage
from cortex_rm.dht.kv_operations import GetDone, PutDone
from cortex_rm.dht.member_table import MemberDied, MemberJoined, MemberLeft, MembershipEvent
from cortex_rm.dht.membership import Membership, SwimAction
from cortex_rm.dht.neighbour_log import NeighbourRecord
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.probe_evidence import DirectProbeAcked, DirectProbeSent
from cortex_rm.dht.rate_limits import PeerRateLimit
from cortex_rm.dht.record_store import RecordStore, record_error
from cortex_rm.dht.refusals import RATE_LIMITED_DIRECT, RATE_LIMITED_PUTS, RATE_LIMITED_RUMOURS, Refusals
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_math import distance, key_id
from cortex_rm.dht.ring_trust import OpenTrust, RingTrust
from cortex_rm.dht.uptime_watch import UptimeWatch
from cortex_rm.dht.write_policy import WritePolicy
from cortex_rm.dht.swim_messages import MemberStatus, Piggyback, SwimMessage

log = Logger()

MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000
"""Incarnations and record versions are (at most) milliseconds since the epoch, counted up from there; a stamp
more than a day ahead of our clock is a lie or a broken clock.  An envelope carrying one is dropped: accepted,
it would let one member pin a key or a suspicion for good, and counting up from 2**63 - 1 cannot be encoded."""

MAX_KEY_ATTEMPTS = 3
"""Lookups a put or get makes before it gives up on a ring that keeps moving."""

PiggybackSize = Callable[[Piggyback], int]
"""The bytes a rumour adds to an envelope on the wire (the wire's codec knows: ``internal.ring_codec.piggyback_size``)."""


@dataclass(frozen=True)
class Transmit:
    """Action: send ``envelope`` to ``to``."""

    to: Peer
    envelope: Envelope


RingAction = Transmit | LookupDone | PutDone | GetDone | MembershipEvent | Joined | JoinFailed | DirectReceived


@dataclass
class _KeyOperation:
    """A put or get in progress: its lookup, then its key-space request."""

    op_id: int
    kind: str  # "put" or "get"
    key: str
    value: bytes
    attempts: int = 0


@dataclass(frozen=True)
class RingView:
    """A member's picture of the ring, for ``cortex-rm ring`` and the status page."""

    me: Peer
    state: RingState
    incarnation: int
    predecessor: Peer | None
    successors: tuple[Peer, ...]
    finger_count: int
    members: tuple[tuple[Peer, MemberStatus, int], ...]
    records: int
    refusals: Refusals = Refusals()
    verified: frozenset[Peer] = frozenset()  # members whose address our own dials proved (RingService: address_proofs)


class RingMember:
    """One node's part of the ring; every step returns what to transmit and what happened."""

    def __init__(
        self,
        me: Peer,
        config: RingConfig,
        rng: random.Random,
        *,
        piggyback_size: PiggybackSize,
        incarnation: int = 0,
        store: RecordStore | None = None,
        trust: RingTrust | None = None,
        policy: WritePolicy | None = None,
    ) -> None:
        self.me = me
        self.trust: RingTrust = trust if trust is not None else OpenTrust(me.node_id)
        self.config = config
        self.piggyback_size = piggyback_size
        self.chord = ChordNode(
            me.node_id,
            me.address,
            successor_list_length=config.successor_list_length,
            request_timeout=config.request_timeout,
        )
        self.membership = Membership(me, config.swim, rng, incarnation=incarnation, trust=self.trust)
        self.keys = KeySpace(me, config.replicas, config.request_timeout, store=store, trust=self.trust, policy=policy)
        self.rumour_limit = PeerRateLimit(config.rumour_rate, config.rumour_burst)
        self.put_limit = PeerRateLimit(config.put_rate, config.put_burst)
        self.direct_limit = DirectLimit.of(me, config)  # checked before a Direct reaches its handler
        self.uptime = UptimeWatch(me.node_id, config.witness_config())  # witnessing from ``start``
        self.refused: Counter[str] = Counter()  # envelopes (or parts) dropped here, by reason
        self._rng = rng
        self._ids = itertools.count(1)
        self._operations: dict[int, _KeyOperation] = {}
        self._by_lookup: dict[int, int] = {}  # chord lookup id -> operation id
        self._by_request: dict[int, int] = {}  # key-space op id -> operation id
        self._join_queue: list[Peer] = []
        self._routing: tuple[object, ...] = ()
        self._departed: set[int] = set()  # ring ids of members declared dead or left (and not back yet)
        self._due: dict[str, float] = {}  # periodic job -> next time

    # ------------------------------------------------------------ commands

    def start(self, now: float) -> list[RingAction]:
        """Begin periodic maintenance (as a ring of one until ``join``)."""
        intervals = self._intervals()
        self._due = {job: now + self._rng.random() * interval for job, interval in intervals.items()}
        self.uptime.start(now)
        return self._sync(now)

    def join(self, peers: Sequence[Peer], now: float) -> list[RingAction]:
        """Join the ring through the first of ``peers`` that answers (in order)."""
        self._join_queue = [p for p in peers if p.node_id != self.me.node_id]
        if not self._join_queue:
            return [JoinFailed(self.me)]
        return self._try_next_introducer(now)

    def lookup(self, key: int, now: float) -> tuple[int, list[RingAction]]:
        """Look up the owner of ring point ``key``; a ``LookupDone`` with the returned id ends it."""
        lookup_id, actions = self.chord.lookup(key, now)
        return lookup_id, self._chord_actions(actions, now)

    def put(self, key: str, value: bytes, now: float) -> tuple[int, list[RingAction]]:
        """Store ``value`` under ``key``; a ``PutDone`` with the returned id ends it."""
        return self._start_operation("put", key, value, now)

    def get(self, key: str, now: float) -> tuple[int, list[RingAction]]:
        """Read ``key``; a ``GetDone`` with the returned id ends it (record None: nobody has it)."""
        return self._start_operation("get", key, b"", now)

    def leave(self, now: float) -> list[RingAction]:
        """Leave gracefully: hand our records to the successor, tell the neighbours, gossip LEFT."""
        actions = self._keyspace_actions(self.keys.hand_off(now), now)
        actions += self._membership_actions(self.membership.leave(now), now)
        actions += self._chord_actions(self.chord.leave(now), now)
        self._due.clear()
        return actions

    # ------------------------------------------------------------ inputs

    def receive(self, envelope: Envelope, now: float) -> list[RingAction]:
        """Handle an envelope the transport authenticated (``sender`` matches its certificate)."""
        if self.chord.state is RingState.LEFT:
            return []
        stamp = _highest_stamp(envelope)
        if stamp > now * 1000 + MAX_CLOCK_SKEW_MS:
            log.warn(
                "ring {me} dropped a {body} from {sender}: it carries the stamp {stamp}, more than a day ahead",
                me=self.me.short(),
                body=type(envelope.body).__name__,
                sender=envelope.sender.short(),
                stamp=stamp,
            )
            return []
        sender, body = envelope.sender, envelope.body
        error = self.trust.sender_error(sender.node_id, envelope.sender_key, envelope.work)
        if error is not None:
            self.refused[error] += 1
            if self.refused[error] == 1:
                log.warn("ring {me} drops envelopes from {sender}: {error}", me=self.me.short(), sender=sender.short(), error=error)
            return []
        if isinstance(body, kv_messages.PutRecord) and not self.put_limit.allow(sender.node_id, now):
            self.refused[RATE_LIMITED_PUTS] += 1
            busy = kv_messages.PutReply(body.request_id, None, "rate limited: too many puts from you; retry later")
            return [self._transmit(Send(sender, busy))]
        if isinstance(body, Direct) and not self.direct_limit.allow(sender, len(body.body), now):
            self.refused[RATE_LIMITED_DIRECT] += 1  # dropped whole, unread (its rumours too: there are none honestly)
            return []
        actions = self._membership_actions(self.membership.heard_from(sender, now), now)
        if envelope.piggyback:
            if self.rumour_limit.allow(sender.node_id, now, len(envelope.piggyback)):
                actions += self._membership_actions(self.membership.receive_piggyback(sender, envelope.piggyback, now), now)
            else:
                self.refused[RATE_LIMITED_RUMOURS] += len(envelope.piggyback)
        if isinstance(body, SwimMessage):
            actions += self._membership_actions(self.membership.receive(sender, body, now), now)
        elif isinstance(body, ChordMessage):
            actions += self._chord_actions(self.chord.receive(sender, body, now), now)
        elif isinstance(body, KeySpaceMessage):
            actions += self._keyspace_actions(self.keys.receive(sender, body, now), now)
        elif isinstance(body, Direct):
            actions.append(DirectReceived(sender, body))
        return actions + self._sync(now)

    def tick(self, now: float) -> list[RingAction]:
        """Do what is due: expiries, probes, stabilization, fingers, anti-entropy."""
        if self.chord.state is RingState.LEFT:
            return []
        actions = self._chord_actions(self.chord.expire(now), now)
        actions += self._keyspace_actions(self.keys.expire(now), now)
        actions += self._membership_actions(self.membership.tick(now), now)
        intervals = self._intervals()
        for job, due in list(self._due.items()):
            if due > now:
                continue
            self._due[job] = now + intervals[job]
            if job == "stabilize":
                actions += self._chord_actions(self.chord.stabilize(now), now)
            elif job == "fix_fingers":
                actions += self._chord_actions(self.chord.fix_fingers(now), now)
            elif job == "replicate":
                actions += self._keyspace_actions(self.keys.replicate(now), now)
        return actions + self._sync(now)

    def next_deadline(self, now: float) -> float:
        """When ``tick`` should run next (at most ``tick_interval`` from ``now``)."""
        deadlines = [now + self.config.tick_interval, self.membership.next_deadline(), *self._due.values()]
        return max(now, min(deadlines))

    def attestations_due(self, now: float) -> list[Attestation]:
        """What our uptime witness has to sign now (``UptimeWitness.attestations_due``), unsigned."""
        return self.uptime.due(now)

    def flush_attestations(self, now: float) -> list[Attestation]:
        """Everything our witness saw and did not attest yet (a clean stop), unsigned."""
        return self.uptime.flush(now)

    # ------------------------------------------------------------ views

    def neighbour_record(self, wall_time: float) -> NeighbourRecord:
        """What to write to the neighbour log now (``wall_time``: seconds since the epoch)."""
        fingers = tuple(dict.fromkeys(f for f in self.chord.fingers if f is not None))
        return NeighbourRecord(wall_time, self.me.node_id, self.chord.successor_list, self.chord.predecessor, fingers)

    def view(self) -> RingView:
        """The ring as this member sees it."""
        members = tuple(sorted((m.peer, m.status, m.incarnation) for m in self.membership.members()))
        return RingView(
            me=self.me,
            state=self.chord.state,
            incarnation=self.membership.incarnation,
            predecessor=self.chord.predecessor,
            successors=self.chord.successor_list,
            finger_count=len({f for f in self.chord.fingers if f is not None}),
            members=members,
            records=len(self.keys.store),
            refusals=Refusals.of(
                self.refused, self.membership.view.refused, self.membership.sections.refused,
                self.keys.gate.refused, self.membership.claims.refuted,
            ),
        )

    # ------------------------------------------------------------ internals

    def _intervals(self) -> dict[str, float]:
        c = self.config
        return {"stabilize": c.stabilize_interval, "fix_fingers": c.fix_fingers_interval, "replicate": c.replicate_interval}

    def send_direct(self, to: Peer, message: Direct) -> Transmit:
        """The envelope that carries ``message`` straight to ``to``, with no rumours on it."""
        return Transmit(to, Envelope(self.me, message, (), self.trust.work))

    def _transmit(self, send: Send) -> Transmit:
        rumours = self.membership.piggyback_for(send.to, self.config.piggyback_bytes, self.piggyback_size)
        return Transmit(send.to, Envelope(self.me, send.message, rumours, self.trust.work))

    def _try_next_introducer(self, now: float) -> list[RingAction]:
        if not self._join_queue:
            return [JoinFailed(self.me)]
        introducer = self._join_queue.pop(0)
        return self._chord_actions(self.chord.join(introducer, now), now)

    def _chord_actions(self, actions: Sequence[object], now: float) -> list[RingAction]:
        out: list[RingAction] = []
        for action in actions:
            if isinstance(action, Send):
                out.append(self._transmit(action))
            elif isinstance(action, LookupDone):
                out += self._lookup_done(action, now)
            elif isinstance(action, JoinFailed):
                out += self._try_next_introducer(now)
            elif isinstance(action, Joined):
                self._join_queue = []
                out.append(action)
        return out

    def _membership_actions(self, actions: Sequence[SwimAction], now: float) -> list[RingAction]:
        out: list[RingAction] = []
        for action in actions:
            if isinstance(action, Send):
                out.append(self._transmit(action))
                continue
            if isinstance(action, (DirectProbeSent, DirectProbeAcked)):  # ours: not a membership event
                self.uptime.observe(action, now, self.chord, self.membership.table)
                continue
            if isinstance(action, (MemberDied, MemberLeft)):
                self.chord.forget(action.peer)
                self._departed.add(action.peer.node_id)
            elif isinstance(action, MemberJoined) and action.peer.node_id in self._departed:
                # Back from the dead (a healed partition, a restart): the rings may
                # have split while it was away; take it in where it belongs.
                self._departed.discard(action.peer.node_id)
                self.chord.consider(action.peer)
            out.append(action)
        return out

    def _keyspace_actions(self, actions: Sequence[object], now: float) -> list[RingAction]:
        out: list[RingAction] = []
        for action in actions:
            if isinstance(action, Send):
                out.append(self._transmit(action))
            elif isinstance(action, (PutDone, GetDone)):
                out += self._request_done(action, now)
        return out

    def _sync(self, now: float) -> list[RingAction]:
        """Tell membership and the key space about routing changes since the last step."""
        chord = self.chord
        if chord.state is RingState.ALONE and not self._join_queue:
            # Alone (a failed join, every peer lost) while membership knows live
            # members: take the nearest as successor; stabilization does the rest.
            alive = self.membership.table.peers(MemberStatus.ALIVE)
            if alive:
                chord.consider(min(alive, key=lambda p: distance(self.me.node_id, p.node_id)))
        routing = (chord.predecessor, chord.successor_list, chord.fingers)
        if routing == self._routing:
            return []
        self._routing = routing
        neighbours = [*chord.successor_list, *([chord.predecessor] if chord.predecessor else [])]
        neighbours += [f for f in chord.fingers if f is not None]
        actions = self._membership_actions(self.membership.set_neighbours(dict.fromkeys(neighbours), now), now)
        if chord.state is not RingState.JOINING:
            actions += self._keyspace_actions(self.keys.set_ring(chord.predecessor, chord.successor_list, now), now)
        return actions

    # key operations: lookup, then the key-space request, retried on a moved ring

    def _start_operation(self, kind: str, key: str, value: bytes, now: float) -> tuple[int, list[RingAction]]:
        op = _KeyOperation(next(self._ids), kind, key, value)
        self._operations[op.op_id] = op
        error = record_error(key, value)
        if error is not None:  # refused here, before any lookup: it would be refused at the owner
            return op.op_id, self._fail(op, error)
        return op.op_id, self._look_up_owner(op, now)

    def _look_up_owner(self, op: _KeyOperation, now: float) -> list[RingAction]:
        op.attempts += 1
        lookup_id, actions = self.chord.lookup(key_id(op.key), now)
        self._by_lookup[lookup_id] = op.op_id
        return self._chord_actions(actions, now)

    def _lookup_done(self, done: LookupDone, now: float) -> list[RingAction]:
        op_id = self._by_lookup.pop(done.lookup_id, None)
        if op_id is None:
            return [done]  # a caller's own lookup
        op = self._operations[op_id]
        if done.owner is None:
            return self._fail(op, f"the owner of {op.key!r} could not be looked up (the ring is changing); try again")
        if op.kind == "put":
            request_id, actions = self.keys.put(op.key, op.value, done.owner, now)
        else:
            request_id, actions = self.keys.get(op.key, done.owner, now)
        self._by_request[request_id] = op_id
        return self._keyspace_actions(actions, now)

    def _request_done(self, done: PutDone | GetDone, now: float) -> list[RingAction]:
        op_id = self._by_request.pop(done.op_id, None)
        if op_id is None:
            return []
        op = self._operations[op_id]
        if done.error and op.attempts < MAX_KEY_ATTEMPTS:
            log.debug("ring {key} {kind} retried: {error}", key=op.key, kind=op.kind, error=done.error)
            return self._look_up_owner(op, now)
        del self._operations[op_id]
        if isinstance(done, PutDone):
            return [PutDone(op_id, op.key, done.record, done.error)]
        return [GetDone(op_id, op.key, done.record, done.error)]

    def _fail(self, op: _KeyOperation, error: str) -> list[RingAction]:
        del self._operations[op.op_id]
        if op.kind == "put":
            return [PutDone(op.op_id, op.key, None, error)]
        return [GetDone(op.op_id, op.key, None, error)]


def _highest_stamp(envelope: Envelope) -> int:
    """The highest incarnation or record version an envelope carries (0 when none)."""
    stamps = [item.incarnation for item in envelope.piggyback if isinstance(item, swim_messages.MemberUpdate)]
    body = envelope.body
    if isinstance(body, kv_messages.StoreReplicas):
        stamps += [record.version for record in body.records]
    elif isinstance(body, (kv_messages.PutReply, kv_messages.GetReply)) and body.record is not None:
        stamps.append(body.record.version)
    elif isinstance(body, kv_messages.PutRecord):
        stamps.append(body.record.version)
    elif isinstance(body, kv_messages.ReplicaDigest):
        stamps += [version for _, version in body.entries]
    return max(stamps, default=0)
