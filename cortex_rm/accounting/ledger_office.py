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

from collections.abc import Sequence
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
MAX_CLOSES_PER_CHECK = 12  # periods closed at one check (a cluster that was off for a year catches up over a few)


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

    def __init__(self, log: MerkleLog, key: ec.EllipticCurvePrivateKey, rules: OfficeRules) -> None:
        self.log = log
        self.key = key
        self.rules = rules
        self._own_key = public_key_bytes(key.public_key())
        self.contents: LedgerContents = read_ledger(log, log.size(), self.signer_trusted)
        self.classes = NodeClasses(rules.thresholds)

    def signer_trusted(self, key: bytes) -> bool:
        """Our own key, or that of a ring id in ``[ring] resource_managers``."""
        if key == self._own_key:
            return True
        try:
            return key_identity(key)[1] in self.rules.resource_managers
        except ValueError:
            return False

    # ------------------------------------------------------------ appending

    def _append(self, entries: Sequence[LedgerEntry]) -> int:
        first = self.log.append(entries)
        for offset, entry in enumerate(entries):
            self.contents.absorb(first + offset, entry.kind, entry.payload, self.signer_trusted)
        return first

    def record_membership(self, change: MembershipChange) -> int:
        """Sign and append a membership change; its index."""
        return self._append([membership_entry(sign_membership(self.key, change))])

    def submit(self, witness: int, batches: Sequence[SignedAttestations], now_ms: int) -> Receipts:
        """Append ``witness``'s batches (module doc); ``SubmissionRefused`` takes none of them."""
        if not 1 <= len(batches) <= MAX_BATCHES_PER_CALL:
            raise SubmissionRefused(f"send 1 to {MAX_BATCHES_PER_CALL} batches at a time, not {len(batches)}")
        for number, batch in enumerate(batches):
            if batch.witness != witness:
                raise SubmissionRefused(f"batch {number} is signed by {batch.witness:040x}, not by this node's key")
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
        first = self._append([entry for _, entry in fresh.values()]) if fresh else self.log.size()
        indices = [
            index if index is not None else first + fresh[attestation_entry(batch).leaf_hash()][0]
            for index, batch in zip(known, batches)
        ]
        head = self.log.sign_tree_head(self.key, now_ms)
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
        tally = tally_period(self.log, period, size, history, self.rules.rules)
        return PayoutReport(period, False, size, tuple(payout_rows(tally.uptimes())))

    def next_to_close(self) -> Period | None:
        """The oldest period without a statement, from the first membership change on (None: the log is empty)."""
        if self.contents.statements:
            return self.rules.periods.following(max(s.period for _, s in self.contents.statements))
        first = self.contents.memberships.first_ms
        return None if first is None else self.rules.periods.period_at(max(first, self.rules.periods.origin_ms))

    def close_due(self, now_ms: int) -> list[Period]:
        """Close every period that ended at least ``close_delay_ms`` ago (module doc); those closed."""
        closed: list[Period] = []
        period = self.next_to_close()
        while period is not None and period.end_ms + self.rules.close_delay_ms <= now_ms:
            if len(closed) >= MAX_CLOSES_PER_CHECK:
                break
            size = self.log.size()
            history = neighbour_table(self.contents, period.end_ms, self.rules.successors)
            tally = tally_period(self.log, period, size, history, self.rules.rules)
            statement = sign_statement(self.key, tally.statement(size, self.log.root_hash(size)))
            self._append([statement_entry(statement)])
            self.log.sign_tree_head(self.key, now_ms)
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
        tally = tally_period(self.log, Period(start, now_ms), self.log.size(), history, self.rules.rules)
        subjects = set(tally.uptimes()) | set(self.classes.static_nodes())
        for node in sorted(subjects):
            self.classes.update(node, tally.uptime_intervals(node), now_ms)
        return self.classes.static_nodes()

    def tree_head(self, now_ms: int) -> SignedTreeHead:
        """The latest signed head, signed anew when the log grew since (or none was ever signed)."""
        latest = self.log.latest_tree_head()
        if latest is None or latest.size != self.log.size():
            latest = self.log.sign_tree_head(self.key, now_ms)
        return latest


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
