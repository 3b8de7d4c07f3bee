"""Reading the ledger back: its three kinds of entry, the membership it records, and a period's payouts.

The ledger holds three kinds of entry (``LedgerEntry.kind``), each payload
starting with its own kind byte:

* ``attestations``: a witness's signed batch (``attestations.py``);
* ``membership``: the RM's signed membership changes (``membership_log.py``);
* ``payout-statement``: a closed period's uptimes, signed by the RM (``payout_statement.py``).

``read_ledger`` makes one pass over a prefix of the log and keeps what the other
passes need: the membership replay and every statement.  ``tally_period`` makes a
second pass and applies the payout rules (``payouts.py``) for one period, with
the neighbour history the membership gives (``neighbour_history.ring_neighbour_table``).
Anyone holding the same prefix and the same successor-list length gets the same
figures: that is how ``cortex-rm ledger verify`` recomputes every statement.

Which keys may sign membership and statements is the reader's policy
(``Signers``): the ring ids in ``[ring] resource_managers``, or, when that list
is empty, the key that signed the log's first membership change (the RM that
started the log: trust on first use).  Entries signed by anyone else are not
believed, and counted.

Blocking: these run on the ledger's thread, or in the CLI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

from cortex_rm.accounting.attestations import KIND_ATTESTATIONS, SignedAttestations, key_identity
from cortex_rm.accounting.intervals import Interval
from cortex_rm.accounting.ledger import AUDIT_CHUNK, MerkleLog
from cortex_rm.accounting.ledger_store import LedgerEntry, StoredEntry
from cortex_rm.accounting.membership_log import (
    MembershipChange,
    Memberships,
    decode_membership,
    membership_error,
)
from cortex_rm.accounting.neighbour_history import NeighbourTable, ring_neighbour_table
from cortex_rm.accounting.payout_statement import (
    PayoutStatement,
    decode_statement,
    statement_error,
)
from cortex_rm.accounting.payouts import PayoutRules, UptimeTally, shares
from cortex_rm.accounting.periods import Period

ATTESTATIONS = "attestations"
MEMBERSHIP = "membership"
PAYOUT_STATEMENT = "payout-statement"

#: Whether a signer key (SEC1 compressed point) may sign membership changes and statements.
Signers = Callable[[bytes], bool]


#: The entries the RM signs: kind -> (what the audit calls it, its decoder).
_RM_DECODERS: dict[str, tuple[str, Callable[[bytes], MembershipChange | PayoutStatement]]] = {
    MEMBERSHIP: ("membership change", decode_membership),
    PAYOUT_STATEMENT: ("payout statement", decode_statement),
}


def _rm_signature_error(entry: MembershipChange | PayoutStatement) -> str | None:
    return membership_error(entry) if isinstance(entry, MembershipChange) else statement_error(entry)


def attestation_entry(batch: SignedAttestations) -> LedgerEntry:
    return LedgerEntry(ATTESTATIONS, batch.encode())


def membership_entry(change: MembershipChange) -> LedgerEntry:
    return LedgerEntry(MEMBERSHIP, change.encode())


def statement_entry(statement: PayoutStatement) -> LedgerEntry:
    return LedgerEntry(PAYOUT_STATEMENT, statement.encode())


def signer_keys(log: MerkleLog, resource_managers: frozenset[int]) -> set[bytes]:
    """The keys trusted to sign membership and statements (module doc): those of the listed RM ring
    ids among the log's signers, or, with none listed, the signer of the log's first membership change."""
    keys: set[bytes] = set()
    for row in _rows(log, 0, log.size()):
        if row.kind not in _RM_DECODERS:
            continue
        try:
            key = _RM_DECODERS[row.kind][1](row.payload).signer_key
        except ValueError:  # malformed: the audit says so
            continue
        if resource_managers:
            if _ring_id(key) in resource_managers:
                keys.add(key)
        elif row.kind == MEMBERSHIP:
            return {key}
    return keys


def _ring_id(key: bytes) -> int | None:
    try:
        return key_identity(key)[1]
    except ValueError:
        return None


@dataclass
class LedgerContents:
    """What one pass over a prefix of the log found (besides the attestations, which stay in the log)."""

    size: int = 0
    memberships: Memberships = field(default_factory=Memberships)
    statements: list[tuple[int, PayoutStatement]] = field(default_factory=list)  # (index, statement)
    counts: Counter[str] = field(default_factory=Counter)  # entries by kind
    problems: list[str] = field(default_factory=list)  # entries not believed (bounded)
    membership_marks: list[tuple[int, int]] = field(default_factory=list)  # (change's time, its index)
    # statement index -> the membership up to its period's end as its prefix had it (a statement closing
    # the log at its own index, as the RM appends them): recomputing it needs no second pass
    prefix_memberships: dict[int, dict[int, list[Interval]]] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(text)
        self.counts["problems"] += 1

    def absorb(self, index: int, kind: str, payload: bytes, signers: Signers) -> None:
        """Entry ``index`` (the next one) of the log."""
        self.size = index + 1
        self.counts[kind] += 1
        if kind not in _RM_DECODERS:
            return
        name, decode = _RM_DECODERS[kind]
        try:
            entry = decode(payload)
        except ValueError as e:  # MalformedMembership, MalformedStatement
            self.problem(f"entry {index}: malformed {name}: {e}")
            return
        if _rm_signature_error(entry) is not None or not signers(entry.signer_key):
            self.problem(f"entry {index}: {name} not signed by a resource manager")
            return
        if isinstance(entry, MembershipChange):
            self.memberships.apply(entry)
            self.membership_marks.append((self.memberships.last_ms, index))
        else:
            self.statements.append((index, entry))
            if entry.log_size == index:
                self.prefix_memberships[index] = self.memberships.intervals(entry.period.end_ms)

    def statement_for(self, period: Period) -> tuple[int, PayoutStatement] | None:
        """The first statement of exactly ``period``, if one was appended."""
        return next(((i, s) for i, s in self.statements if s.period == period), None)


def _rows(log: MerkleLog, start: int, end: int) -> Iterator[StoredEntry]:
    while start < end:
        rows = log.entries(start, min(end, start + AUDIT_CHUNK))
        if not rows:
            return
        yield from rows
        start = rows[-1].index + 1


def read_ledger(log: MerkleLog, end: int, signers: Signers) -> LedgerContents:
    """One pass over entries ``[0, end)``: the membership replay and the statements (module doc)."""
    contents = LedgerContents()
    for row in _rows(log, 0, end):
        contents.absorb(row.index, row.kind, row.payload, signers)
    contents.size = end
    return contents


def neighbour_table(contents: LedgerContents, until_ms: int, successors: int) -> NeighbourTable:
    """Who probed whom up to ``until_ms``, from the ledger's membership."""
    return ring_neighbour_table(contents.memberships.intervals(until_ms), successors)


def tally_period(
    log: MerkleLog,
    period: Period,
    end: int,
    history: NeighbourTable,
    rules: PayoutRules,
    start: int = 0,
) -> UptimeTally:
    """The payout rules applied to the attestations among entries ``[start, end)`` for ``period``
    (``start``: an entry before which none can hold an instant of the period; 0 is always right)."""
    tally = UptimeTally(period, history, rules)
    for row in _rows(log, start, end):
        if row.kind == ATTESTATIONS and row.payload[:1] == bytes([KIND_ATTESTATIONS]):
            tally.add_entry(row.payload)
        elif row.kind == ATTESTATIONS:
            tally.add_entry(b"\x01")  # a mislabelled payload: malformed, counted
    return tally


@dataclass(frozen=True)
class PayoutRow:
    """One node's line of a payout: its ring id, uptime and share."""

    ring_id: int
    uptime_ms: int
    share: Fraction


def payout_rows(uptimes: dict[int, int]) -> list[PayoutRow]:
    """Rows by ring id, with exact shares."""
    split = shares(uptimes)
    return [PayoutRow(node, uptimes[node], split.get(node, Fraction(0))) for node in sorted(uptimes)]


def recompute_statement(
    log: MerkleLog, contents: LedgerContents, statement: PayoutStatement, successors: int, signers: Signers
) -> str | None:
    """Why ``statement`` is not what its log prefix gives (None: it is exactly that)."""
    if statement.log_size > contents.size:
        return f"the statement for {_describe(statement.period)} names {statement.log_size} entries, beyond the log"
    if log.root_hash(statement.log_size) != statement.log_root:
        return f"the statement for {_describe(statement.period)} names a root its log prefix does not have"
    index = next((i for i, s in contents.statements if s is statement), None)
    memberships = contents.prefix_memberships.get(index) if index is not None else None
    if memberships is None:  # a statement of an older prefix: read that prefix again
        memberships = read_ledger(log, statement.log_size, signers).memberships.intervals(statement.period.end_ms)
    history = ring_neighbour_table(memberships, successors)
    tally = tally_period(log, statement.period, statement.log_size, history, PayoutRules(statement.min_witnesses))
    if tuple(sorted(tally.uptimes().items())) != statement.uptimes:
        return f"the statement for {_describe(statement.period)} differs from the uptimes its log prefix gives"
    return None


def _describe(period: Period) -> str:
    return f"[{period.start_ms}, {period.end_ms})"
