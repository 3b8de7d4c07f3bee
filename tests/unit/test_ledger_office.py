"""The RM's ledger office on a memory store: membership, witnesses' batches, payouts, closing, classes."""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import pytest

from cortex_rm.accounting.attestations import Attestation, ring_id_of_key, sign_attestations
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_office import (
    MAX_CLOCK_SKEW_MS,
    LedgerOffice,
    OfficeRules,
    Receipts,
    SubmissionRefused,
    check_period,
)
from cortex_rm.accounting.attestations import decode_attestations
from cortex_rm.accounting.ledger_reading import neighbour_table, read_ledger, recompute_statement, tally_period
from cortex_rm.accounting.ledger_store import MemoryLedgerStore
from cortex_rm.accounting.ledger_errors import BadLedgerRequest
from cortex_rm.accounting.membership_log import decode_membership, membership_change, sign_membership
from cortex_rm.accounting.merkle import verify_inclusion
from cortex_rm.accounting.node_classes import ClassThresholds
from cortex_rm.accounting.payout_statement import sign_statement
from cortex_rm.accounting.payouts import PayoutRules
from cortex_rm.accounting.periods import Period, PeriodScheme
from cortex_rm.accounting.tree_heads import keys_by_id, signature_error

HOUR = 3_600_000
DAY = 24 * HOUR


def keys(n: int) -> list[ec.EllipticCurvePrivateKey]:
    return [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]


def rules(**overrides: object) -> OfficeRules:
    values: dict[str, object] = dict(
        successors=8,
        rules=PayoutRules(2),
        periods=PeriodScheme(DAY, 0),
        thresholds=ClassThresholds(window_ms=DAY, promote_session_ms=6 * HOUR, freshness_ms=2 * HOUR),
        close_delay_ms=2 * HOUR,
    )
    values.update(overrides)
    return OfficeRules(**values)  # type: ignore[arg-type]


class Cluster:
    """Four members (ids from their keys), an RM key and an office on a memory log."""

    def __init__(self) -> None:
        self.member_keys = keys(4)
        self.ids = [ring_id_of_key(k.public_key()) for k in self.member_keys]
        self.rm_key = keys(1)[0]
        self.log = MerkleLog(MemoryLedgerStore())
        self.wall = 0  # the office's clock for its marks (``tally_start``)
        self.office = LedgerOffice(self.log, self.rm_key, rules(), lambda: self.wall)
        self.sequence = 1

    def attest(self, witness: int, subject: int, start: int, end: int) -> Receipts:
        key = self.member_keys[witness]
        self.sequence += 1
        batch = sign_attestations(key, [Attestation(self.ids[witness], self.ids[subject], start, end, self.sequence)])
        self.wall = max(self.wall, end)
        return self.office.submit(self.ids[witness], [batch], end)


def test_membership_changes_round_trip_and_replay_into_intervals() -> None:
    key = keys(1)[0]
    change = sign_membership(key, membership_change(5, joined=[3, 1], left=[2]))
    assert decode_membership(change.encode()) == change
    with pytest.raises(ValueError):
        membership_change(5, joined=[1], left=[1])


def test_attested_uptime_is_paid_and_the_closed_statement_recomputes() -> None:
    c = Cluster()
    c.office.record_membership(membership_change(0, joined=c.ids, snapshot=True))
    # everyone up all day except member 3, down from hour 6 to hour 9
    c.office.record_membership(membership_change(6 * HOUR, left=[c.ids[3]]))
    c.office.record_membership(membership_change(9 * HOUR, joined=[c.ids[3]]))
    for w in range(4):
        for s in range(4):
            if w == s:
                continue
            spans = [(0, DAY)] if 3 not in (w, s) else [(0, 6 * HOUR), (9 * HOUR, DAY)]
            for start, end in spans:
                receipts = c.attest(w, s, start, end)
                head = receipts.tree_head
                receipt = receipts.receipts[0]
                assert signature_error(head, keys_by_id([c.rm_key.public_key()])) is None
                leaf = c.log.entries(receipt.index, receipt.index + 1)[0].leaf_hash
                assert verify_inclusion(receipt.index, head.size, leaf, list(receipt.audit_path), head.root_hash)
    report = c.office.payouts(Period(0, DAY), now_ms=DAY + HOUR)
    assert not report.closed
    uptimes = {row.ring_id: row.uptime_ms for row in report.rows}
    assert uptimes == {c.ids[0]: DAY, c.ids[1]: DAY, c.ids[2]: DAY, c.ids[3]: DAY - 3 * HOUR}
    assert sum(row.share for row in report.rows) == 1

    assert c.office.close_due(DAY + HOUR) == []  # not yet: two hours' delay
    assert c.office.close_due(DAY + 2 * HOUR, accepting_since_ms=DAY + HOUR) == []  # the RM was down: witnesses resend first
    assert c.office.close_due(DAY + 2 * HOUR) == [Period(0, DAY)]
    closed = c.office.payouts(Period(0, DAY), now_ms=DAY + 3 * HOUR)
    assert closed.closed and closed.rows == report.rows
    contents = read_ledger(c.log, c.log.size(), c.office.signer_trusted)
    [(_, statement)] = contents.statements
    assert recompute_statement(c.log, contents, statement, 8, c.office.signer_trusted) is None
    padded = tuple((node, uptime + 1000 if node == c.ids[3] else uptime) for node, uptime in statement.uptimes)
    generous = sign_statement(c.rm_key, replace(statement, uptimes=padded))  # signed by the RM, but not the log's figures
    assert "differs" in (recompute_statement(c.log, contents, generous, 8, c.office.signer_trusted) or "")
    assert c.log.verify_all(keys_by_id([c.rm_key.public_key()])).ok


def test_batches_of_another_key_and_forged_ones_are_refused_and_copies_not_appended() -> None:
    c = Cluster()
    batch = sign_attestations(c.member_keys[0], [Attestation(c.ids[0], c.ids[1], 0, HOUR, 7)])
    with pytest.raises(SubmissionRefused, match="not a live ring member"):
        c.office.submit(c.ids[0], [batch], HOUR)
    c.office.record_membership(membership_change(0, joined=c.ids[:3], snapshot=True))
    stranger = sign_attestations(c.member_keys[0], [Attestation(c.ids[0], c.ids[3], 0, HOUR, 8)])
    with pytest.raises(SubmissionRefused, match="no ring member"):
        c.office.submit(c.ids[0], [stranger], HOUR)
    future = sign_attestations(c.member_keys[0], [Attestation(c.ids[0], c.ids[1], 0, 2 * HOUR, 9)])
    with pytest.raises(SubmissionRefused, match="future"):
        c.office.submit(c.ids[0], [future], HOUR)
    batch = sign_attestations(c.member_keys[0], [Attestation(c.ids[0], c.ids[1], 0, HOUR, 7)])
    with pytest.raises(SubmissionRefused, match="not by this node's key"):
        c.office.submit(c.ids[1], [batch], HOUR)
    forged = replace(batch, signature=c.member_keys[1].sign(b"x", ec.ECDSA(hashes.SHA256())))
    with pytest.raises(SubmissionRefused, match="signature"):
        c.office.submit(c.ids[0], [forged], HOUR)
    first = c.office.submit(c.ids[0], [batch, batch], HOUR)
    again = c.office.submit(c.ids[0], [batch], HOUR)
    assert c.log.size() == 2  # the membership, and one copy of the batch
    assert [r.index for r in first.receipts] == [1, 1] and again.receipts[0].index == 1
    assert again.tree_head == first.tree_head  # nothing new: the same signed head


def test_a_node_up_long_enough_becomes_static_and_a_silent_one_volatile_again() -> None:
    c = Cluster()
    c.office.record_membership(membership_change(0, joined=c.ids, snapshot=True))
    for w in range(4):
        for s in range(4):
            if w != s and s != 3:
                c.attest(w, s, 0, 8 * HOUR)
            elif w != s:
                c.attest(w, s, 0, HOUR)  # member 3: only its first hour
    static = c.office.update_classes(8 * HOUR)
    assert static == frozenset(c.ids[:3])
    assert c.office.update_classes(11 * HOUR) == frozenset()  # nothing attested for three hours: gone


def test_time_down_before_a_nodes_first_attestation_counts_against_it() -> None:
    """Member 3 joined with the others but went down within minutes, before any witness's attestation
    of it reached the ledger, and came back two hours later.  Counting its fraction from its first
    attested instant would make it 100% up (and static after its 6-hour session); counted from when the
    membership first shows it live it is 75% up, below the promotion threshold."""
    c = Cluster()
    c.office.record_membership(membership_change(0, joined=c.ids, snapshot=True))
    c.office.record_membership(membership_change(10 * 60_000, left=[c.ids[3]]))
    c.office.record_membership(membership_change(2 * HOUR, joined=[c.ids[3]]))
    for w in range(4):
        for s in range(3):
            if w != s:
                c.attest(w, s, 0, 8 * HOUR)
    for w in range(3):
        c.attest(w, 3, 2 * HOUR, 8 * HOUR)
    assert c.office.update_classes(8 * HOUR) == frozenset(c.ids[:3])


def test_time_alone_in_the_ring_with_nobody_to_witness_it_does_not_count_against_a_node() -> None:
    """Member 0 alone in the ring for two hours (no prober: nobody could attest it), then three more join and
    everyone is attested for six hours: its fraction counts from when it had probers, so it is static too."""
    c = Cluster()
    c.office.record_membership(membership_change(0, joined=[c.ids[0]], snapshot=True))
    c.office.record_membership(membership_change(2 * HOUR, joined=c.ids[1:]))
    for w in range(4):
        for s in range(4):
            if w != s:
                c.attest(w, s, 2 * HOUR, 8 * HOUR)
    assert c.office.update_classes(8 * HOUR) == frozenset(c.ids)


def test_a_query_names_both_ends_or_neither() -> None:
    assert check_period(None, None) is None
    assert check_period(1, 2) == Period(1, 2)
    with pytest.raises(BadLedgerRequest):
        check_period(1, None)
    with pytest.raises(BadLedgerRequest):
        check_period(5, 5)


def test_a_tally_starts_at_the_first_entry_appended_after_the_period_began() -> None:
    """Entries appended before a period (less the clock skew) cannot hold its instants: payouts skip them,
    with the same figures as a tally of the whole log."""
    c = Cluster()
    c.office.record_membership(membership_change(0, joined=c.ids, snapshot=True))
    for day in range(3):
        for w in range(4):
            for s in range(4):
                if w != s:
                    c.attest(w, s, day * DAY, (day + 1) * DAY)
    start = c.office.tally_start(2 * DAY)
    assert 0 < start < c.log.size()
    assert all(e.kind != "attestations" or day_of(e.payload) < 2 for e in c.log.entries(0, start))
    report = c.office.payouts(Period(2 * DAY, 3 * DAY), now_ms=3 * DAY)
    whole = tally_period(c.log, Period(2 * DAY, 3 * DAY), c.log.size(), neighbour_table(c.office.contents, 3 * DAY, 8), PayoutRules(2))
    assert {r.ring_id: r.uptime_ms for r in report.rows} == whole.uptimes() == {i: DAY for i in c.ids}
    assert c.office.tally_start(MAX_CLOCK_SKEW_MS) == 0


def day_of(payload: bytes) -> int:
    return max(a.end_ms for a in decode_attestations(payload).attestations) // DAY - 1
