"""The RM journal's vocabulary (``ha/journal.py`` is the protocol): epochs, entries, the messages members exchange,
and ``JournalState``, what a member keeps on disk (``ha/journal_store.py``).

A member's log is the entries after its **base**: ``base_seq`` (with its entry's epoch, ``base_epoch``) is the
last entry it discarded (compaction, ``JournalState.compact``), or the seq a snapshot it installed covers
(``JournalState.install``).  Everything up to the base is committed and applied to the member's stores,
which therefore are its snapshot: ``log[0]`` is entry ``base_seq + 1``, and every index into the log
goes through ``entry``/``epoch_at``/``entries_after``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Epoch = tuple[int, int]
"""A ballot: (number, ring id of the node that started it); ordered as a tuple."""
NO_EPOCH: Epoch = (0, 0)

#: Entries per Append at most, and their data's bytes (at least one entry goes): a follower far behind is
#: caught up over several Appends.
MAX_BATCH = 256
MAX_BATCH_BYTES = 768 * 1024
#: One entry's data at most (``propose`` refuses more).
MAX_ENTRY_BYTES = 512 * 1024
#: A snapshot chunk's data at most (a ring Direct message carries ``MAX_DIRECT_BYTES``, a little under 1 MiB).
SNAPSHOT_CHUNK_BYTES = 512 * 1024


@dataclass(frozen=True)
class Entry:
    epoch: Epoch  # the epoch of the leader that wrote it (last)
    seq: int  # 1, 2, ...
    data: bytes


@dataclass(frozen=True)
class Prepare:
    epoch: Epoch
    last_seq: int  # the campaigner's log: its length, and its last entry's epoch
    last_epoch: Epoch
    pre: bool = False  # a pre-vote: would you grant it? (nothing is promised)


@dataclass(frozen=True)
class Promise:
    epoch: Epoch
    granted: bool  # False: promised (no older epoch from now on), but the campaigner's log is behind
    pre: bool = False  # the answer to a pre-vote


@dataclass(frozen=True)
class Append:
    epoch: Epoch
    prev_seq: int
    prev_epoch: Epoch
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True)
class Appended:
    epoch: Epoch
    ok: bool
    match: int  # ok: the last seq now matching the leader's log; not ok: the follower's last seq


@dataclass(frozen=True)
class Refused:
    promised: Epoch  # the refuser's: the sender's epoch is older


@dataclass(frozen=True)
class Snapshot:
    """One chunk of the leader's snapshot: its stores' content once they applied every entry up to ``seq`` (whose
    epoch is ``last_epoch``), ``size`` bytes in all; this chunk is ``data`` at ``offset``.  The core leaves ``data``
    empty: the driver reads it (``SNAPSHOT_CHUNK_BYTES`` at most, fewer at the end) before sending."""

    epoch: Epoch
    seq: int
    last_epoch: Epoch
    size: int
    offset: int
    data: bytes = b""


@dataclass(frozen=True)
class SnapshotAck:
    """A follower holds the first ``offset`` bytes of the snapshot at ``seq``; send on from there.  With no
    install of that seq under way, ``offset`` 0 asks for a snapshot covering at least ``seq``."""

    epoch: Epoch
    seq: int
    offset: int


Message = Prepare | Promise | Append | Appended | Refused | Snapshot | SnapshotAck
Send = tuple[int, Message]


class NotLeader(Exception):
    """This node does not lead the journal now; ``leader`` is the one it follows, if known."""

    def __init__(self, leader: int | None) -> None:
        super().__init__("this node does not lead the RM's journal" + (f" ({leader:x} does)" if leader else ""))
        self.leader = leader


@dataclass
class JournalState:
    """What a node must keep on disk: the epoch it promised, its log after its base, how far it knows the log
    committed, and how far its stores applied it."""

    promised: Epoch = NO_EPOCH
    log: list[Entry] = field(default_factory=list)  # entries base_seq + 1 ...
    committed: int = 0
    #: The lowest seq whose entry changed (written, replaced or removed) since the driver last saved the log.
    dirty_from: int | None = None
    #: The driver's: how far this node's state copy applied the log, as last saved (applying is idempotent,
    #: so a mark saved late only means some entries are applied again after a restart).  Never below the base.
    applied: int = 0
    base_seq: int = 0
    base_epoch: Epoch = NO_EPOCH
    #: The stores hold no usable state: a snapshot install began and has not finished (a crash cut it short, or
    #: it is under way); nothing is applied until a snapshot covering at least ``base_seq`` is installed.
    stale: bool = False

    def changed(self, seq: int) -> None:
        self.dirty_from = seq if self.dirty_from is None else min(self.dirty_from, seq)

    @property
    def last_seq(self) -> int:
        return self.base_seq + len(self.log)

    def epoch_at(self, seq: int) -> Epoch:
        """The epoch of entry ``seq``: the base's at the base; NO_EPOCH before it (discarded) and after the log."""
        if seq == self.base_seq:
            return self.base_epoch
        return self.log[seq - self.base_seq - 1].epoch if self.base_seq < seq <= self.last_seq else NO_EPOCH

    def entry(self, seq: int) -> Entry:
        return self.log[seq - self.base_seq - 1]

    def entries_after(self, seq: int, upto: int | None = None) -> list[Entry]:
        """The entries ``seq + 1 .. upto`` (the log's end by default); ``seq`` at or after the base."""
        start = seq - self.base_seq
        if start < 0:
            raise ValueError(f"entries after {seq} were discarded (the base is {self.base_seq})")
        return self.log[start : None if upto is None else max(start, upto - self.base_seq)]

    def truncate_from(self, seq: int) -> None:
        """Remove the entries ``seq ..`` (a conflicting leader's; never committed ones)."""
        del self.log[seq - self.base_seq - 1 :]
        self.changed(seq)

    def compact(self, keep: int, at_most: int | None = None) -> int:
        """Discard the applied entries but the last ``keep`` of them (and none after ``at_most``); the new base
        (the stores are the snapshot of what was discarded: the store deletes it on disk with the applied mark,
        in one transaction)."""
        upto = min(self.applied, self.committed) - keep
        upto = upto if at_most is None else min(upto, at_most)
        if upto > self.base_seq and not self.stale:
            self.base_epoch = self.epoch_at(upto)
            del self.log[: upto - self.base_seq]
            self.base_seq = upto
        return self.base_seq

    def install(self, seq: int, epoch: Epoch) -> None:
        """A snapshot covering ``seq`` (of ``epoch``) goes into the stores: it becomes the base, applied and
        committed; the entries after it stay if the log agrees at ``seq`` (Raft's rule), else the log is
        emptied (what conflicts is not committed).  ``stale`` until the driver says the stores hold it."""
        keep = self.entries_after(seq) if self.base_seq <= seq <= self.last_seq and self.epoch_at(seq) == epoch else []
        if not keep:
            self.changed(seq + 1)
        self.log, self.base_seq, self.base_epoch = list(keep), seq, epoch
        self.committed = max(self.committed, seq)
        self.applied = seq
        self.stale = True
