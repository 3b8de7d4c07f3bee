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
from twisted.internet import defer, task
from twisted.logger import LogLevel

from cortex_rm.accounting.attestations import ring_id_of_key
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_mirror import LedgerMirror, MirrorSettings
from cortex_rm.accounting.ledger_reading import membership_entry
from cortex_rm.accounting.ledger_store import LedgerEntry, MemoryLedgerStore
from cortex_rm.accounting.membership_log import membership_change, sign_membership
from cortex_rm.accounting.mirror_findings import FORK, INCONSISTENT, REWRITTEN
from cortex_rm.accounting.tree_heads import SignedTreeHead, evidence_error, keys_by_id

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

    def grow(self, n: int, tag: str = "a") -> None:
        size = self.log.size()
        self.log.append([LedgerEntry("attestations", f"{tag}-{size + i}".encode()) for i in range(n)])

    def edit_row(self, index: int) -> None:
        """What ``UPDATE ledger_entries SET payload = payload || x'00'`` does: the stored leaf hash stays."""
        row = self.store.rows[index]
        self.store.rows[index] = replace(row, payload=row.payload + b"\x00")

    def tree_head(self) -> defer.Deferred[SignedTreeHead]:
        self.requests += 1
        return defer.succeed(self.log.sign_tree_head(self.key, int(self.clock.seconds() * 1000)))

    def entries(self, start: int, end: int) -> defer.Deferred[list[LedgerEntry]]:
        self.requests += 1
        return defer.succeed([LedgerEntry(r.kind, r.payload) for r in self.log.entries(start, end)])

    def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]:
        self.requests += 1
        return defer.succeed(self.log.consistency_proof(first, second))


def mirror_of(clock: task.Clock, rms: frozenset[int] = frozenset({RM_ID}), **settings: int) -> LedgerMirror:
    mirror = LedgerMirror(MerkleLog(MemoryLedgerStore()), inline, clock, rms, random.Random(7), MirrorSettings(**settings))
    defer.ensureDeferred(mirror.open())
    return mirror


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
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(20)
    mirror = mirror_of(clock)
    run_round(mirror, rm)
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


def test_a_large_log_is_re_read_by_random_samples() -> None:
    """Past ``recheck_all_below`` a round re-reads ``recheck_samples`` entries, and over rounds finds the edit."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(499)
    mirror = mirror_of(clock, recheck_all_below=64, recheck_samples=16)
    run_round(mirror, rm)
    before = mirror.entries_rechecked
    run_round(mirror, rm)
    assert mirror.entries_rechecked - before == 16
    rm.edit_row(321)
    rounds = 0
    while not mirror.findings.count:
        run_round(mirror, rm)
        rounds += 1
        assert rounds < 500
    assert mirror.findings.kept[0].index == 321


def test_an_entry_edited_before_it_was_copied_is_refused_and_reported() -> None:
    """Entries that do not hash into the RM's signed head are never appended."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(10)
    mirror = mirror_of(clock)
    run_round(mirror, rm)
    rm.grow(10)
    rm.edit_row(15)
    run_round(mirror, rm)
    assert mirror.size == 11
    assert [f.kind for f in mirror.findings.kept] == [INCONSISTENT]


def test_an_rm_that_signs_two_histories_is_caught_by_the_watcher() -> None:
    """A head that no consistency proof joins to the last one accepted is a fork, with the evidence."""
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(10)
    mirror = mirror_of(clock)
    run_round(mirror, rm)
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
    clock = task.Clock()
    rm = FakeRm(clock=clock)
    rm.grow(10)
    mirror = mirror_of(clock)
    run_round(mirror, rm)
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
