"""The RM's replicated journal: every change of the RM's state, agreed by a majority of the RM-eligible nodes.

Why: the active RM's node is a volunteer's machine and will leave.  What the RM has
acknowledged to a client (a submitted application, a registered function, a file) must
survive that, and two RMs must never both act (issue 13).  So each change of the RM's
state is an *entry* of one journal, and an entry counts (is *committed*) only once a
majority of the eligible nodes (``[ring] resource_managers``) hold it on disk.  The RM
acknowledges a change once it is committed; each node applies committed entries, in
order, to its own copy of the state, so a standby that takes over already has it.

This is Raft's log replication and election rule, sans-IO: a ``JournalNode`` takes
messages and the time, and answers with messages to send; its ``state`` (promised epoch,
log, commit index) is the driver's to make durable **before** it sends what a call
returned.

* **Epochs** are Raft's terms, named ``(number, ring id)`` and ordered as tuples, so a
  campaign's epoch also says whom it is for and two campaigns never share one.  A node
  *promises* an epoch and refuses every older one from then on: that is the fencing,
  since an RM of an older epoch can then never gather a majority again.
* **Pre-vote** (Raft's): a campaign first asks ``Prepare(pre=True)``, which changes nothing
  anywhere, and goes on only if a majority would grant it; so a node cut off from the
  others does not raise its epoch over and over, and cannot depose a healthy leader with
  it when it comes back.
* **Campaign**: ``Prepare(epoch, last_seq, last_epoch)`` to every member; a member
  promises a newer epoch, and grants it (``Promise.granted``) only if the campaigner's
  log is at least as up to date as its own (last entry's epoch, then length).  With a
  majority of grants (its own included) the campaigner leads, and appends an empty entry
  of its epoch (a no-op, never applied) so that what earlier leaders left commits.
  Since every committed entry is on a majority, and a winner's log is at least as up to
  date as a majority's, a winner holds every committed entry.
* **Leading**: ``Append(epoch, prev_seq, prev_epoch, entries, commit)``; a follower
  accepts when its entry at ``prev_seq`` has ``prev_epoch`` (else it says how far its
  log goes and the leader backs up), drops whatever conflicts after it, and answers
  with how far its log now matches.  An entry is committed when a majority matches it
  and it is of the leader's epoch (earlier ones commit with it).  Commit indexes ride on
  every ``Append``; an empty one every ``heartbeat_s`` is the leader's heartbeat.

**Leases** (``lease_s``, shorter than the driver's election timeout; 0 turns them off): a
leader that has not heard a majority within it stands down (its RM must not go on acting cut
off), and a node that heard its leader within it ignores a ``Prepare`` (Raft's "leader
stickiness": a node the leader cannot reach does not depose it over and over); a node
that starts grants no vote for a lease, since it may have answered a leader it forgot.  A follower's
answer renews the lease from when the leader *sent* the oldest Append still unanswered, not
from when the answer came back: the follower heard the leader after that, so its election
timeout cannot run out before the lease does.

Who campaigns is not decided here: the ring names the RM (the first eligible live member
at or after the RM's key, ``ha/election.py``), and only that node campaigns; if two do
(views differ during churn), epochs settle it and the loser follows; a designated node
whose log is behind is refused, and another eligible node, campaigning after a longer
timeout, leads instead.

Why not the ring's key space: its writes are acknowledged before the replicas have them,
and the RM's state holds secrets (master keys, token passwords) that every ring member
could read there.  Why not a library: Python's Raft libraries bring their own threads
and transport (and pickle over the network); this one is a state machine under Twisted
and the ring's mutual-TLS links.

**Compaction and snapshots** (Raft's §7): a node's stores are its snapshot, so it discards what they applied
but a tail (``JournalState.compact``; ``journal_log.py``).  A follower that needs what the leader's base
discarded (down for long, or wiped) gets the leader's snapshot instead, in chunks (``Snapshot``,
``SnapshotAck``; the follower's side is ``journal_snapshots.py``), and its Appends go on after it.  A node
whose install was cut short (``state.stale``) applies nothing and does not campaign until one is installed.

Not yet here: membership changes of the eligible set while running (a restart with the new set).
"""

from __future__ import annotations

from cortex_rm.ha.journal_log import (
    MAX_BATCH, MAX_BATCH_BYTES, MAX_ENTRY_BYTES, NO_EPOCH, SNAPSHOT_CHUNK_BYTES, Append, Appended, Entry, Epoch,
    JournalState, Message, NotLeader, Prepare, Promise, Refused, Send, Snapshot, SnapshotAck,
)  # fmt: skip
from cortex_rm.ha.journal_snapshots import Follower, SnapshotOffer, SnapshotReceiver

__all__ = [
    "MAX_BATCH", "MAX_BATCH_BYTES", "MAX_ENTRY_BYTES", "NO_EPOCH", "SNAPSHOT_CHUNK_BYTES", "Append", "Appended",
    "Entry", "Epoch", "JournalNode", "JournalState", "Message", "NotLeader", "Prepare", "Promise", "Refused", "Send",
    "Snapshot", "SnapshotAck", "SnapshotOffer",
]  # fmt: skip


#: A follower sent a snapshot holds the leader's compaction back while heard within this many heartbeats.
HOLD_HEARTBEATS = 10


class JournalNode:
    """One eligible node's part of the journal (see the module docstring)."""

    def __init__(
        self, me: int, members: frozenset[int], state: JournalState | None = None, *, heartbeat_s: float = 1.0,
        lease_s: float = 0.0, started_at: float | None = None,
    ) -> None:
        if me not in members:
            raise ValueError(f"{me:x} is not among the journal's members")
        self.me, self.members = me, members
        self.state = state if state is not None else JournalState()
        self.heartbeat_s, self.lease_s = heartbeat_s, lease_s
        self._leader_heard = float("-inf")  # when this node last heard its leader (an Append it accepted)
        # A node (re)started may have answered a leader it no longer remembers, whose lease counts on that answer:
        # it grants nothing until a lease has passed since its start.
        self._quiet_until = started_at + lease_s if started_at is not None and lease_s > 0 else float("-inf")
        self.role = "follower"
        self.epoch: Epoch = self.state.promised  # the epoch this node leads or campaigns in
        self.leader: int | None = None
        self.applied = self.state.applied  # (the driver may know better: its stores' own mark)
        self._grants: set[int] = set()  # a campaign's grants so far
        self._pre_epoch: Epoch | None = None  # a pre-vote under way: the epoch it asks about
        self._pre_grants: set[int] = set()
        self._followers: dict[int, Follower] = {}
        self._led_at = float("-inf")  # when this node last began to lead
        #: The leader's: its snapshot (``offer_snapshot``), and whether a follower needs one it has not.
        self.snapshot: SnapshotOffer | None = None
        self.wants_snapshot = False
        self.receiver = SnapshotReceiver()  # a follower's install (``take_chunk``, ``install_begin``/``_end``)

    @property
    def quorum(self) -> int:
        return len(self.members) // 2 + 1

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    # ------------------------------------------------------------ campaigning

    def campaign(self, now: float) -> list[Send]:
        """Ask every member whether it would grant a new epoch (a pre-vote); with a majority, campaign in it.  Not
        while this node's own vote is bound (it heard its leader within a lease, or started less than one ago): it
        grants itself nothing it would refuse another."""
        if self.state.stale or (self.lease_s > 0 and (self._heard_leader(now) or now < self._quiet_until)):
            return []  # (a node whose stores wait for a snapshot could not act as the RM)
        number = max(self.state.promised[0], self.state.epoch_at(self.state.last_seq)[0]) + 1
        self._pre_epoch, self._pre_grants = (number, self.me), {self.me}
        prepare = Prepare(self._pre_epoch, self.state.last_seq, self.state.epoch_at(self.state.last_seq), pre=True)
        sends: list[Send] = [(m, prepare) for m in sorted(self.members - {self.me})]
        return sends + self._maybe_campaign(now)

    def _maybe_campaign(self, now: float) -> list[Send]:
        if self._pre_epoch is None or len(self._pre_grants) < self.quorum or self._pre_epoch <= self.state.promised:
            return []
        self.epoch = self.state.promised = self._pre_epoch
        self._pre_epoch, self._pre_grants = None, set()
        self.role, self.leader, self._followers = "candidate", None, {}
        self._grants = {self.me}
        prepare = Prepare(self.epoch, self.state.last_seq, self.state.epoch_at(self.state.last_seq))
        sends: list[Send] = [(m, prepare) for m in sorted(self.members - {self.me})]
        return sends + self._maybe_lead(now)

    def _maybe_lead(self, now: float) -> list[Send]:
        if self.role != "candidate" or len(self._grants) < self.quorum:
            return []
        self.role, self.leader, self._grants = "leader", self.me, set()
        self._followers = {m: Follower(self.state.last_seq + 1, float("-inf")) for m in self.members - {self.me}}
        self._led_at = now  # (a vote is not an answer to an Append: the lease starts with the first answers)
        noop = Entry(self.epoch, self.state.last_seq + 1, b"")  # commits what earlier leaders left, with it
        self.state.log.append(noop)
        self.state.changed(noop.seq)
        self._advance_commit()
        return self._appends(now, everyone=True)

    # ------------------------------------------------------------ leading

    def propose(self, data: bytes) -> int:
        """Add ``data`` as the next entry (NotLeader unless leading); its seq.  ``flush`` sends it."""
        if not self.is_leader:
            raise NotLeader(self.leader)
        if not 0 < len(data) <= MAX_ENTRY_BYTES:
            raise ValueError(f"a journal entry holds 1 to {MAX_ENTRY_BYTES} bytes, not {len(data)}")
        entry = Entry(self.epoch, self.state.last_seq + 1, data)
        self.state.log.append(entry)
        self.state.changed(entry.seq)
        self._advance_commit()
        return entry.seq

    def flush(self, now: float) -> list[Send]:
        """Appends for every follower that has no Append out (after ``propose``)."""
        return self._appends(now, everyone=False) if self.is_leader else []

    def tick(self, now: float) -> list[Send]:
        """Heartbeats, and Appends again to followers silent for ``heartbeat_s``; a leader that heard no majority
        within ``lease_s`` stands down."""
        if not self.is_leader:
            return []
        if self.lease_s > 0 and now - self._led_at >= self.lease_s and not self._holds_lease(now):
            self._follow(self.epoch, None)  # (a new leader has one lease to be answered by a majority)
            return []
        due = [m for m, f in self._followers.items() if f.sent_at is None or now - f.sent_at >= self.heartbeat_s]
        return [send for m in due for send in self._append_to(m, now)]

    def _holds_lease(self, now: float) -> bool:
        """Leading, and a majority (this node too) heard from within ``lease_s``."""
        heard = 1 + sum(1 for f in self._followers.values() if now - f.heard_at < self.lease_s)
        return self.is_leader and heard >= self.quorum

    def _heard_leader(self, now: float) -> bool:
        return self.role == "follower" and self.leader is not None and now - self._leader_heard < self.lease_s

    def _appends(self, now: float, everyone: bool) -> list[Send]:
        due = [m for m, f in sorted(self._followers.items()) if everyone or f.sent_at is None]
        return [send for m in due for send in self._append_to(m, now)]

    def _append_to(self, member: int, now: float) -> list[Send]:
        follower = self._followers[member]
        prev = follower.next_seq - 1
        if follower.snapshot or prev < self.state.base_seq:
            return self._snapshot_to(member, follower, now)
        entries = _page(self.state, prev)
        self._sent(follower, now, prev + len(entries))
        return [(member, Append(self.epoch, prev, self.state.epoch_at(prev), entries, self.state.committed))]

    def _sent(self, follower: Follower, now: float, upto: int) -> None:
        follower.sent_at = now
        if follower.oldest_out is None:
            follower.oldest_out = now
        follower.sent_upto = max(follower.sent_upto, upto)

    # ------------------------------------------------------------ snapshots (leading)

    def _snapshot_to(self, member: int, follower: Follower, now: float) -> list[Send]:
        """The next chunk of the snapshot for a follower that needs what the base discarded (or asked for one); if
        this node has none recent enough, ``wants_snapshot`` asks the driver for one."""
        follower.snapshot = True
        offer = self.snapshot
        if offer is None or offer.seq < max(self.state.base_seq, follower.snap_min):
            self.wants_snapshot = offer is None or offer.seq < self.applied  # (one newer than its own could help)
            follower.sent_at = now  # (the next try comes with the offer, or a heartbeat later)
            return []
        if follower.snap_seq != offer.seq:
            follower.snap_seq, follower.snap_offset = offer.seq, 0
        last_chunk = (offer.size - 1) // SNAPSHOT_CHUNK_BYTES * SNAPSHOT_CHUNK_BYTES
        offset = min(follower.snap_offset, last_chunk)  # (all held: the last again, until the install is answered)
        self._sent(follower, now, offer.seq)
        return [(member, Snapshot(self.epoch, offer.seq, offer.epoch, offer.size, offset))]

    def offer_snapshot(self, seq: int, size: int, now: float) -> list[Send]:
        """The driver wrote this node's stores at ``seq`` (its applied mark, at or after the base), ``size`` bytes:
        chunks of it go to the followers that need it."""
        if not self.state.base_seq <= seq <= self.state.last_seq or size < 1:
            raise ValueError(f"a snapshot at {seq} of {size} bytes: the log holds {self.state.base_seq} on")
        self.snapshot, self.wants_snapshot = SnapshotOffer(seq, self.state.epoch_at(seq), size), False
        if not self.is_leader:
            return []
        return [s for m, f in sorted(self._followers.items()) if f.snapshot for s in self._snapshot_to(m, f, now)]

    def _snapshot_ack(self, sender: int, message: SnapshotAck, now: float) -> list[Send]:
        follower = self._answered(sender, message.epoch, now)
        if follower is None:
            return []
        offer = self.snapshot
        if offer is not None and message.seq == offer.seq:
            follower.snap_seq, follower.snap_offset = offer.seq, min(message.offset, offer.size)
        else:  # (it asks for a snapshot covering at least seq)
            follower.snap_min, follower.snap_seq = max(follower.snap_min, message.seq), None
        follower.snapshot = True
        return self._append_to(sender, now)

    def _advance_commit(self) -> None:
        matches = sorted([self.state.last_seq, *(f.match for f in self._followers.values())], reverse=True)
        majority = matches[self.quorum - 1]
        if majority > self.state.committed and self.state.epoch_at(majority) == self.epoch:
            self.state.committed = majority

    # ------------------------------------------------------------ receiving

    def _answered(self, sender: int, epoch: Epoch, now: float) -> Follower | None:
        """The follower that answered this lead (its lease counts from the oldest Append it had not answered)."""
        if not self.is_leader or epoch != self.epoch or sender not in self._followers:
            return None
        follower = self._followers[sender]
        follower.heard_at = follower.oldest_out if follower.oldest_out is not None else now
        follower.sent_at = follower.oldest_out = None
        return follower

    def receive(self, sender: int, message: Message, now: float) -> list[Send]:
        """Take ``message`` from the member ``sender``; what to send in answer (after persisting ``state``)."""
        if sender not in self.members or sender == self.me:
            return []  # (the transport authenticated the sender; a non-member has no say)
        if isinstance(message, Prepare):
            return self._prepare(sender, message, now)
        if isinstance(message, Append):
            return self._append(sender, message, now)
        if isinstance(message, Refused):
            if message.promised > self.epoch:
                self._follow(message.promised, None)
            return []
        if isinstance(message, Promise):
            return self._promise(sender, message, now)
        if isinstance(message, Snapshot):
            return self._snapshot(sender, message, now)
        if isinstance(message, SnapshotAck):
            return self._snapshot_ack(sender, message, now)
        return self._appended(sender, message, now)

    def _promise(self, sender: int, message: Promise, now: float) -> list[Send]:
        if message.pre:
            if message.epoch != self._pre_epoch or not message.granted:
                return []
            self._pre_grants.add(sender)
            return self._maybe_campaign(now)
        if self.role != "candidate" or message.epoch != self.epoch or not message.granted:
            return []
        self._grants.add(sender)
        return self._maybe_lead(now)

    def _prepare(self, sender: int, message: Prepare, now: float) -> list[Send]:
        if message.epoch < self.state.promised or message.epoch[1] != sender:
            return [(sender, Refused(self.state.promised))]
        if self.lease_s > 0 and sender != self.leader and (self._holds_lease(now) or self._heard_leader(now)):
            return []  # a leader heard lately keeps the lead (leader stickiness)
        if now < self._quiet_until:
            return []  # (just started: see __init__)
        last = self.state.last_seq
        granted = (message.last_epoch, message.last_seq) >= (self.state.epoch_at(last), last)
        if message.pre:  # (nothing changes here: it only asks)
            return [(sender, Promise(message.epoch, granted and message.epoch > self.state.promised, pre=True))]
        self._follow(message.epoch, None)
        return [(sender, Promise(message.epoch, granted))]

    def _heard_from_leader(self, sender: int, epoch: Epoch, now: float) -> bool:
        """Follow ``sender`` leading ``epoch`` unless an older epoch (then it is to be refused)."""
        if epoch < self.state.promised or epoch[1] != sender:
            return False
        self._follow(epoch, sender)
        self._leader_heard = now
        return True

    def _append(self, sender: int, message: Append, now: float) -> list[Send]:
        if not self._heard_from_leader(sender, message.epoch, now):
            return [(sender, Refused(self.state.promised))]
        state = self.state
        if state.stale:  # (its stores wait for a snapshot: it takes no entry until one is installed)
            return [(sender, SnapshotAck(message.epoch, state.base_seq, 0))]
        prev, prev_epoch, entries = message.prev_seq, message.prev_epoch, message.entries
        if prev < state.base_seq:  # what the base covers is committed, so the leader's log has it too
            prev, prev_epoch = state.base_seq, state.base_epoch
            entries = tuple(e for e in entries if e.seq > state.base_seq)
        if prev > state.last_seq or state.epoch_at(prev) != prev_epoch:
            return [(sender, Appended(message.epoch, False, max(state.base_seq, min(state.last_seq, prev - 1))))]
        for entry in entries:
            if entry.seq <= state.last_seq and state.entry(entry.seq).epoch != entry.epoch:
                state.truncate_from(entry.seq)
            if entry.seq > state.last_seq:
                state.log.append(entry)
                state.changed(entry.seq)
        match = message.prev_seq + len(message.entries)
        self.state.committed = max(self.state.committed, min(message.commit, match))
        return [(sender, Appended(message.epoch, True, match))]

    def _appended(self, sender: int, message: Appended, now: float) -> list[Send]:
        follower = self._answered(sender, message.epoch, now)
        if follower is None:
            return []
        if message.ok:
            follower.match = max(follower.match, min(message.match, follower.sent_upto))  # (never beyond what went)
            follower.next_seq = follower.match + 1
            follower.snapshot, follower.snap_min = False, 0
            before = self.state.committed
            self._advance_commit()
            more = follower.next_seq <= self.state.last_seq or self.state.committed > before
        elif follower.snapshot:  # (it holds what the snapshot covers already: Appends from its log's end on)
            follower.snapshot, follower.snap_min = False, 0
            follower.next_seq = min(message.match, self.state.last_seq) + 1
            more = True
        else:
            follower.next_seq = max(1, min(follower.next_seq - 1, message.match + 1))
            more = True
        return self._append_to(sender, now) if more else []

    def _follow(self, epoch: Epoch, leader: int | None) -> None:
        """Follow ``epoch`` (promised from now on): a candidate or leader of another epoch stands down."""
        self.state.promised = max(self.state.promised, epoch)
        if self.role != "follower" or self.epoch != epoch:
            self.role, self.leader, self._grants, self._followers = "follower", None, set(), {}
            self._pre_epoch = None
        if self.epoch != epoch:
            self.receiver.forget()  # (another leader's snapshot may differ in its bytes: it starts again)
        self.epoch = epoch
        if leader is not None:
            self.leader = leader

    def _snapshot(self, sender: int, message: Snapshot, now: float) -> list[Send]:
        if not self._heard_from_leader(sender, message.epoch, now):
            return [(sender, Refused(self.state.promised))]
        answer = self.receiver.receive(message, self.state, self.applied)
        return [] if answer is None else [(sender, answer)]

    def take_chunk(self) -> Snapshot | None:
        """A snapshot chunk received, for the driver to write at its offset (0: a new file) before it sends."""
        chunk, self.receiver.chunk = self.receiver.chunk, None
        return chunk

    def install_begin(self) -> tuple[int, Epoch]:
        """The whole snapshot is received (``receiver.ready``): it becomes the base, the state ``stale`` until
        ``install_end``.  The driver saves this state before it replaces its stores' content (module
        ``journal_snapshots``): a crash in between leaves a node that asks for a snapshot again."""
        ready, self.receiver.ready = self.receiver.ready, None
        if ready is None:
            raise ValueError("no snapshot was received whole")
        self.state.install(*ready)
        self.applied = ready[0]
        return ready

    def install_end(self) -> list[Send]:
        """The stores hold the snapshot: the leader hears that the log matches up to it."""
        self.state.stale = False
        if self.role != "follower" or self.leader is None:
            return []
        return [(self.leader, Appended(self.epoch, True, self.state.base_seq))]

    # ------------------------------------------------------------ applying

    def to_apply(self) -> list[Entry]:
        """The committed entries this node has not applied yet, in order, leaders' no-ops included (the driver
        applies each, then ``applied_through`` its seq: an entry whose apply failed is offered again)."""
        if self.state.stale:
            return []
        return self.state.entries_after(self.applied, min(self.state.committed, self.state.last_seq))

    def applied_through(self, seq: int) -> None:
        self.applied = max(self.applied, seq)

    def compact(self, keep: int, now: float) -> int:
        """``state.compact``, but a leader keeps the entries after a snapshot it is sending to a follower heard
        within ``HOLD_HEARTBEATS`` heartbeats (it goes on from there once it installed it; one gone silent holds
        nothing back)."""
        sending = [f.snap_seq for f in self._followers.values()
                   if f.snapshot and f.snap_seq is not None and now - f.heard_at < HOLD_HEARTBEATS * self.heartbeat_s]
        return self.state.compact(keep, min(sending, default=None))

    def take_committed(self) -> list[Entry]:
        """``to_apply`` all at once, marked applied, without the no-ops (for drivers whose apply cannot fail)."""
        taken = self.to_apply()
        if taken:
            self.applied_through(taken[-1].seq)
        return [e for e in taken if e.data]


def _page(state: JournalState, start: int) -> tuple[Entry, ...]:
    """The entries after seq ``start`` (at or after the base) that one message carries (at least one, if any)."""
    page: list[Entry] = []
    size = 0
    for entry in state.entries_after(start, start + MAX_BATCH):
        if page and size + len(entry.data) > MAX_BATCH_BYTES:
            break
        page.append(entry)
        size += len(entry.data)
    return tuple(page)
