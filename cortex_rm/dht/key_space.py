"""The replicated, versioned key space as a sans-IO core: puts, gets, replication, hand-off.

``KeySpace`` never sends, sleeps or reads a clock.  Each step takes ``now``
(seconds, from the caller's clock) and returns *actions*: ``Send`` a message, or an
outcome for the caller (``PutDone``, ``GetDone``; see ``kv_operations.py``).  It
does no Chord lookups: the composer runs them and passes the owner in, and tells
the core its ring neighbours with ``set_ring`` whenever they change.

Placement.  A key's point on the ring is ``key_id(key)``.  Its *owner* is the first
node at or after that point; the record is kept by the owner and by the owner's next
``replicas`` successors (``r``, so ``r + 1`` copies).  A node owns the keys in
``(predecessor, me]``.  Before the first ``set_ring`` it owns nothing; with
``set_ring(None, ())`` it is alone and owns everything; with successors but no known
predecessor it owns nothing *for writes* (a put is refused, the composer retries
after a fresh lookup) but replicates everything it holds (copying too much is safe,
copying too little is not).

Writes.  ``put`` signs the record (``writer`` = our ring id, ``version =
max(now_ms, highest we held or wrote + 1)``) and sends it in ``PutRecord`` to the
owner.  The owner refuses a key it does not own ("not the owner ... look the owner
up again"), a record its ``RecordGate`` refuses (bad signature, or a writer the
key's ``WritePolicy`` does not allow) or one not newer than what it holds (its
reply carries the held record, so the writer's retry picks a higher version), else
stores it, answers with the record and pushes it at once to its first ``r``
successors (``StoreReplicas``).  The answer does not wait for the replicas; a
write acknowledged and lost with its owner before that push or the next
``replicate`` is the window this design accepts.  Every node keeps an incoming
record only if it wins under ``record_store``'s merge rule ``(version, writer,
value)``, so stale copies never overwrite newer ones.

Reads.  ``get`` sends ``GetRecord`` to the owner, which answers from its store.  On a
miss, an owner (a node that owns the key by its own view) first asks its first ``r``
successors -- a new owner may not hold its range yet -- and answers with the newest
record they return (keeping it: read repair), or None when none has it or
``request_timeout / 2`` passes.  Replicas never own the keys they are asked for, so
they answer from their store.  A node already gathering a key adds later askers to
that gather, so there is at most one gather per key and node: even under views
that disagree (two nodes both owning a key) gathers cannot multiply, and a cycle of
them ends when the first one's half-timeout passes.

Anti-entropy (``replicate``, periodic; ``set_ring`` for peers new to us).  *Forward*:
a digest of the keys we own to each of our first ``r`` successors.  *Backward*: a
digest of the keys we hold but do not own to our predecessor -- it lies between
their owner and us, so it must hold them too; this is how a node that joined (or a
new owner of a grown range) receives the keys it now owns, and it stops at the
owner, which never sends its own keys back.  The exchange itself (digest, want,
records, and sending back what the receiver holds newer, which corrects a node
that restarted with stale records) is ``replica_sync.py``'s.

Ownership changes.  A node that joins between our old predecessor and us becomes
our predecessor: the backward digest sent at once gives it ``(old predecessor, new
predecessor]``.  When our predecessor dies our range grows over records we already
hold as replicas; our next ``replicate`` brings our successors up to date.  A node
leaving gracefully calls ``hand_off``, which sends the records it owns to its
successor.  Nothing is pruned: a node keeps copies it is no longer responsible
for (they are harmless, and dropping them safely needs the owner's confirmation).

Every record that comes in any other way (replication, anti-entropy, read repair,
hand-off, a get's answer) passes the same ``RecordGate`` first.

Replies (``PutReply``, ``GetReply``) are matched to our request by id and must come
from the peer we asked before the deadline; anything else is ignored.
"""

from __future__ import annotations

import itertools

from twisted.logger import Logger

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.kv_messages import (
    GetRecord,
    GetReply,
    KeySpaceMessage,
    PutRecord,
    PutReply,
    Record,
    ReplicaDigest,
    ReplicaWant,
    StoreReplicas,
)
from cortex_rm.dht.kv_operations import GATHER, GET, PUT, Action, AnswerTo, Gather, GetDone, PendingRequest, PutDone
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.record_store import RecordStore, check_record, merge, record_batches, record_error
from cortex_rm.dht.replica_sync import ReplicaOffers, answer_digest
from cortex_rm.dht.ring_math import in_interval, key_id
from cortex_rm.dht.ring_trust import OpenTrust, RingTrust
from cortex_rm.dht.write_policy import RecordGate, WritePolicy

log = Logger()

DEFAULT_REPLICAS = 3
"""r: successors that keep a copy besides the owner (r + 1 copies survive r failures)."""

DEFAULT_REQUEST_TIMEOUT = 3.0
"""Seconds a put or get may wait for the owner (an owner's gather waits half of it)."""


class KeySpace:
    """One node's share of the replicated key space; every step returns the actions to perform."""

    def __init__(
        self,
        me: Peer,
        replicas: int = DEFAULT_REPLICAS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        store: RecordStore | None = None,
        *,
        trust: RingTrust | None = None,
        policy: WritePolicy | None = None,
    ) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be at least 0, not {replicas}")
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, not {request_timeout}")
        self.me = me
        self.replicas = replicas
        self.request_timeout = request_timeout
        self.store = store if store is not None else RecordStore()
        self.predecessor: Peer | None = None
        self.successors: tuple[Peer, ...] = ()
        self.placed = False
        self._ids = itertools.count(1)
        self._requests: dict[int, PendingRequest] = {}
        self._gathers: dict[int, Gather] = {}
        self._offers = ReplicaOffers(request_timeout)
        self.trust: RingTrust = trust if trust is not None else OpenTrust(me.node_id)
        self.gate = RecordGate(self.trust, policy)
        self._written: dict[str, int] = {}  # key -> the highest version we wrote or were told is held

    # ------------------------------------------------------------ ring view

    @property
    def replica_targets(self) -> tuple[Peer, ...]:
        """The successors that keep copies of what we own: the first ``replicas`` of them."""
        return self.successors[: self.replicas]

    def owns(self, key: str) -> bool:
        """Whether ``key`` is ours to write: its id lies in ``(predecessor, me]``.

        Nothing before ``set_ring``; everything when alone; nothing while we have
        successors but no known predecessor (we cannot tell where our range starts).
        """
        if not self.placed:
            return False
        if self.predecessor is None:
            return not self.successors
        return in_interval(key_id(key), self.predecessor.node_id, self.me.node_id, include_right=True)

    def set_ring(self, predecessor: Peer | None, successors: tuple[Peer, ...], now: float) -> list[Action]:
        """Take our current neighbours; send digests to the ones new to us.

        A new predecessor gets the backward digest (keys we hold but no longer own:
        if it joined in between, the part of our range it took over).  A new peer
        among our first ``replicas`` successors gets the forward digest, and so do
        all of them when the predecessor changed (what we own changed).
        """
        predecessor = None if predecessor == self.me else predecessor
        cleaned = tuple(dict.fromkeys(s for s in successors if s != self.me))
        old_predecessor = self.predecessor if self.placed else None
        old_targets = set(self.replica_targets) if self.placed else set()
        changed = not self.placed or predecessor != self.predecessor or cleaned != self.successors
        self.predecessor, self.successors, self.placed = predecessor, cleaned, True
        if changed:
            log.info(
                "keyspace {node} ring view: predecessor {predecessor}, successors {successors}",
                node=self.me.short(),
                predecessor=None if predecessor is None else predecessor.short(),
                successors=[s.short() for s in cleaned],
            )
        actions: list[Action] = []
        if predecessor is not None and predecessor != old_predecessor:
            actions += self._offers.offer(predecessor, self._not_owned(), now)
        for target in self.replica_targets:
            # A new predecessor changes what we own: every target hears of it at once.
            if target not in old_targets or predecessor != old_predecessor:
                actions += self._offers.offer(target, self._replicated(), now)
        return actions

    # ------------------------------------------------------------ the caller's operations

    def put(self, key: str, value: bytes, owner: Peer, now: float) -> tuple[int, list[Action]]:
        """Write ``value`` under ``key`` through its ``owner``; ``PutDone`` carries the returned id.

        Raises ``RecordTooLarge`` for a key or value outside the bounds.
        """
        check_record(key, value)
        op_id = next(self._ids)
        held = self.store.get(key)
        version = max(int(now * 1000), self._written.get(key, -1) + 1, -1 if held is None else held.version + 1)
        self._written[key] = version
        record = self.trust.sign_record(key, value, version)
        if owner == self.me:
            stored, error, pushes = self._write(record, self.me, now)
            return op_id, [PutDone(op_id, key, None if error else stored, error), *pushes]
        request_id = self._request(owner, PUT, key, now, op_id=op_id)
        return op_id, [Send(owner, PutRecord(request_id, record))]

    def get(self, key: str, owner: Peer, now: float) -> tuple[int, list[Action]]:
        """Read ``key`` from its ``owner``; ``GetDone`` carries the returned id.

        Raises ``RecordTooLarge`` for a key outside the bounds.
        """
        check_record(key)
        op_id = next(self._ids)
        if owner == self.me:
            return op_id, self._answer_get(key, AnswerTo(None, op_id=op_id), now)
        request_id = self._request(owner, GET, key, now, op_id=op_id)
        return op_id, [Send(owner, GetRecord(request_id, key))]

    # ------------------------------------------------------------ periodic steps

    def replicate(self, now: float) -> list[Action]:
        """Anti-entropy: forward digest to our first ``replicas`` successors, backward to the predecessor."""
        if not self.placed:
            return []
        actions: list[Action] = []
        replicated = self._replicated()
        for target in self.replica_targets:
            actions += self._offers.offer(target, replicated, now)
        if self.predecessor is not None:
            actions += self._offers.offer(self.predecessor, self._not_owned(), now)
        return actions

    def hand_off(self, now: float) -> list[Action]:
        """Before a graceful leave: send the records we own to our successor."""
        records = self._replicated()
        if not self.successors:
            if records:
                log.warn("keyspace {node} leaves alone: {count} records are lost", node=self.me.short(), count=len(records))
            return []
        successor = self.successors[0]
        log.info(
            "keyspace {node} hands {count} records to {successor}",
            node=self.me.short(),
            count=len(records),
            successor=successor.short(),
        )
        return [Send(successor, StoreReplicas(batch)) for batch in record_batches(records)]

    def expire(self, now: float) -> list[Action]:
        """Fail the operations whose owner did not answer in time; close gathers and offers."""
        actions: list[Action] = []
        for request_id, request in sorted(self._requests.items()):
            if request.deadline > now:
                continue
            del self._requests[request_id]
            log.info(
                "keyspace {node} {kind} of {key} to {peer} timed out",
                node=self.me.short(),
                kind=request.kind,
                key=request.key,
                peer=request.to.short(),
            )
            error = f"timeout: {request.to.short()} did not answer within {self.request_timeout}s"
            if request.kind == PUT:
                actions.append(PutDone(request.op_id, request.key, None, error))
            elif request.kind == GET:
                actions.append(GetDone(request.op_id, request.key, None, error))
            else:
                actions += self._gathered(request_id, request, None)
        self._offers.expire(now)
        return actions

    # ------------------------------------------------------------ input

    def receive(self, sender: Peer, message: KeySpaceMessage, now: float) -> list[Action]:
        """Handle a message from ``sender`` (as its transport authenticated it)."""
        if sender == self.me:
            return []
        if isinstance(message, PutRecord):
            error = record_error(message.record.key, message.record.value)
            if error is not None:
                return [Send(sender, PutReply(message.request_id, None, error))]
            record, error, pushes = self._write(message.record, sender, now)
            return [Send(sender, PutReply(message.request_id, record, error)), *pushes]
        if isinstance(message, GetRecord):
            if record_error(message.key) is not None:
                return [Send(sender, GetReply(message.request_id, None))]
            return self._answer_get(message.key, AnswerTo(sender, request_id=message.request_id), now)
        if isinstance(message, ReplicaDigest):
            return list(answer_digest(self.store, sender, message))
        if isinstance(message, ReplicaWant):
            return list(self._offers.answer_want(self.store, sender, message, now))
        if isinstance(message, StoreReplicas):
            kept = sum(self._keep(record) for record in message.records)
            log.debug(
                "keyspace {node} kept {kept} of {count} records from {peer}",
                node=self.me.short(),
                kept=kept,
                count=len(message.records),
                peer=sender.short(),
            )
            return []
        return self._reply(sender, message)

    # ------------------------------------------------------------ internals: writes and reads

    def _keep(self, record: Record) -> bool:
        """Keep a record from the wire if the gate admits it and it is newer than ours; whether it was kept."""
        return self.gate.admits(record, self.store.get(record.key)) and self.store.keep(record)

    def _write(self, record: Record, client: Peer, now: float) -> tuple[Record | None, str, list[Action]]:
        """The owner's side of a put: check, store, push to replicas (or refuse; a stale write gets the held record)."""
        key = record.key
        if not self.owns(key):
            unknown = self.placed and self.predecessor is None
            where = "it does not know its predecessor yet" if unknown else "the key's id lies outside its range"
            error = f"not the owner: {self.me.short()} does not own key {key[:40]!r} ({where}); look the owner up again"
            log.info(
                "keyspace {node} refused put of {key} from {client}: {error}",
                node=self.me.short(),
                key=key,
                client=client.short(),
                error=error,
            )
            return None, error, []
        held = self.store.get(key)
        refusal = self.gate.refusal(record, held)
        if refusal is not None:
            log.info("keyspace {node} refused put of {key} from {client}: {error}", node=self.me.short(), key=key[:60],
                     client=client.short(), error=refusal)
            return None, f"refused: {refusal}", []
        if not self.store.keep(record):
            assert held is not None
            return held, f"stale: {key[:40]!r} is held at version {held.version}; write a higher one", []
        log.debug(
            "keyspace {node} stored {key} version {version} (put by {client})",
            node=self.me.short(),
            key=key,
            version=record.version,
            client=client.short(),
        )
        return record, "", [Send(target, StoreReplicas((record,))) for target in self.replica_targets]

    def _answer_get(self, key: str, answer_to: AnswerTo, now: float) -> list[Action]:
        """Answer from the store; an owner that misses first gathers from its replicas."""
        held = self.store.get(key)
        if held is not None or not self.owns(key) or not self.replica_targets:
            return [self._answer(answer_to, key, held)]
        for gather in self._gathers.values():
            if gather.key == key:  # one gather per key: later askers wait for the same answers
                gather.answer_to.append(answer_to)
                return []
        gather_id = next(self._ids)
        gather = Gather(key, [answer_to], held)
        self._gathers[gather_id] = gather
        actions: list[Action] = []
        for target in self.replica_targets:
            timeout = self.request_timeout / 2  # leaves the asker time to hear our answer
            request_id = self._request(target, GATHER, key, now, gather_id=gather_id, timeout=timeout)
            gather.waiting.add(request_id)
            actions.append(Send(target, GetRecord(request_id, key)))
        return actions

    def _answer(self, answer_to: AnswerTo, key: str, record: Record | None) -> Action:
        if answer_to.peer is None:
            return GetDone(answer_to.op_id, key, record, "")
        return Send(answer_to.peer, GetReply(answer_to.request_id, record))

    def _gathered(self, request_id: int, request: PendingRequest, record: Record | None) -> list[Action]:
        """One replica answered (or timed out) a gather; answer the asker when all have."""
        gather = self._gathers.get(request.gather_id)
        if gather is None:
            return []
        gather.waiting.discard(request_id)
        if record is not None:
            gather.best = merge(gather.best, record)
            self._keep(record)  # read repair
        if gather.waiting:
            return []
        del self._gathers[request.gather_id]
        return [self._answer(answer_to, gather.key, gather.best) for answer_to in gather.answer_to]

    def _reply(self, sender: Peer, message: KeySpaceMessage) -> list[Action]:
        """A PutReply or GetReply: it must answer a request we still wait for, from the peer asked."""
        if not isinstance(message, (PutReply, GetReply)):
            return []
        request = self._requests.get(message.request_id)
        expected = PutReply if request is not None and request.kind == PUT else GetReply
        if request is None or request.to != sender or not isinstance(message, expected):
            log.debug(
                "keyspace {node} ignored an unexpected {message} from {peer}",
                node=self.me.short(),
                message=type(message).__name__,
                peer=sender.short(),
            )
            return []
        del self._requests[message.request_id]
        record = message.record
        error = "" if isinstance(message, GetReply) else message.error
        if record is not None and (
            record.key != request.key or record_error(record.key, record.value) or self.gate.refusal(record, None)
        ):
            record, error = None, f"{sender.short()} answered with an invalid record for key {request.key[:40]!r}"
        if request.kind == PUT and error and record is not None:
            # Refused as stale: the owner holds a newer version; our retry writes above it.
            self._written[record.key] = max(self._written.get(record.key, -1), record.version)
            record = None
        if request.kind == GATHER:
            return self._gathered(message.request_id, request, record)
        if request.kind == GET:
            return [GetDone(request.op_id, request.key, record, error)]
        if record is None and not error:
            error = f"{sender.short()} stored nothing and gave no reason"
        return [PutDone(request.op_id, request.key, record, error)]

    def _request(
        self, to: Peer, kind: str, key: str, now: float, *, op_id: int = 0, gather_id: int = 0, timeout: float | None = None
    ) -> int:
        request_id = next(self._ids)
        deadline = now + (self.request_timeout if timeout is None else timeout)
        self._requests[request_id] = PendingRequest(to, deadline, kind, key, op_id, gather_id)
        return request_id

    # ------------------------------------------------------------ internals: anti-entropy

    def _replicated(self) -> list[Record]:
        """What we copy forward: what we own, or all we hold while our range is unknown."""
        if self.predecessor is None:
            return list(self.store)
        return [record for record in self.store if self.owns(record.key)]

    def _not_owned(self) -> list[Record]:
        """What we copy backward to our predecessor: what we hold but do not own."""
        return [record for record in self.store if not self.owns(record.key)]
