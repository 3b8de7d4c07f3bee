"""The ledger mirror's core on a fake clock, against an in-process RM log with fault knobs.

``FakeRm`` is a real ``MerkleLog`` (memory store) with membership entries signed by
its key, serving the mirror's ``LogSource`` calls at once; its knobs edit a stored
row (as an UPDATE on the RM's database would: payload changed, stored hashes kept),
or fork the log (the same key signing two histories).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.logger import LogLevel

from cortex_rm.accounting.attestations import ring_id_of_key
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_mirror import LedgerMirror, MirrorSettings
from cortex_rm.accounting.ledger_reading import membership_entry
from cortex_rm.accounting.ledger_store import LedgerEntry, MemoryLedgerStore
from cortex_rm.accounting.membership_log import membership_change, sign_membership
from cortex_rm.accounting.mirror_findings import FORK, INCONSISTENT, REWRITTEN, ROLLED_BACK
from cortex_rm.accounting.tree_heads import SignedTreeHead, evidence_error, key_id_of, keys_by_id, signature_error

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
RM_ID = ring_id_of_key(KEY.public_key())


def inline(work):  # type: ignore[no-untyped-def]
    return defer.maybeDeferred(work)


class FakeRm:
    """The RM's ledger as a ``LogSource``: signs a head of its whole log when asked."""

    def __init__(self, key: ec.EllipticCurvePrivateKey = KEY, clock: task.Clock | None = None) -> None:
        self.key = key
        self.clock = clock or task.Clock()
        self.store = MemoryLedgerStore()
        self.log = MerkleLog(self.store)
        self.log.append([membership_entry(sign_membership(key, membership_change(0, joined=[ring_id_of_key(key.public_key())], snapshot=True)))])
        self.requests = 0
        self.entry_requests = 0
        self.served: list[int] = []  # the index of every entry served, in order
        self.served_head: SignedTreeHead | None = None  # serve this head instead of signing one
        self.page_limit = 1000  # entries per page at most (the RM bounds a page by bytes: fewer than asked)
        self.serve_below: int | None = None  # serve no entry at or past this index (an empty page)

    def prefix(self, n: int) -> FakeRm:
        """The same RM's log rolled back to its first ``n`` entries (the same key; a later clock signs its heads)."""
        rolled = FakeRm(self.key, self.clock)
        rolled.store = MemoryLedgerStore()
        rolled.log = MerkleLog(rolled.store)
        rolled.log.append([r.entry() for r in self.log.entries(0, n)])
        return rolled

    def grow(self, n: int, tag: str = "a") -> None:
        size = self.log.size()
        self.log.append([LedgerEntry("attestations", f"{tag}-{size + i}".encode()) for i in range(n)])

    def edit_row(self, index: int) -> None:
        """What ``UPDATE ledger_entries SET payload = payload || x'00'`` does: the stored leaf hash stays."""
        row = self.store.rows[index]
        self.store.rows[index] = replace(row, payload=row.payload + b"\x00")

    def tree_head(self) -> defer.Deferred[SignedTreeHead]:
        self.requests += 1
        if self.served_head is not None:
            return defer.succeed(self.served_head)
        return defer.succeed(self.log.sign_tree_head(self.key, int(self.clock.seconds() * 1000)))

    def entries(self, start: int, end: int) -> defer.Deferred[list[LedgerEntry]]:
        self.requests += 1
        self.entry_requests += 1
        end = min(end, start + self.page_limit, end if self.serve_below is None else self.serve_below)
        rows = self.log.entries(start, end) if end > start else []
        self.served.extend(r.index for r in rows)
        return defer.succeed([LedgerEntry(r.kind, r.payload) for r in rows])

    def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]:
        self.requests += 1
        return defer.succeed(self.log.consistency_proof(first, second))


def mirror_of(clock: task.Clock, rms: frozenset[int] = frozenset({RM_ID}), **settings: int) -> LedgerMirror:
    mirror = LedgerMirror(MerkleLog(MemoryLedgerStore()), inline, clock, rms, random.Random(7), MirrorSettings(**settings))
    defer.ensureDeferred(mirror.open())
    return mirror


def synced(entries: int) -> tuple[task.Clock, FakeRm, LedgerMirror]:
    """An RM with ``entries`` entries and a mirror that has copied them in one round."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(entries)
    mirror = mirror_of(clock)
    run_round(mirror, rm)
    return clock, rm, mirror


def run_round(mirror: LedgerMirror, rm: FakeRm) -> None:
    d = defer.ensureDeferred(mirror.sync_round(rm))
    failures: list[object] = []
    d.addErrback(failures.append)
    assert not failures, failures


def test_the_mirror_copies_the_log_in_chunks_and_follows_it_every_interval() -> None:
    """Started on a clock, the mirror catches up in bounded rounds, then takes each new head."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(99)
    mirror = mirror_of(clock, chunk_entries=16, max_entries_per_round=40)
    mirror.start(lambda: defer.succeed(rm), interval_s=60)
    assert mirror.size == 40 and mirror.head is None  # a round fetches at most 40: not up to the head yet
    clock.advance(60)
    clock.advance(60)
    assert mirror.size == 100 and mirror.head is not None and mirror.head.size == 100
    rm.grow(7)
    clock.advance(60)
    assert mirror.size == 107 and mirror.head.root_hash == rm.log.root_hash()
    assert mirror.log.verify_all(keys_by_id([KEY.public_key()])).ok  # the copy holds the RM's heads, signed
    assert mirror.findings.count == 0 and mirror.last_error is None
    mirror.stop()


def test_a_row_edited_in_the_rms_database_is_reported_as_a_rewrite(log_events: list[dict[str, Any]]) -> None:
    """The RM's heads and proofs still agree after the edit; re-reading the entries shows it, logged once at error level."""
    clock, rm, mirror = synced(20)
    rm.edit_row(5)
    rm.grow(3)
    run_round(mirror, rm)  # the new entries are consistent: the edit is found by the re-read
    assert mirror.size == 24
    [finding] = mirror.findings.kept
    assert finding.kind == REWRITTEN and finding.index == 5 and finding.conclusive()
    assert finding.mirrored_leaf == rm.store.rows[5].leaf_hash != finding.served_leaf
    run_round(mirror, rm)
    assert mirror.findings.count == 1 and mirror.findings.repeats == 1  # seen again, reported once
    status = mirror.status_json()["ledgerMirror"]
    assert status["forksDetected"] == 1 and status["forks"][0]["index"] == 5
    alarms = [e for e in log_events if e.get("log_level") is LogLevel.error and "FORK" in e["log_format"]]
    assert len(alarms) == 1 and "entry 5" in alarms[0]["finding"]


def test_a_sweep_re_reads_every_entry_within_ceil_n_over_k_rounds_and_finds_any_edited_row() -> None:
    """Each round re-reads the next K entries from a cursor (wrapping): an edited row is found within
    ceil(n / K) + 1 rounds wherever it is, and a round re-reads K entries plus the samples, no more."""
    for edited in (3, 321, 499):
        clock = task.Clock()
        rm = FakeRm(clock=clock)
        rm.grow(499)
        mirror = mirror_of(clock, sweep_entries=64, recheck_samples=2)
        run_round(mirror, rm)
        before = mirror.entries_rechecked
        run_round(mirror, rm)
        assert 64 <= mirror.entries_rechecked - before <= 64 + 2  # a sample inside the run is not read twice
        rm.edit_row(edited)
        rounds = 0
        while not mirror.findings.count:
            run_round(mirror, rm)
            rounds += 1
            assert rounds <= -(-500 // 64) + 1, f"entry {edited} not re-read in {rounds} rounds"
        assert mirror.findings.kept[0].index == edited and mirror.findings.kept[0].kind == REWRITTEN


def test_the_sweep_is_bounded_by_bytes_and_always_moves() -> None:
    """With entries larger than B / K, a round re-reads only B bytes of them (at least one entry), and the
    cursor still covers the whole copy: every entry is re-read within the module doc's bound."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.log.append([LedgerEntry("attestations", bytes([i]) * 1000) for i in range(60)])
    mirror = mirror_of(clock, sweep_entries=256, sweep_bytes=4500, recheck_samples=0)
    run_round(mirror, rm)
    rm.served.clear()
    rounds = 0
    while len(set(rm.served)) < 61:
        before = len(rm.served)
        run_round(mirror, rm)
        rounds += 1
        assert 1 <= len(rm.served) - before <= 5  # 4 entries of 1000 bytes, or the big one alone
    assert mirror.sweeps >= 1 and rounds <= -(-61 // 256) + -(-2 * 60_000 // 4500) + 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=60), st.integers(1, 20), st.integers(1, 6000))
def test_any_window_of_the_sweep_bound_re_reads_the_whole_copy(sizes: list[int], k: int, b: int) -> None:
    """Whatever the entries' sizes, K and B: a round re-reads at most K entries and B bytes (or one entry),
    and any ceil(n / K) + ceil(2 S / B) + 2 consecutive rounds re-read every entry (module doc, step 7)."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.log.append([LedgerEntry("attestations", b"x" * size) for size in sizes])
    n = rm.log.size()
    total = sum(len(r.payload) for r in rm.log.entries(0, n))
    payload = {r.index: len(r.payload) for r in rm.log.entries(0, n)}
    mirror = mirror_of(clock, sweep_entries=k, sweep_bytes=b, recheck_samples=0)
    run_round(mirror, rm)
    run_round(mirror, rm)  # the window starts wherever the cursor is
    rm.served.clear()
    bound = -(-n // k) + -(-2 * total // b) + 2
    for _ in range(bound):
        before = len(rm.served)
        run_round(mirror, rm)
        read = rm.served[before:]
        assert 1 <= len(read) <= k and (len(read) == 1 or sum(payload[i] for i in read) <= b)
    assert set(rm.served) == set(range(n))


def test_a_validly_signed_smaller_head_is_reported_as_a_rolled_back_log() -> None:
    """The RM signs a later head of a smaller tree (the same prefix): a conclusive rolled-back finding with
    both signed heads, and the round fails; nothing is lost from the copy."""
    clock, rm, mirror = synced(20)
    clock.advance(5)
    rolled = rm.prefix(11)
    d = defer.ensureDeferred(mirror.sync_round(rolled))
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and "rolled back" in str(failures[0].value)
    [finding] = mirror.findings.kept
    assert finding.kind == ROLLED_BACK and finding.conclusive() and finding.evidence is not None
    earlier, later = finding.evidence.earlier, finding.evidence.later
    assert (earlier.size, later.size) == (21, 11) and later.timestamp_ms > earlier.timestamp_ms
    keys = keys_by_id([KEY.public_key()])
    assert signature_error(earlier, keys) is None and signature_error(later, keys) is None
    assert finding.to_json()["evidence"]["later"]["size"] == 11
    assert mirror.size == 21


def test_an_old_head_served_again_is_a_rolled_back_log_but_not_conclusive() -> None:
    """A smaller head signed before the larger one (a replay) is reported without convicting the RM."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(5)
    old = rm.log.sign_tree_head(KEY, 1)
    rm.grow(10)
    clock.advance(5)
    mirror = mirror_of(clock)
    run_round(mirror, rm)
    rm.served_head = old
    defer.ensureDeferred(mirror.sync_round(rm)).addErrback(lambda f: None)
    [finding] = mirror.findings.kept
    assert finding.kind == ROLLED_BACK and not finding.conclusive()


def test_a_smaller_head_of_another_history_is_both_rolled_back_and_a_fork() -> None:
    """A smaller signed head whose root is not the copy's at that size: reported as both (and the entries
    the RM now serves differently as rewritten)."""
    clock, rm, mirror = synced(20)
    clock.advance(5)
    other = rm.prefix(1)
    other.grow(9, tag="other")
    defer.ensureDeferred(mirror.sync_round(other)).addErrback(lambda f: None)
    assert {f.kind for f in mirror.findings.kept} == {FORK, ROLLED_BACK, REWRITTEN}


def test_a_known_signer_s_bad_signature_is_refused_before_any_entry_is_fetched() -> None:
    """With the RM's key known, a head whose signature does not verify stops the round at once."""
    clock, rm, mirror = synced(3)
    rm.grow(5000)
    good = rm.log.sign_tree_head(KEY, 9)
    rm.served_head = replace(good, signature=rm.log.sign_tree_head(OTHER_KEY, 9).signature)
    rm.entry_requests = 0
    failures: list[Any] = []
    defer.ensureDeferred(mirror.sync_round(rm)).addErrback(failures.append)
    assert failures and "bad signature" in str(failures[0].value)
    assert rm.entry_requests == 0 and mirror.size == 4


def test_refused_entries_never_set_the_key_trusted_on_first_use() -> None:
    """No resource managers listed: a log whose entries do not hash into its head is refused, and its
    membership signer is not trusted; the honest log's signer is, next."""
    clock = task.Clock()
    forger = FakeRm(OTHER_KEY, clock=clock)
    forger.grow(3)
    forger.edit_row(2)
    mirror = mirror_of(clock, rms=frozenset())
    defer.ensureDeferred(mirror.sync_round(forger)).addErrback(lambda f: None)
    assert mirror.size == 0 and not mirror.keys.trusted and mirror.keys.first_signer is None
    honest = FakeRm(KEY, clock=clock)
    honest.grow(3)
    run_round(mirror, honest)
    assert mirror.size == 4 and list(mirror.keys.trusted.values())[0].public_numbers() == KEY.public_key().public_numbers()


def test_keys_named_by_entries_under_a_refused_head_stay_untrusted() -> None:
    """Entries that hash into a head no trusted key signed are not appended, and the resource manager key
    their membership change names is not trusted either: its heads are refused until the entries are kept."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(3)
    second_rm = ring_id_of_key(OTHER_KEY.public_key())
    mirror = mirror_of(clock, rms=frozenset({RM_ID, second_rm}))
    run_round(mirror, rm)
    rm.log.append([membership_entry(sign_membership(OTHER_KEY, membership_change(1, joined=[second_rm])))])
    rm.key = ec.generate_private_key(ec.SECP256R1())  # a head of the right tree, signed by a key nobody listed
    failures: list[Any] = []
    defer.ensureDeferred(mirror.sync_round(rm)).addErrback(failures.append)
    assert failures and "unknown key" in str(failures[0].value)
    assert mirror.size == 4 and key_id_of(OTHER_KEY.public_key()) not in mirror.keys.trusted
    rm.key = OTHER_KEY  # the listed second RM signs: now its entry is appended and its key trusted
    run_round(mirror, rm)
    assert mirror.size == 5 and key_id_of(OTHER_KEY.public_key()) in mirror.keys.trusted


def test_short_pages_are_followed_and_an_empty_page_ends_the_fetch() -> None:
    """The RM serves fewer entries than asked: the mirror asks again after them; an empty page below the
    head's size stops the fetch, and what came is checked with a consistency proof and kept."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(99)
    rm.page_limit, rm.serve_below = 7, 50
    mirror = mirror_of(clock, chunk_entries=256, recheck_samples=0)
    run_round(mirror, rm)
    assert mirror.size == 50 and mirror.head is None and mirror.findings.count == 0
    rm.serve_below = None
    run_round(mirror, rm)
    assert mirror.size == 100 and mirror.head is not None and mirror.head.root_hash == rm.log.root_hash()
    rm.grow(1)
    rm.serve_below = 100
    failures: list[Any] = []
    defer.ensureDeferred(mirror.sync_round(rm)).addErrback(failures.append)
    assert failures and "served no entry 100" in str(failures[0].value)  # nothing at all: the round fails


def test_an_entry_edited_before_it_was_copied_is_refused_and_reported() -> None:
    """Entries that do not hash into the RM's signed head are never appended."""
    clock, rm, mirror = synced(10)
    rm.grow(10)
    rm.edit_row(15)
    run_round(mirror, rm)
    assert mirror.size == 11
    assert [f.kind for f in mirror.findings.kept] == [INCONSISTENT]


def test_an_rm_that_signs_two_histories_is_caught_by_the_watcher() -> None:
    """A head that no consistency proof joins to the last one accepted is a fork, with the evidence."""
    clock, rm, mirror = synced(10)
    forked = FakeRm(clock=clock)  # the same key, another history after entry 0
    forked.grow(12, tag="other")
    run_round(mirror, forked)
    [finding] = mirror.findings.kept
    assert finding.kind == FORK and finding.evidence is not None
    assert evidence_error(finding.evidence, keys_by_id([KEY.public_key()])) is None
    assert mirror.size == 11  # nothing of the other history was kept


def test_a_gossiped_head_of_the_same_size_and_another_root_is_a_conclusive_fork() -> None:
    """Two mirrors shown two histories of one size: either one convicts the RM from the other's head."""
    clock = task.Clock()
    shown_a, shown_b = FakeRm(clock=clock), FakeRm(clock=clock)
    shown_a.grow(10, tag="a")
    shown_b.grow(10, tag="b")
    mirror_a, mirror_b = mirror_of(clock), mirror_of(clock)
    run_round(mirror_a, shown_a)
    run_round(mirror_b, shown_b)
    assert mirror_b.head is not None
    assert mirror_a.offer_peer_head(RM_ID + 1, mirror_b.head)
    assert not mirror_a.offer_peer_head(RM_ID + 1, mirror_b.head)  # the same head again: not passed on
    run_round(mirror_a, shown_a)
    [finding] = mirror_a.findings.kept
    assert finding.kind == FORK and finding.conclusive()


def test_a_larger_gossiped_head_needs_a_consistency_proof_from_the_rm() -> None:
    """A head larger than the copy is checked with the RM's proof: a head from another history fails it."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(10)
    mirror = mirror_of(clock, max_entries_per_round=2)  # the copy stays behind the heads gossiped
    for _ in range(6):
        run_round(mirror, rm)
    assert mirror.size == 11 and mirror.head is not None
    rm.grow(5)
    mirror.offer_peer_head(1, rm.log.sign_tree_head(KEY, 5))  # another mirror's head of 16: the RM proves 11 -> 16
    run_round(mirror, rm)
    assert mirror.size == 13 and mirror.findings.count == 0
    other = FakeRm(clock=clock)
    other.grow(19, tag="other")
    rm.grow(10)
    mirror.offer_peer_head(2, other.log.sign_tree_head(KEY, 6))  # size 20, another history
    run_round(mirror, rm)  # asked to prove 11 -> 20 from its own log, the RM's proof fails that head
    [finding] = mirror.findings.kept
    assert finding.kind == FORK and finding.evidence is not None and not finding.conclusive()
    assert evidence_error(finding.evidence, keys_by_id([KEY.public_key()])) is None


def test_heads_signed_by_a_key_outside_resource_managers_are_not_taken() -> None:
    """An RM whose key is not listed: nothing is appended, the round says why."""
    clock = task.Clock()
    rm = FakeRm(OTHER_KEY, clock=clock)
    rm.grow(3)
    mirror = mirror_of(clock)
    d = defer.ensureDeferred(mirror.sync_round(rm))
    failures: list[object] = []
    d.addErrback(failures.append)
    assert failures and "not signed by a resource manager" in str(failures[0])
    assert mirror.size == 0


def test_with_no_resource_managers_listed_the_first_membership_signer_is_trusted() -> None:
    """Trust on first use, as ``ledger verify``: the key of the log's first membership entry."""
    clock = task.Clock()
    rm = FakeRm(OTHER_KEY, clock=clock)
    rm.grow(3)
    mirror = mirror_of(clock, rms=frozenset())
    run_round(mirror, rm)
    assert mirror.size == 4


def test_a_reopened_mirror_continues_from_its_copy() -> None:
    """The copy's size, head and keys survive a restart (``open``)."""
    clock, rm, mirror = synced(10)
    again = LedgerMirror(mirror.log, inline, clock, frozenset({RM_ID}), random.Random(1))
    defer.ensureDeferred(again.open())
    assert again.size == 11 and again.head == mirror.head
    rm.grow(2)
    before = rm.requests
    run_round(again, rm)
    assert again.size == 13 and rm.requests - before < 6


def test_status_before_any_head() -> None:
    """The REST document exists before the first round, with no head and no fork."""
    mirror = mirror_of(task.Clock())
    status = mirror.status_json()["ledgerMirror"]
    assert status["size"] == 0 and status["treeHead"] is None and status["forksDetected"] == 0
