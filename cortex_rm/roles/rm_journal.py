"""The RM's journal on one eligible node: ``ha/journal.py`` over the ring's links, kept on disk, on a timer.

* **Messages** travel as ring ``Direct`` messages on ``rm-journal``
  (``internal/journal_codec.py``), so only ring members on their proven keys can send
  them; anything from a node that is not eligible is dropped and counted.
* **One change at a time**: each message, proposal and tick runs under a lock: the
  core's step, then ``JournalStore.save`` of what changed, then the sends, then the
  newly committed entries handed to ``apply`` in order (one at a time; its Deferred is
  awaited).  So a promise or an acknowledgement is on disk before anyone hears of it.
* **Proposing**: ``propose(data)`` fires with the entry's seq once it is committed and
  applied here; ``NotLeader`` at once when this node does not lead, or later when it
  stops leading before the entry commits (the entry may still commit under the next
  leader: the caller treats that as an unknown outcome, as YARN's clients do a failover).
* **Elections**: every ``heartbeat_s`` the leader sends heartbeats; a node that has
  heard no leader for ``campaign_after`` (``ha/election.py``: the designated node first,
  among the live members but the leader that went silent) campaigns.  ``on_leading(epoch)`` / ``on_following()`` tell the RM role when
  this node gains or loses the lead; it gains it only after everything committed before
  is applied here.
* **Compaction and snapshots** (with ``snapshots``, this node's ``StoreSnapshots``): after each
  step the applied mark is saved and, once more than ``log_tail`` applied entries (and a margin)
  are kept, the ones before the last ``log_tail`` are discarded (``JournalState.compact``; the
  store deletes them in the same save).  A leader asked for a snapshot dumps its stores (at its
  applied mark, under the lock: nothing is applied meanwhile) and sends it in chunks, each read
  from the file as it goes; a follower writes each chunk as it comes and, once whole, saves
  its new base marked stale, replaces its stores' content, then clears the mark
  (``ha/journal_store.py`` has the crash orderings).  Without ``snapshots`` nothing is discarded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.swim_messages import live_peers
from cortex_rm.ha.election import campaign_after
from cortex_rm.ha import journal
from cortex_rm.ha.journal import NO_EPOCH, Entry, Epoch, JournalNode, Message, NotLeader, Send, Snapshot
from cortex_rm.ha.journal_store import JournalStore
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.journal_codec import (
    JOURNAL_CHANNEL, SNAPSHOT_CHANNEL, decode_journal, decode_snapshot, encode_message,
)  # fmt: skip
from cortex_rm.roles.ring_service import RingService
from cortex_rm.yarn.reactors import INodeReactor

log = Logger()


def lease_for(election_timeout_s: float, heartbeat_s: float) -> float:
    """The leader's lease: it notices a lapse on its next tick (within ``heartbeat_s``), and a follower campaigns no
    sooner than ``election_timeout_s`` after it last heard the leader; so the lease ends a heartbeat and a half
    before, and a deposed leader has stood down before anyone can campaign (``journal.py``'s leases)."""
    return max(heartbeat_s, election_timeout_s - 1.5 * heartbeat_s)


class SnapshotFiles(Protocol):
    """What the journal needs of a node's snapshot files (``ha/store_snapshot.StoreSnapshots``)."""

    def dump(self) -> defer.Deferred[int]: ...

    def read_chunk(self, offset: int, length: int) -> defer.Deferred[bytes]: ...

    def write_chunk(self, offset: int, data: bytes) -> defer.Deferred[None]: ...

    def install(self) -> defer.Deferred[int]: ...


class JournalRing(Protocol):
    """What the journal needs of the ring service (``RingService``)."""

    @property
    def me(self) -> Peer: ...

    def register_direct(self, channel: str, handler: Callable[[Peer, bytes], None]) -> None: ...

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None: ...

    def live_peers(self) -> dict[int, Peer]: ...


class RmJournal:
    """See the module docstring."""

    def __init__(
        self,
        ring: JournalRing,
        eligible: frozenset[int],
        store: JournalStore,
        reactor: INodeReactor,
        apply: Callable[[Entry], defer.Deferred[None]],
        *,
        heartbeat_s: float = 1.0,
        election_timeout_s: float = 5.0,
        rng: random.Random | None = None,
        on_leading: Callable[[Epoch], None] = lambda epoch: None,
        on_following: Callable[[], None] = lambda: None,
        preference: Sequence[int] = (),
        snapshots: SnapshotFiles | None = None,
        log_tail: int = 1000,
    ) -> None:
        self.ring, self.eligible, self.store, self.reactor = ring, eligible, store, reactor
        self.preference = tuple(preference)  # the eligible nodes in the order they should lead
        self.apply, self.on_leading, self.on_following = apply, on_leading, on_following
        self.heartbeat_s, self.election_timeout_s = heartbeat_s, election_timeout_s
        self.snapshots, self.log_tail = snapshots, log_tail  # (the applied entries kept, with a margin)
        self.rng = rng or random.Random()
        self.me = ring.me.node_id
        self.node: JournalNode | None = None
        self.dropped = 0  # messages from non-eligible senders, or undecodable
        self.stopped = False
        self._lock = defer.DeferredLock()
        self._pending: dict[int, tuple[Epoch, defer.Deferred[int]]] = {}  # seq -> the proposal's epoch, its Deferred
        self._heard = 0.0  # when a leader (or this node leading) was last heard
        self._jitter = self.rng.random()
        self._leading = False
        self._loop: task.LoopingCall | None = None
        # the promise, commit index, applied mark, base and stale mark saved
        self._saved: tuple[Epoch, int, int, int, bool] = (NO_EPOCH, 0, 0, 0, False)

    async def start(self) -> None:
        """Load this node's journal and join in: what is committed and not yet applied here is applied first (again,
        from the last saved mark: applying is idempotent)."""
        state = await self.store.load()
        self.node = JournalNode(self.me, self.eligible, state, heartbeat_s=self.heartbeat_s,
                                lease_s=lease_for(self.election_timeout_s, self.heartbeat_s),
                                started_at=self.reactor.seconds())  # fmt: skip
        self._saved = self._marks()
        if state.stale:
            log.warn("rm journal: a snapshot install was cut short; this node waits for another", seq=state.base_seq)
        self._heard = self.reactor.seconds()
        self.ring.register_direct(JOURNAL_CHANNEL, lambda sender, body: self._received(sender, body, decode_journal))
        if self.snapshots is not None:
            self.ring.register_direct(SNAPSHOT_CHANNEL, lambda s, body: self._received(s, body, decode_snapshot))
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.heartbeat_s, now=False)
        await self._serially(lambda: [])  # (applies what is committed and not yet applied here)

    def stop(self) -> None:
        """Take no message, proposal or tick from now on (a step under way finishes)."""
        self.stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._fail_pending(NotLeader(None))
        if self._leading:
            self._leading = False
            self.on_following()

    @property
    def leader(self) -> int | None:
        return self.node.leader if self.node is not None else None

    def live_leader(self) -> int | None:
        """The leader, if heard within two heartbeats (or this node, leading); None during an election."""
        if self.node is None or self.node.leader is None:
            return None
        return self.node.leader if self.reactor.seconds() - self._heard <= 2.5 * self.heartbeat_s else None

    # ------------------------------------------------------------ proposing

    def propose(self, data: bytes, epoch: Epoch | None = None) -> defer.Deferred[int]:
        """Fires with ``data``'s seq once committed and applied here (module docstring).  With ``epoch``: only while
        this node leads in that epoch (a role that served an earlier lead of this node must not write in a later)."""
        d: defer.Deferred[int] = defer.Deferred()

        def step() -> list[Send]:
            assert self.node is not None
            if not self._leading or (epoch is not None and epoch != self.node.epoch):  # (leads once all is applied)
                raise NotLeader(self.node.leader)
            seq = self.node.propose(data)
            self._pending[seq] = (self.node.epoch, d)
            return self.node.flush(self.reactor.seconds())

        self._serially(step).addErrback(d.errback)
        return d

    # ------------------------------------------------------------ the loop

    def _received(self, sender: Peer, body: bytes, decode: Callable[[bytes], Message]) -> None:
        if self.stopped:
            return
        if sender.node_id not in self.eligible:
            self.dropped += 1
            return
        try:
            message = decode(body)
        except MalformedEnvelope as e:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warn("rm journal: a malformed message from {sender}: {error}", sender=sender.short(), error=str(e))
            return

        def step() -> list[Send]:
            assert self.node is not None
            before = self.node.leader
            sends = self.node.receive(sender.node_id, message, self.reactor.seconds())
            if self.node.leader is not None and self.node.leader == sender.node_id:
                self._heard = self.reactor.seconds()
            elif before != self.node.leader:
                self._heard = self.reactor.seconds()
            return sends

        self._serially(step).addErrback(self._failed, "a message")

    def _tick(self) -> None:
        if self.stopped:
            return

        def step() -> list[Send]:
            assert self.node is not None
            now = self.reactor.seconds()
            if self.node.is_leader:
                self._heard = now
                return self.node.tick(now)
            # the leader that went silent is not counted live, though the ring may not have declared it dead yet
            live = (self.ring.live_peers().keys() - {self.node.leader}) | {self.me}
            wait = campaign_after(self.me, self.eligible, live, self.election_timeout_s, self._jitter, self.preference)
            if now - self._heard >= wait:
                self._heard = now
                self._jitter = self.rng.random()
                log.info("rm journal: no leader heard for a while; campaigning")
                return self.node.campaign(now)
            return []

        self._serially(step).addErrback(self._failed, "a tick")

    def _serially(self, step: Callable[[], list[Send]]) -> defer.Deferred[None]:
        return self._lock.run(lambda: defer.ensureDeferred(self._run(step)))

    async def _run(self, step: Callable[[], list[Send]]) -> None:
        assert self.node is not None
        if self.stopped:
            raise NotLeader(None)
        sends = step()
        sends += await self._install()
        state = self.node.state
        state.applied = self.node.applied  # (what the last step applied: saved now, see JournalState.applied)
        if self.snapshots is not None and state.applied - state.base_seq > self.log_tail + max(16, self.log_tail // 4):
            self.node.compact(self.log_tail, self.reactor.seconds())  # (deleted on disk by the save, with the mark)
        await self._save()
        if self.node.wants_snapshot and self.node.is_leader and self.snapshots is not None and not state.stale:
            sends += await self._offer()
        await self._send(sends)
        await self._catch_up()

    def _marks(self) -> tuple[Epoch, int, int, int, bool]:
        assert self.node is not None
        state = self.node.state
        return state.promised, state.committed, state.applied, state.base_seq, state.stale

    async def _offer(self) -> list[Send]:
        """Dump this node's stores at its applied mark for the followers behind its log; the chunks to send."""
        assert self.node is not None and self.snapshots is not None
        seq = self.node.applied
        try:
            size = await self.snapshots.dump()
        except Exception:  # noqa: BLE001 - asked again on the next step that needs it
            log.failure("rm journal: writing a snapshot for a follower behind the log failed")
            return []
        log.info("rm journal: a snapshot at {seq} ({size} bytes) for the followers behind the log", seq=seq, size=size)
        return self.node.offer_snapshot(seq, size, self.reactor.seconds())

    async def _save(self) -> None:
        assert self.node is not None
        if self.node.state.dirty_from is None and self._saved == self._marks():
            return
        try:
            await self.store.save(self.node.state)
        except Exception:
            # what this step promised or accepted is not on disk: answering would break what others count on
            log.failure("rm journal: saving the journal failed; this node stops taking part until restarted")
            self.stop()
            raise
        self._saved = self._marks()

    async def _install(self) -> list[Send]:
        """Write a snapshot chunk received; once the snapshot is whole, install it (module docstring)."""
        assert self.node is not None
        chunk = self.node.take_chunk()
        try:
            if chunk is not None and self.snapshots is not None:
                await self.snapshots.write_chunk(chunk.offset, chunk.data)
        except Exception:  # noqa: BLE001 - the leader's next chunk finds no install under way and starts again
            log.failure("rm journal: writing a snapshot chunk failed")
            self.node.receiver.forget()
        if self.snapshots is None:
            self.node.receiver.forget()  # (no files: nothing can be installed)
        if self.node.receiver.ready is None or self.snapshots is None:
            return []
        seq, _ = self.node.install_begin()
        await self._save()  # (stale, before a table is replaced)
        try:
            rows = await self.snapshots.install()
        except Exception:  # noqa: BLE001 - it stays stale: its answers ask for another snapshot
            log.failure("rm journal: installing the snapshot at {seq} failed; this node waits for another", seq=seq)
            return []
        log.info("rm journal: installed the leader's snapshot at {seq} ({rows} rows)", seq=seq, rows=rows)
        return self.node.install_end()

    async def _catch_up(self) -> None:
        """Apply what is newly committed; then tell the role about a change of lead."""
        assert self.node is not None
        for entry in self.node.to_apply():
            if entry.data:
                try:
                    await self.apply(entry)
                except Exception:  # noqa: BLE001 - not marked applied: offered again at the next step
                    log.failure("rm journal: applying entry {seq} failed; it is tried again", seq=entry.seq)
                    break
            self.node.applied_through(entry.seq)
            pending = self._pending.pop(entry.seq, None)
            if pending is not None and pending[0] == entry.epoch:
                pending[1].callback(entry.seq)
            elif pending is not None:  # another leader's entry took its place: it was never committed
                pending[1].errback(Failure(NotLeader(self.node.leader)))
        state = self.node.state  # leads once its own no-op committed (all before it did) and all is applied
        leading = self.node.is_leader and state.epoch_at(state.committed) == self.node.epoch
        leading = leading and self.node.applied >= state.committed
        if leading and not self._leading:
            self._leading = True
            log.info("rm journal: this node leads, epoch {epoch}", epoch=self.node.epoch[0])
            self.on_leading(self.node.epoch)
        elif not self.node.is_leader and self._leading:
            self._leading = False
            self._fail_pending(NotLeader(self.node.leader))
            log.info("rm journal: this node no longer leads")
            self.on_following()

    async def _send(self, sends: list[Send]) -> None:
        peers = self.ring.live_peers()
        for to, message in sends:
            peer = peers.get(to)
            if peer is None:
                continue  # not live in this view: the leader's heartbeats retry
            try:
                if isinstance(message, Snapshot) and self.snapshots is not None:  # (its bytes, read from the file now)
                    length = min(journal.SNAPSHOT_CHUNK_BYTES, message.size - message.offset)
                    message = replace(message, data=await self.snapshots.read_chunk(message.offset, length))
                channel, body = encode_message(message)
                self.ring.send_direct(peer, channel, body)
            except Exception as e:  # noqa: BLE001 - the ring stopped, or the peer went: retried on the next tick
                log.info("rm journal: cannot send to {peer}: {error}", peer=peer.short(), error=str(e))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for _, d in pending.values():
            d.errback(Failure(error))

    def _failed(self, failure: Failure, what: str) -> None:
        if self.stopped and failure.check(NotLeader):
            return  # (a step that was waiting when the journal stopped)
        log.failure("rm journal: {what} failed", failure, what=what)


class RingLinks:
    """A ``RingService`` as the journal's ``JournalRing``: its live peers are the view's alive and suspected."""

    def __init__(self, ring: RingService) -> None:
        self.ring = ring

    @property
    def me(self) -> Peer:
        return self.ring.me  # (its address is known once the ring's port is bound)

    def register_direct(self, channel: str, handler: Callable[[Peer, bytes], None]) -> None:
        self.ring.register_direct(channel, handler)

    def send_direct(self, to: Peer, channel: str, body: bytes) -> None:
        self.ring.send_direct(to, channel, body)

    def live_peers(self) -> dict[int, Peer]:
        view = self.ring.view()
        return live_peers(view.members, view.me)
