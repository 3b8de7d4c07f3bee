"""The payout rules: what counts, what is refused, each node's uptime and share, and who probed whom."""

from __future__ import annotations

from fractions import Fraction

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.accounting.attestations import (
    Attestation,
    SignedAttestations,
    public_key_bytes,
    ring_id_of_key,
    sign_attestations,
)
from cortex_rm.accounting.intervals import Interval
from cortex_rm.accounting.neighbour_history import NeighbourTable, ring_neighbour_table
from cortex_rm.accounting.payout_statement import sign_statement, statement_error
from cortex_rm.accounting.payouts import PayoutRules, UptimeTally, Verdict, shares, tally
from cortex_rm.accounting.periods import Period, PeriodScheme, calendar_month

KEYS = [ec.derive_private_key(1000 + i, ec.SECP256R1()) for i in range(6)]
IDS = [ring_id_of_key(k.public_key()) for k in KEYS]
W1, W2, W3, S, T, X = IDS
KEY = dict(zip(IDS, KEYS))
H = 3_600_000
PERIOD = Period(100 * H, 200 * H)


def at(hours: float) -> int:
    return PERIOD.start_ms + int(hours * H)


def entry(witness: int, subject: int, spans: list[tuple[float, float]], first_sequence: int = 1) -> bytes:
    """A signed batch of ``witness`` attesting ``subject`` over ``spans`` (hours into the period)."""
    claims = [Attestation(witness, subject, at(a), at(b), first_sequence + i) for i, (a, b) in enumerate(spans)]
    return sign_attestations(KEY[witness], claims).encode()


def probed_by(*witnesses: int, subject: int = S, spans: tuple[Interval, ...] = ((0, 1 << 62),)) -> NeighbourTable:
    table = NeighbourTable()
    for witness in witnesses:
        for start, end in spans:
            table.add(witness, subject, start, end)
    return table


def test_uptime_is_where_two_of_the_probers_attested() -> None:
    """Three probers attest overlapping hours; the node is paid where at least two agree."""
    result = tally(
        [entry(W1, S, [(0, 10)]), entry(W2, S, [(5, 20)]), entry(W3, S, [(8, 9), (15, 30)])],
        PERIOD,
        probed_by(W1, W2, W3),
    )
    assert result.uptime_intervals(S) == [(at(5), at(10)), (at(15), at(20))]
    assert result.uptimes() == {S: 10 * H}


def test_self_attestation_and_forged_batches_earn_nothing() -> None:
    """A node's word about itself is refused; a batch under a prober's key but not its signature is refused whole."""
    forged = sign_attestations(KEY[S], [Attestation(S, S, at(0), at(90), 1)])
    claim = (Attestation(W1, S, at(0), at(90), 1),)
    as_prober = SignedAttestations(public_key_bytes(KEY[W1].public_key()), claim, forged.signature)
    result = tally([forged.encode(), as_prober.encode(), entry(W2, S, [(0, 90)])], PERIOD, probed_by(W1, W2))
    assert result.verdicts[Verdict.SELF_ATTESTATION] == 1 and result.verdicts[Verdict.BAD_SIGNATURE] == 1
    assert result.uptimes() == {}


def test_attestations_count_only_while_the_witness_was_a_prober() -> None:
    """A stranger's attestation is refused; a prober's is clipped to the hours it probed the subject."""
    table = probed_by(W1, spans=((at(0), at(50)),))
    for start, end in ((at(0), at(20)), (at(60), at(90))):
        table.add(W2, S, start, end)
    result = tally(
        [entry(X, S, [(0, 90)]), entry(W1, S, [(0, 90)]), entry(W2, S, [(0, 90)])], PERIOD, table
    )
    assert result.verdicts[Verdict.NOT_NEIGHBOUR] == 1
    # 0-20: both probed, both attest; 20-50: W1 alone could, so alone suffices; 60-90: W2 alone.
    assert result.uptime_intervals(S) == [(at(0), at(50)), (at(60), at(90))]


def test_replays_are_refused_and_overlaps_credit_only_new_instants() -> None:
    """The same batch again is a replay; a new sequence over old hours adds only what is new, also
    when it reaches the log after a later one (a witness's retry)."""
    first = entry(W1, S, [(0, 10)], first_sequence=5)
    result = UptimeTally(PERIOD, probed_by(W1, W2))
    assert result.add_entry(first) == [Verdict.CREDITED]
    assert result.add_entry(first) == [Verdict.REPLAY]
    assert result.add_entry(entry(W1, S, [(2, 8)], first_sequence=4)) == [Verdict.OVERLAP]  # out of order: nothing new
    assert result.add_entry(entry(W1, S, [(2, 8)], first_sequence=4)) == [Verdict.REPLAY]
    assert result.add_entry(entry(W1, S, [(2, 8)], first_sequence=6)) == [Verdict.OVERLAP]
    assert result.add_entry(entry(W1, S, [(5, 15)], first_sequence=7)) == [Verdict.CREDITED]
    result.add_entry(entry(W2, S, [(0, 30)]))
    assert result.uptime_intervals(S) == [(at(0), at(15))]


def test_a_lone_colluding_prober_earns_nothing_but_a_lone_prober_of_a_two_member_ring_does() -> None:
    """Where the ring gave the subject two probers, one witness is not enough; where it gave one, it is."""
    colluding = tally([entry(W1, S, [(0, 100)])], PERIOD, probed_by(W1, W2))
    assert colluding.uptimes() == {}
    with_honest = tally([entry(W1, S, [(0, 100)]), entry(W2, S, [(10, 20)])], PERIOD, probed_by(W1, W2))
    assert with_honest.uptimes() == {S: 10 * H}  # only the hours the honest prober saw
    two_members = tally([entry(W1, S, [(0, 100)])], PERIOD, probed_by(W1))
    assert two_members.uptimes() == {S: 100 * H}


def test_min_witnesses_is_a_rule_parameter() -> None:
    """With min_witnesses 3, two of three probers are not enough."""
    entries = [entry(W1, S, [(0, 10)]), entry(W2, S, [(0, 10)]), entry(W3, S, [(5, 10)])]
    assert tally(entries, PERIOD, probed_by(W1, W2, W3), PayoutRules(min_witnesses=3)).uptimes() == {S: 5 * H}


def test_the_period_clips_and_other_entries_pass() -> None:
    """Hours outside the period are cut; other entry kinds are passed over; garbage is counted as malformed."""
    result = UptimeTally(PERIOD, probed_by(W1, W2))
    before = entry(W1, S, [(-30, -20)], 9)
    for data in (entry(W1, S, [(-10, 5)]), entry(W2, S, [(-10, 5)]), before, b"\x02statement", b"\x01junk", b""):
        result.add_entry(data)
    assert result.uptimes() == {S: 5 * H}
    assert result.verdicts[Verdict.OUTSIDE_PERIOD] == 1 and result.verdicts[Verdict.MALFORMED] == 1
    assert result.entries == 6


def test_shares_and_the_statement() -> None:
    """Shares are exact fractions of the total; the signed statement holds the tally's uptimes and log position."""
    entries = [entry(W1, S, [(0, 30)]), entry(W2, S, [(0, 30)]), entry(W1, T, [(0, 10)]), entry(W2, T, [(0, 10)])]
    table = probed_by(W1, W2)
    for witness in (W1, W2):
        table.add(witness, T, 0, 1 << 62)
    result = tally(entries, PERIOD, table)
    assert shares(result.uptimes()) == {S: Fraction(3, 4), T: Fraction(1, 4)}
    assert shares({}) == {}
    statement = sign_statement(KEYS[0], result.statement(log_size=4, log_root=b"\x01" * 32))
    assert statement_error(statement) is None
    assert dict(statement.uptimes) == {S: 30 * H, T: 10 * H} and statement.share(S) == Fraction(3, 4)


def test_a_tally_limited_to_some_subjects_skips_the_others_unverified() -> None:
    """subjects= restricts the tally (used to recompute a few nodes cheaply)."""
    entries = [entry(W1, S, [(0, 10)]), entry(W2, S, [(0, 10)]), entry(W1, T, [(0, 10)]), entry(W2, T, [(0, 10)])]
    table = probed_by(W1, W2)
    for witness in (W1, W2):
        table.add(witness, T, 0, 1 << 62)
    only = UptimeTally(PERIOD, table, subjects={T})
    for data in entries:
        only.add_entry(data)
    assert only.uptimes() == {T: 10 * H} and only.verdicts[Verdict.OTHER_SUBJECT] == 2


def test_periods_are_utc_calendar_months_by_default() -> None:
    """February 2028 (a leap year) has 29 days; December rolls into January; fixed schemes count from the origin."""
    february = calendar_month(1_835_000_000_000)  # 2028-02-24
    assert february.length_ms == 29 * 24 * H
    assert PeriodScheme().period_at(february.start_ms) == february
    december = calendar_month(1_860_000_000_000)  # 2028-12-09
    assert PeriodScheme().following(december).start_ms == december.end_ms
    assert PeriodScheme().following(december).length_ms == 31 * 24 * H
    weekly = PeriodScheme(7 * 24 * H, origin_ms=10)
    assert weekly.period_at(10 + 7 * 24 * H + 5) == Period(10 + 7 * 24 * H, 10 + 14 * 24 * H)


# ------------------------------------------------------------------ who probes whom


def test_ring_probers_are_the_predecessors_in_whose_successor_lists_one_is_and_ones_successor() -> None:
    """Five members, successor lists of 2: member 30 is probed by 10 and 20 (predecessors) and 40 (successor)."""
    table = ring_neighbour_table({m: [(0, 100)] for m in (10, 20, 30, 40, 50)}, successors=2)
    assert set(table.witnesses_of(30, 0, 100)) == {10, 20, 40}
    assert set(table.witnesses_of(10, 0, 100)) == {40, 50, 20}  # the ring wraps


def test_a_join_and_a_leave_change_the_probers_at_that_instant() -> None:
    """Member 25 joins at 40 and leaves at 70: meanwhile it displaces 10 from 30's probers."""
    memberships = {10: [(0, 100)], 20: [(0, 100)], 30: [(0, 100)], 40: [(0, 100)], 25: [(40, 70)]}
    table = ring_neighbour_table(memberships, successors=2)
    probers = table.witnesses_of(30, 0, 100)
    assert probers[10] == [(0, 40), (70, 100)]
    assert probers[25] == [(40, 70)]
    assert probers[20] == [(0, 100)] and probers[40] == [(0, 100)]
    assert table.witnesses_of(25, 0, 100) == {10: [(40, 70)], 20: [(40, 70)], 30: [(40, 70)]}


def test_a_two_member_ring_gives_each_one_prober() -> None:
    """Alone together, each member is the other's only prober; alone, a member has none."""
    table = ring_neighbour_table({1: [(0, 50)], 2: [(0, 100)]}, successors=8)
    assert table.witnesses_of(2, 0, 100) == {1: [(0, 50)]}
    assert table.witnesses_of(1, 0, 100) == {2: [(0, 50)]}


MEMBERSHIPS = st.dictionaries(
    st.integers(1, 40),
    st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10)).map(lambda p: (p[0], p[0] + p[1])), min_size=1, max_size=3),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150)
@given(MEMBERSHIPS, st.integers(1, 4))
def test_the_table_matches_the_live_ring_at_every_instant(memberships: dict[int, list[Interval]], successors: int) -> None:
    """At each instant, W probes S in the table iff S is among W's next live members or W's predecessor."""
    table = ring_neighbour_table(memberships, successors)
    for t in range(0, 42):
        live = sorted(m for m, spans in memberships.items() if any(a <= t < b for a, b in spans))
        expected: set[tuple[int, int]] = set()
        n = len(live)
        for i, witness in enumerate(live):
            for k in range(1, min(successors, n - 1) + 1):
                expected.add((witness, live[(i + k) % n]))
            if n > 1:
                expected.add((witness, live[(i - 1) % n]))
        found = {
            (witness, subject)
            for subject in memberships
            for witness, spans in table.witnesses_of(subject, t, t + 1).items()
            if spans
        }
        assert found == expected, t
