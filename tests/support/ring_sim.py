"""An in-memory, deterministic network of whole ``RingMember`` cores with a fake clock.

A discrete-event simulation: message deliveries and each member's ticks are events
on one timeline, processed in time order (ties in the order they were scheduled),
so a seed replays a scenario exactly.  With ``wire=True`` every message is encoded
and decoded with the real ring codec on the way, so what the cores exchange is what
the wire carries (``bytes_sent`` counts it); ``wire=False`` hands the envelopes over
as they are, several times faster, for scenarios about behaviour, not bytes.

Fault knobs: ``drop_rate`` (each message lost with that chance), ``latency``
(uniform delay range), ``fault`` (a test's own rule: how many copies of each
message arrive, 0 to lose it), ``partition(groups)`` / ``heal()``, ``crash`` (the member
stops; what is sent to it is lost), ``restart`` (a new process with the same
identity and state directory: its neighbour log and a higher incarnation), and
``stall`` (the member's event loop hangs: nothing is processed, timers are late,
and it all happens at once when the stall ends).

Each member's neighbour log is written every ``neighbour_log_interval`` like the
daemon does, into ``neighbour_logs`` (the "disk" that survives a crash).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from cortex_rm.dht.chord_lookups import Joined, LookupDone
from cortex_rm.dht.envelope import Envelope, RingMessage
from cortex_rm.dht.ring_trust import KeyTrust
from cortex_rm.dht.ring_work import key_ok, solve_work
from cortex_rm.dht.write_policy import WritePolicy
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.kv_operations import GetDone, PutDone
from cortex_rm.dht.neighbour_log import NeighbourRecord
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_math import RING_SIZE
from cortex_rm.dht.ring_member import RingAction, RingMember, Transmit
from cortex_rm.internal.ring_codec import decode_envelope, encode_envelope, piggyback_size
from tests.support.ring_oracle import neighbour_errors, true_owner

# A wall clock for neighbour-log timestamps: the simulated time plus an epoch.
EPOCH = 1_790_000_000.0


@dataclass(order=True)
class _Event:
    time: float
    seq: int
    kind: str = field(compare=False)  # "deliver" or "tick"
    address: str = field(compare=False)
    data: object = field(compare=False, default=None)  # encoded bytes, or the Envelope itself
    generation: int = field(compare=False, default=0)


class RingNetwork:
    """Ring members on one simulated timeline, with faults."""

    def __init__(
        self,
        seed: int,
        config: RingConfig | None = None,
        latency: tuple[float, float] = (0.001, 0.010),
        *,
        wire: bool = False,
        signed: bool = False,
    ) -> None:
        self.random = random.Random(seed)
        self.wire = wire
        self.signed = signed  # members hold real keys (ids are their hashes), sign and check everything
        self._trusts: dict[str, KeyTrust] = {}
        self.keys: dict[int, ec.EllipticCurvePrivateKey] = {}  # signed members' keys, by ring id
        self.fault: Callable[[RingMember, Transmit], int] | None = None  # copies to deliver (default 1)
        self.config = config or RingConfig()
        self.latency = latency
        self.now = 0.0
        self.members: dict[str, RingMember] = {}
        self.crashed: set[str] = set()
        self.drop_rate = 0.0
        self.bytes_sent = 0
        self.messages_sent = 0
        self.outcomes: dict[str, list[RingAction]] = {}
        self.neighbour_logs: dict[str, NeighbourRecord] = {}
        self._groups: list[set[str]] | None = None
        self._stalled_until: dict[str, float] = {}
        self._events: list[_Event] = []
        self._seq = 0
        self._tick_generation: dict[str, int] = {}
        self._tick_at: dict[str, float] = {}
        self._log_at: dict[str, float] = {}
        self._incarnations: dict[str, int] = {}

    # ------------------------------------------------------------ members

    def add_member(self, node_id: int | None = None) -> RingMember:
        """A new member (random id unless given), started as a ring of one."""
        address = f"10.0.{len(self.members) // 250}.{len(self.members) % 250 + 1}:7000"
        if self.signed:
            assert node_id is None, "a signed member's id is its key's hash"
            key, spki = self._seeded_key()
            work = solve_work(spki, self.config.work_bits)
            trust = self._trusts[address] = KeyTrust(key, work, self.config.work_bits, self.config.key_bits)
            self.keys[trust.node_id] = key
            return self._start(Peer(trust.node_id, address), incarnation=1)
        if node_id is None:
            node_id = self.random.randrange(RING_SIZE)
        return self._start(Peer(node_id, address), incarnation=1)

    def _seeded_key(self) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """A key (and its DER SPKI) that solves the key puzzle, drawn from the seed: a signed scenario replays too."""
        while True:
            key = ec.derive_private_key(self.random.randrange(1, 2**255), ec.SECP256R1())
            spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            if key_ok(spki, self.config.key_bits):
                return key, spki

    def _start(self, peer: Peer, incarnation: int) -> RingMember:
        member = RingMember(
            peer,
            self.config,
            random.Random(self.random.random()),
            piggyback_size=piggyback_size,
            incarnation=incarnation,
            trust=self._trusts.get(peer.address),
            policy=WritePolicy() if self.signed else None,
        )
        self.members[peer.address] = member
        self._incarnations[peer.address] = incarnation
        self.crashed.discard(peer.address)
        self._log_at[peer.address] = self.now + self.config.neighbour_log_interval
        self._perform(member, member.start(self.now))
        self._schedule_tick(member)
        return member

    def join(self, member: RingMember, introducers: Iterable[RingMember | Peer]) -> None:
        """Start ``member``'s join through ``introducers`` (tried in order)."""
        peers = [i.me if isinstance(i, RingMember) else i for i in introducers]
        self._perform(member, member.join(peers, self.now))

    def crash(self, members: Iterable[RingMember]) -> None:
        """These members' processes die at once (SIGKILL): no goodbye, nothing answered."""
        for member in members:
            self.crashed.add(member.me.address)

    def restart(self, member: RingMember, introducers: Iterable[RingMember] = ()) -> RingMember:
        """Start a crashed member again as a new process with the same identity.

        Like the daemon: a higher incarnation, and it rejoins through its neighbour
        log when the record is fresh, else through ``introducers``.
        """
        address = member.me.address
        incarnation = self._incarnations[address] + 1
        new = self._start(member.me, incarnation)
        record = self.neighbour_logs.get(address)
        candidates = record.rejoin_candidates(EPOCH + self.now, self.config.neighbour_log_max_age) if record else []
        peers = candidates + [i.me for i in introducers]
        if peers:
            self.join(new, peers)
        return new

    def leave(self, member: RingMember) -> None:
        """``member`` leaves gracefully; its goodbyes go out, then the process ends."""
        self._perform(member, member.leave(self.now))
        self.run_for(1.0)
        self.crashed.add(member.me.address)

    def stall(self, member: RingMember, seconds: float) -> None:
        """``member``'s event loop hangs for ``seconds`` from now."""
        self._stalled_until[member.me.address] = self.now + seconds

    def partition(self, groups: Iterable[Iterable[RingMember]]) -> None:
        """Only members in the same group reach each other until ``heal``."""
        self._groups = [{m.me.address for m in group} for group in groups]

    def heal(self) -> None:
        """Every member reaches every other again."""
        self._groups = None

    def inject(self, sender: RingMember, to: RingMember, body: RingMessage) -> None:
        """``body`` from ``sender`` reaches ``to`` now, as if sent (bare: no rumours): a test's flood."""
        work = self._trusts[sender.me.address].work if self.signed else 0
        self._push(_Event(self.now, self._next_seq(), "deliver", to.me.address, Envelope(sender.me, body, (), work)))

    def live(self) -> list[RingMember]:
        """Members that have not crashed or left, in creation order."""
        return [m for a, m in self.members.items() if a not in self.crashed]

    # ------------------------------------------------------------ the timeline

    def _push(self, event: _Event) -> None:
        heapq.heappush(self._events, event)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _schedule_tick(self, member: RingMember) -> None:
        address = member.me.address
        at = member.next_deadline(self.now)
        if self._tick_at.get(address, float("inf")) <= at and self._tick_at.get(address, -1.0) >= self.now:
            return  # a tick at or before that is already scheduled
        generation = self._tick_generation.get(address, 0) + 1
        self._tick_generation[address] = generation
        self._tick_at[address] = at
        self._push(_Event(at, self._next_seq(), "tick", address, generation=generation))

    def _reachable(self, a: str, b: str) -> bool:
        if self._groups is None:
            return True
        return any(a in g and b in g for g in self._groups)

    def _perform(self, member: RingMember, actions: list[RingAction]) -> None:
        address = member.me.address
        for action in actions:
            if isinstance(action, Transmit):
                data: object = action.envelope
                if self.wire:
                    data = encode_envelope(action.envelope)
                    self.bytes_sent += len(data) + 4  # the frame's length prefix
                self.messages_sent += 1
                copies = 1 if self.fault is None else self.fault(member, action)
                if action.to.address in self.crashed or not self._reachable(address, action.to.address):
                    continue
                if self.drop_rate and self.random.random() < self.drop_rate:
                    continue
                delay = self.random.uniform(*self.latency)
                for _ in range(copies):
                    self._push(_Event(self.now + delay, self._next_seq(), "deliver", action.to.address, data))
            else:
                self.outcomes.setdefault(address, []).append(action)

    def _process(self, event: _Event) -> None:
        address = event.address
        if address in self.crashed:
            return
        member = self.members[address]
        stalled = self._stalled_until.get(address, 0.0)
        if stalled > self.now:
            self._push(replace(event, time=stalled))  # handled when the loop wakes, in order
            return
        if event.kind == "deliver":
            envelope = decode_envelope(event.data) if isinstance(event.data, bytes) else event.data
            assert isinstance(envelope, Envelope)
            if envelope.sender.node_id == member.me.node_id:
                return
            sender_trust = self._trusts.get(envelope.sender.address)
            if sender_trust is not None:  # what the TLS listener hands over: the certificate's key
                envelope = replace(envelope, sender_key=sender_trust.spki)
            self._perform(member, member.receive(envelope, self.now))
        else:
            if event.generation != self._tick_generation.get(address):
                return
            self._tick_at.pop(address, None)
            self._perform(member, member.tick(self.now))
            if self.now >= self._log_at[address]:
                self.neighbour_logs[address] = member.neighbour_record(EPOCH + self.now)
                self._log_at[address] = self.now + self.config.neighbour_log_interval
        self._schedule_tick(member)

    def run_for(self, seconds: float) -> None:
        """Process every event up to ``now + seconds``; time ends there."""
        end = self.now + seconds
        while self._events and self._events[0].time <= end:
            event = heapq.heappop(self._events)
            self.now = max(self.now, event.time)
            self._process(event)
        self.now = end

    def run_until(self, done: Callable[[], bool], timeout: float, step: float = 1.0) -> float:
        """Run in ``step``s until ``done()``; the simulated seconds it took (AssertionError past timeout)."""
        started = self.now
        while not done():
            if self.now - started >= timeout:
                raise AssertionError(f"not done after {timeout} simulated seconds: {self.ring_errors()[:5]}")
            self.run_for(step)
        return self.now - started

    # ------------------------------------------------------------ outcomes

    def take_outcomes(self, member: RingMember, kind: type) -> list:
        """Remove and return ``member``'s outcomes of type ``kind`` (LookupDone, PutDone, MemberDied...)."""
        mine = self.outcomes.get(member.me.address, [])
        taken = [o for o in mine if isinstance(o, kind)]
        self.outcomes[member.me.address] = [o for o in mine if not isinstance(o, kind)]
        return taken

    def _await(self, member: RingMember, kind: type, op_id: int, timeout: float = 30.0) -> object:
        found: list[object] = []

        def done() -> bool:
            for outcome in self.take_outcomes(member, kind):
                if getattr(outcome, "op_id", getattr(outcome, "lookup_id", None)) == op_id:
                    found.append(outcome)
            return bool(found)

        self.run_until(done, timeout, step=0.05)
        return found[0]

    def lookup(self, member: RingMember, key: int) -> LookupDone:
        """Run one lookup from ``member`` to its end."""
        lookup_id, actions = member.lookup(key, self.now)
        self._perform(member, actions)
        outcome = self._await(member, LookupDone, lookup_id)
        assert isinstance(outcome, LookupDone)
        return outcome

    def put(self, member: RingMember, key: str, value: bytes) -> PutDone:
        """Store ``value`` under ``key`` through ``member``; its outcome."""
        op_id, actions = member.put(key, value, self.now)
        self._perform(member, actions)
        outcome = self._await(member, PutDone, op_id)
        assert isinstance(outcome, PutDone)
        return outcome

    def get(self, member: RingMember, key: str) -> GetDone:
        """Read ``key`` through ``member``; its outcome."""
        op_id, actions = member.get(key, self.now)
        self._perform(member, actions)
        outcome = self._await(member, GetDone, op_id)
        assert isinstance(outcome, GetDone)
        return outcome

    def joined(self, member: RingMember) -> bool:
        """Whether ``member``'s join ended with ``Joined`` (outcome kept)."""
        return any(isinstance(o, Joined) for o in self.outcomes.get(member.me.address, []))

    # ------------------------------------------------------------ the oracle

    def sorted_live(self) -> list[RingMember]:
        """Live members in ring order."""
        return sorted(self.live(), key=lambda m: m.me.node_id)

    def true_owner(self, key: int) -> Peer:
        """The first live member at or after ``key``."""
        return true_owner([m.me for m in self.sorted_live()], key)

    def ring_errors(self) -> list[str]:
        """Every live member whose successor or predecessor is not its true neighbour."""
        return neighbour_errors([m.chord for m in self.live()])

    def ring_is_correct(self) -> bool:
        """Whether every live member's successor and predecessor are its true neighbours."""
        return not self.ring_errors()

    def states(self) -> set[RingState]:
        """The Chord states of the live members."""
        return {m.chord.state for m in self.live()}
