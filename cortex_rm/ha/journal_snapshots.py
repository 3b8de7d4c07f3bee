"""What the journal's leader keeps of each follower (``Follower``: how far it matches, the snapshot it is sent),
its snapshot (``SnapshotOffer``), and a follower's side of an install (``SnapshotReceiver``); ``ha/journal.py``
is the protocol.

A follower that needs what the leader's base discarded receives the leader's snapshot in
chunks (``Snapshot``, each at most ``SNAPSHOT_CHUNK_BYTES``), in order, answering each with
how much it holds (``SnapshotAck``); the driver writes each chunk to a file as it comes, so
neither side holds more than one chunk.  Chunk 0 starts an install afresh (a leader that
changed its snapshot, or this node restarted: what an install received is forgotten on a
restart, and the leader starts again from the offset the answer names).  Once the last
byte is in, ``ready`` is set and the driver installs it (``JournalNode.install_begin`` /
``install_end``): the snapshot becomes the log's base, and only then does the follower
answer ``Appended(ok, seq)`` so that the leader goes on with Appends after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.ha.journal_log import Appended, Epoch, JournalState, Message, Snapshot, SnapshotAck


@dataclass(frozen=True)
class SnapshotOffer:
    """The leader's snapshot, as its driver wrote it: its stores at ``seq`` (of ``epoch``), ``size`` bytes."""

    seq: int
    epoch: Epoch
    size: int


@dataclass
class Follower:
    """The leader's record of one follower during one lead."""

    next_seq: int
    heard_at: float  # when the oldest Append it answered last went out (-inf: none of this lead yet)
    match: int = 0
    sent_at: float | None = None  # an Append is out and not yet answered since
    oldest_out: float | None = None  # when the oldest Append not yet answered went out (the lease counts from it)
    sent_upto: int = 0  # the last seq the Appends sent so far could have carried
    snapshot: bool = False  # it is sent the snapshot instead of Appends (it needs what the base discarded)
    snap_min: int = 0  # it asked for a snapshot covering at least this seq
    snap_seq: int | None = None  # the snapshot it is sent, and how far it holds it
    snap_offset: int = 0


@dataclass
class _Install:
    seq: int
    epoch: Epoch
    size: int
    received: int = 0


class SnapshotReceiver:
    """A follower's install under way (volatile), the chunk the driver is to write next, and ``ready``."""

    def __init__(self) -> None:
        self._install: _Install | None = None
        self.chunk: Snapshot | None = None
        self.ready: tuple[int, Epoch] | None = None  # all received: the seq and epoch to install

    def receive(self, message: Snapshot, state: JournalState, applied: int) -> Message | None:
        """Take one chunk from the leader (epoch checked); the answer, or None once the last byte is in."""
        if not state.stale and message.seq <= applied:  # (its stores hold that much already: Appends will do)
            return Appended(message.epoch, False, state.last_seq)
        if message.seq < state.base_seq:  # (older than its log's start: it needs one that covers its base)
            return SnapshotAck(message.epoch, state.base_seq, 0)
        install = self._install
        if message.offset == 0:
            install = self._install = _Install(message.seq, message.last_epoch, message.size)
            self.ready = None
        same = install is not None and (install.seq, install.epoch, install.size) == (
            message.seq, message.last_epoch, message.size)  # fmt: skip
        end = message.offset + len(message.data)
        if install is None or not same or message.offset != install.received or not message.data or end > install.size:
            return SnapshotAck(message.epoch, message.seq, install.received if install is not None and same else 0)
        self.chunk = message
        install.received = end
        if end < install.size:
            return SnapshotAck(message.epoch, message.seq, end)
        self.ready, self._install = (install.seq, install.epoch), None
        return None

    def forget(self) -> None:
        """Drop the install under way (the driver could not write or install it: the leader starts it again)."""
        self._install, self.chunk, self.ready = None, None, None
