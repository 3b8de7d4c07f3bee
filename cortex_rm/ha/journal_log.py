"""The RM journal's vocabulary (``ha/journal.py`` is the protocol): epochs, entries, the messages members exchange,
and ``JournalState``, what a member keeps on disk (``ha/journal_store.py``)."""

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


Message = Prepare | Promise | Append | Appended | Refused
Send = tuple[int, Message]


class NotLeader(Exception):
    """This node does not lead the journal now; ``leader`` is the one it follows, if known."""

    def __init__(self, leader: int | None) -> None:
        super().__init__("this node does not lead the RM's journal" + (f" ({leader:x} does)" if leader else ""))
        self.leader = leader


@dataclass
class JournalState:
    """What a node must keep on disk: the epoch it promised, its log, how far it knows the log committed."""

    promised: Epoch = NO_EPOCH
    log: list[Entry] = field(default_factory=list)
    committed: int = 0
    #: The lowest seq whose entry changed (written, replaced or removed) since the driver last saved the log.
    dirty_from: int | None = None
    #: The driver's: how far this node's state copy applied the log, as last saved (applying is idempotent,
    #: so a mark saved late only means some entries are applied again after a restart).
    applied: int = 0

    def changed(self, seq: int) -> None:
        self.dirty_from = seq if self.dirty_from is None else min(self.dirty_from, seq)

    @property
    def last_seq(self) -> int:
        return len(self.log)

    def epoch_at(self, seq: int) -> Epoch:
        return self.log[seq - 1].epoch if 0 < seq <= len(self.log) else NO_EPOCH
