"""The active RM's ledger work: what it appends, what it answers, and when it closes a period.

``LedgerOffice`` is blocking (it reads and writes the ``MerkleLog``) and keeps no
clock: every call takes ``now_ms``.  The RM role runs it on the ledger's one
thread (``roles/ledger_keeper.py``); tests drive it inline on a memory store.

* ``record_membership``: a change of the ring's live members, signed and appended
  (``membership_log.py``).
* ``submit``: a witness's attestation batches.  Each must decode and be signed by
  the key of the witness that sends it (the caller passes the ring id its TLS
  connection proved); a batch already in the log is not appended again.  The
  answer holds each batch's index and inclusion proof in a freshly signed tree
  head, which the witness keeps.
* ``payouts``: a period's figures -- the signed statement once the period is
  closed, else the rules applied to the log as it is now.
* ``close_due``: every period that ended ``close_delay_ms`` ago and has no
  statement gets one (signed, appended), oldest first.
* ``update_classes``: every node's class from its attested uptime over the
  class window (``node_classes.py``); the static ones are returned.

The office keeps the membership replay and the statements (``LedgerContents``) up
to date as it appends, so only the payout tally reads the log.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.accounting.attestations import SignedAttestations, key_identity, public_key_bytes, signature_error
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import BadLedgerRequest
from cortex_rm.accounting.ledger_reading import (
    LedgerContents,
    PayoutRow,
    attestation_entry,
    membership_entry,
    neighbour_table,
    payout_rows,
    read_ledger,
    statement_entry,
    tally_period,
)
from cortex_rm.accounting.ledger_store import LedgerEntry
from cortex_rm.accounting.membership_log import MembershipChange, sign_membership
from cortex_rm.accounting.node_classes import ClassThresholds, NodeClasses
from cortex_rm.accounting.payout_statement import sign_statement
from cortex_rm.accounting.payouts import PayoutRules
from cortex_rm.accounting.periods import Period, PeriodScheme
from cortex_rm.accounting.tree_heads import SignedTreeHead

MAX_BATCHES_PER_CALL = 16
MAX_ATTESTATIONS_PER_BATCH = 256  # a witness watches ~9 neighbours: an hour's batch holds a few pieces each
MAX_BATCH_BYTES = 108 + 40 * MAX_ATTESTATIONS_PER_BATCH  # its encoding (attestations.py), ~10 KiB
MAX_CLOCK_SKEW_MS = 5 * 60_000
"""An attestation may end at most this far in the future of the RM's clock.  So every entry appended
before an instant T holds nothing after T + this: a tally of a period starts at the first entry
appended after its start minus this (``tally_start``), not at entry 0."""
MAX_CLOSES_PER_CHECK = 12  # periods closed at one check (a cluster that was off for a year catches up over a few)
MARK_EVERY_MS = 60_000  # the office remembers the log's size at most once a minute (``tally_start``)
MARK_MARGIN_MS = 3_600_000  # how late after its time a membership entry may have been appended, at most


class SubmissionRefused(Exception):
    """A witness's batches were not taken; the message says why."""


@dataclass(frozen=True)
class Receipt:
    """Where one batch is in the log, and its audit path in the tree of the receipts' tree head."""

    index: int
    audit_path: tuple[bytes, ...]


@dataclass(frozen=True)
class Receipts:
    receipts: tuple[Receipt, ...]
    tree_head: SignedTreeHead


@dataclass(frozen=True)
class PayoutReport:
    """A period's payouts: from its statement when ``closed``, else from the log's first ``log_size`` entries."""

    period: Period
    closed: bool
    log_size: int
    rows: tuple[PayoutRow, ...]


@dataclass(frozen=True)
class OfficeRules:
    """What the office needs to know of the cluster's configuration."""

    successors: int
    rules: PayoutRules
    periods: PeriodScheme
    thresholds: ClassThresholds
    close_delay_ms: int
    resource_managers: frozenset[int] = frozenset()


class LedgerOffice:
    """The RM's ledger work, blocking (see the module doc)."""

    def __init__(
        self, log: MerkleLog, key: ec.EllipticCurvePrivateKey, rules: OfficeRules, wall_ms: Callable[[], int]
    ) -> None:
        self.log = log
        self.wall_ms = wall_ms  # the clock marks are taken on (``tally_start``), read where the office runs
        self.key = key
        self.rules = rules
        self._own_key = public_key_bytes(key.public_key())
        self.contents: LedgerContents = read_ledger(log, log.size(), self.signer_trusted)
        self.classes = NodeClasses(rules.thresholds)
        self._head: SignedTreeHead | None = log.latest_tree_head()  # (read once: heads are many)
        # (time, log size): every entry before that size was appended before that time.  From the
        # membership entries: their own time plus a margin (the thread may have lagged); then ours.
        self._marks: list[tuple[int, int]] = [(at + MARK_MARGIN_MS, i) for at, i in self.contents.membership_marks]

    def signer_trusted(self, key: bytes) -> bool:
        """Our own key, or that of a ring id in ``[ring] resource_managers``."""
        if key == self._own_key:
            return True
        try:
            return key_identity(key)[1] in self.rules.resource_managers
        except ValueError:
            return False

    # ------------------------------------------------------------ appending

    def _append(self, entries: Sequence[LedgerEntry], now_ms: int) -> int:
        wall = self.wall_ms()  # now, on the thread: every entry so far was appended before it
        if not self._marks or wall - self._marks[-1][0] >= MARK_EVERY_MS:
            self._marks.append((wall, self.log.size()))
        first = self.log.append(entries)
        for offset, entry in enumerate(entries):
            self.contents.absorb(first + offset, entry.kind, entry.payload, self.signer_trusted)
        return first

    def tally_start(self, start_ms: int) -> int:
        """The first entry that may hold an instant at or after ``start_ms`` (``MAX_CLOCK_SKEW_MS``)."""
        index = bisect.bisect_right(self._marks, (start_ms - MAX_CLOCK_SKEW_MS, 1 << 63)) - 1
        return self._marks[index][1] if index >= 0 else 0

    def record_membership(self, change: MembershipChange) -> int:
        """Sign and append a membership change; its index."""
        return self._append([membership_entry(sign_membership(self.key, change))], change.at_ms)

    def submit(self, witness: int, batches: Sequence[SignedAttestations], now_ms: int) -> Receipts:
        """Append ``witness``'s batches (module doc); ``SubmissionRefused`` takes none of them.

        Refused: a batch not signed by the sender's key, one of more than
        ``MAX_ATTESTATIONS_PER_BATCH`` attestations, an attestation ending more than
        ``MAX_CLOCK_SKEW_MS`` in the future, a witness that is not a live ring member,
        and a batch none of whose subjects was ever a member (nothing in it could count).
        """
        if not 1 <= len(batches) <= MAX_BATCHES_PER_CALL:
            raise SubmissionRefused(f"send 1 to {MAX_BATCHES_PER_CALL} batches at a time, not {len(batches)}")
        if witness not in self.contents.memberships.live:
            raise SubmissionRefused("this node is not a live ring member in the ledger (yet); retry later")
        members = self.contents.memberships.ever
        for number, batch in enumerate(batches):
            if batch.witness != witness:
                raise SubmissionRefused(f"batch {number} is signed by {batch.witness:040x}, not by this node's key")
            if len(batch.attestations) > MAX_ATTESTATIONS_PER_BATCH:
                raise SubmissionRefused(f"batch {number} holds more than {MAX_ATTESTATIONS_PER_BATCH} attestations")
            if any(a.end_ms > now_ms + MAX_CLOCK_SKEW_MS for a in batch.attestations):
                raise SubmissionRefused(f"batch {number} attests the future (is this node's clock right?)")
            if not any(a.subject in members for a in batch.attestations):
                raise SubmissionRefused(f"batch {number} attests no ring member")
            error = signature_error(batch)
            if error is not None:
                raise SubmissionRefused(f"batch {number}: {error}")
        known: list[int | None] = []  # per batch: its index in the log, or None: appended now
        fresh: dict[bytes, tuple[int, LedgerEntry]] = {}  # leaf hash -> (position among the new, entry)
        for batch in batches:
            entry = attestation_entry(batch)
            index = self.log.index_of(entry)
            known.append(index)
            if index is None:
                fresh.setdefault(entry.leaf_hash(), (len(fresh), entry))
        first = self._append([entry for _, entry in fresh.values()], now_ms) if fresh else self.log.size()
        indices = [
            index if index is not None else first + fresh[attestation_entry(batch).leaf_hash()][0]
            for index, batch in zip(known, batches)
        ]
        head = self.tree_head(now_ms)
        return Receipts(
            tuple(Receipt(i, tuple(self.log.inclusion_proof(i, head.size))) for i in indices), head
        )

    # ------------------------------------------------------------ payouts

    def payouts(self, period: Period | None, now_ms: int) -> PayoutReport:
        """``period``'s payouts (the current period by default): closed, or as the log stands."""
        period = period or self.rules.periods.period_at(now_ms)
        found = self.contents.statement_for(period)
        if found is not None:
            _, statement = found
            return PayoutReport(period, True, statement.log_size, tuple(payout_rows(dict(statement.uptimes))))
        size = self.log.size()
        history = neighbour_table(self.contents, min(now_ms, period.end_ms), self.rules.successors)
        tally = tally_period(self.log, period, size, history, self.rules.rules, self.tally_start(period.start_ms))
        return PayoutReport(period, False, size, tuple(payout_rows(tally.uptimes())))

    def next_to_close(self) -> Period | None:
        """The oldest period without a statement, from the first membership change on (None: the log is empty)."""
        if self.contents.statements:
            return self.rules.periods.following(max(s.period for _, s in self.contents.statements))
        first = self.contents.memberships.first_ms
        return None if first is None else self.rules.periods.period_at(max(first, self.rules.periods.origin_ms))

    def close_due(self, now_ms: int, accepting_since_ms: int = 0) -> list[Period]:
        """Close every period that ended at least ``close_delay_ms`` ago (module doc); those closed.

        Nothing closes before the office has taken submissions for ``close_delay_ms``
        (``accepting_since_ms``: since this RM started): after an outage the witnesses
        first resend what they kept meanwhile.
        """
        closed: list[Period] = []
        if now_ms - accepting_since_ms < self.rules.close_delay_ms:
            return closed
        period = self.next_to_close()
        while period is not None and period.end_ms + self.rules.close_delay_ms <= now_ms:
            if len(closed) >= MAX_CLOSES_PER_CHECK:
                break
            size = self.log.size()
            history = neighbour_table(self.contents, period.end_ms, self.rules.successors)
            tally = tally_period(self.log, period, size, history, self.rules.rules, self.tally_start(period.start_ms))
            statement = sign_statement(self.key, tally.statement(size, self.log.root_hash(size)))
            self._append([statement_entry(statement)], now_ms)
            self.tree_head(now_ms)
            closed.append(period)
            period = self.rules.periods.following(period)
        return closed

    # ------------------------------------------------------------ classes

    def update_classes(self, now_ms: int) -> frozenset[int]:
        """Re-class every node attested in the window or static now; the static ones."""
        window = self.rules.thresholds.window_ms
        start = max(0, now_ms - window)
        if now_ms <= start:
            return self.classes.static_nodes()
        history = neighbour_table(self.contents, now_ms, self.rules.successors)
        tally = tally_period(self.log, Period(start, now_ms), self.log.size(), history, self.rules.rules, self.tally_start(start))
        subjects = set(tally.uptimes()) | set(self.classes.static_nodes())
        for node in sorted(subjects):
            # since the ring first gave it a prober (a member nobody could witness, alone in a young ring, is not
            # counted down), if before its first attested instant
            probed = history.witnesses_of(node, start, now_ms)
            since = min((span[0] for spans in probed.values() for span in spans), default=None)
            self.classes.update(node, tally.uptime_intervals(node), now_ms, since)
        return self.classes.static_nodes()

    def tree_head(self, now_ms: int) -> SignedTreeHead:
        """The latest signed head, signed anew only when the log grew since (or none was ever signed)."""
        if self._head is None or self._head.size != self.log.size():
            self._head = self.log.sign_tree_head(self.key, now_ms)
        return self._head


def check_period(start_ms: int | None, end_ms: int | None) -> Period | None:
    """The period a query names (both ends or neither); ``BadLedgerRequest`` for one end or an empty range."""
    if start_ms is None and end_ms is None:
        return None
    if start_ms is None or end_ms is None:
        raise BadLedgerRequest("give both start and end (ms since the epoch), or neither for the current period")
    try:
        return Period(start_ms, end_ms)
    except ValueError as e:
        raise BadLedgerRequest(str(e)) from None
