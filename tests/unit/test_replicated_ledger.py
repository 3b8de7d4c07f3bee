"""The uptime ledger through the RM's journal (``ha/replicated_ledger.py``) on three eligible nodes, each with its
own SQLite copy and journal file, a fake clock and the in-memory ring bus (``tests/support/journal_nodes.py``): an
office on the leader appends and signs through the journal, every node's copy holds the same log, and after the
leader dies the next one's office opens that log (nothing but the journal), goes on with its own key, and its
heads prove consistent with the old ones for ``cortex-rm ledger verify`` and a mirror.  Re-applying is
idempotent; a conflicting append is refused; an append larger than a journal entry goes in parts."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, task

from cortex_rm.accounting.attestations import Attestation, key_identity, ring_id_of_key, sign_attestations
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import BadLedgerRequest, LedgerConflict
from cortex_rm.accounting.ledger_mirror import LedgerMirror
from cortex_rm.accounting.ledger_office import LedgerOffice, OfficeRules
from cortex_rm.accounting.ledger_reading import signer_keys
from cortex_rm.accounting.ledger_store import LedgerEntry, MemoryLedgerStore, SqlLedgerStore
from cortex_rm.accounting.membership_log import membership_change
from cortex_rm.accounting.merkle import Subtree, verify_consistency
from cortex_rm.accounting.node_classes import ClassThresholds
from cortex_rm.accounting.payouts import PayoutRules
from cortex_rm.accounting.periods import PeriodScheme
from cortex_rm.accounting.tree_heads import SignedTreeHead, encode_tree_head, keys_by_id, sign_tree_head
from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.ha import replicated_ledger
from cortex_rm.ha.journal import MAX_ENTRY_BYTES, NotLeader
from cortex_rm.ha.ledger_parts import MemoryLedgerParts, SqlLedgerParts
from cortex_rm.ha.replicated_ledger import (
    MAX_PARTS,
    PART_CHARS,
    LedgerCopy,
    encode_append,
    ledger_applier,
)
from cortex_rm.ha.replicated_state import UnknownOperation, decode_operation, encode_operation
from cortex_rm.ledger_cli import verify_ledger
from tests.support.journal_nodes import IDS, Nodes
from tests.support.rm_core import result_of

HOUR = 3_600_000
DAY = 24 * HOUR
KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]  # the first active's, the next one's
RMS = frozenset(ring_id_of_key(k.public_key()) for k in KEYS)
MEMBER_KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
MEMBERS = [ring_id_of_key(k.public_key()) for k in MEMBER_KEYS]
RULES = OfficeRules(
    successors=8, rules=PayoutRules(2), periods=PeriodScheme(DAY, 0), close_delay_ms=2 * HOUR,
    thresholds=ClassThresholds(window_ms=DAY, promote_session_ms=6 * HOUR, freshness_ms=2 * HOUR),
    resource_managers=RMS,
)  # fmt: skip


def office_on(nodes: Nodes, i: int, key: ec.EllipticCurvePrivateKey) -> LedgerOffice:
    """The office node ``i``'s active would run: over the store that writes through its journal."""
    return LedgerOffice(MerkleLog(nodes.ledger_of(i)), key, RULES, lambda: 0)


def copy_log(nodes: Nodes, i: int) -> MerkleLog:
    return MerkleLog(nodes.copies[i].ledger.store)


def attest(office: LedgerOffice, witness: int, subject: int, start: int, end: int, sequence: int) -> SignedTreeHead:
    attestation = Attestation(MEMBERS[witness], MEMBERS[subject], start, end, sequence)
    batch = sign_attestations(MEMBER_KEYS[witness], [attestation])
    return office.submit(MEMBERS[witness], [batch], end).tree_head


def trusted_keys(log: MerkleLog) -> Any:
    return keys_by_id([key_identity(k)[0] for k in signer_keys(log, RMS)])


class OfficeSource:
    """A mirror's ``LogSource`` over an office (the REST API's answers, in process)."""

    def __init__(self, office: LedgerOffice, now_ms: int) -> None:
        self.office, self.now_ms = office, now_ms

    def tree_head(self) -> defer.Deferred[SignedTreeHead]:
        return defer.succeed(self.office.tree_head(self.now_ms))

    def entries(self, start: int, end: int) -> defer.Deferred[list[LedgerEntry]]:
        return defer.succeed([row.entry() for row in self.office.log.entries(start, end)])

    def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]:
        return defer.succeed(self.office.log.consistency_proof(first, second))


def test_appends_and_heads_the_leader_acknowledged_are_on_every_copy(tmp_path: Path) -> None:
    """A membership snapshot, witnesses' batches and their signed heads, through the leader's journal: every node's
    SQLite copy holds the same entries, subtree hashes and heads, and audits clean."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    office = office_on(nodes, nodes.leader(), KEYS[0])
    office.record_membership(membership_change(0, joined=MEMBERS, snapshot=True))
    for n in range(40):
        attest(office, n % 3, (n + 1) % 3, n * 60_000, (n + 1) * 60_000, n)
    nodes.run(2)
    logs = [copy_log(nodes, i) for i in IDS]
    assert {log.size() for log in logs} == {41}
    assert len({log.root_hash() for log in logs}) == 1 and logs[0].root_hash() == office.log.root_hash()
    assert {log.store.node_count() for log in logs} == {41 >> 4}
    assert all(log.tree_heads() == logs[0].tree_heads() for log in logs) and len(logs[0].tree_heads()) == 40
    assert all(log.verify_all(trusted_keys(log)).ok for log in logs)


def test_the_next_leader_continues_the_same_log_and_its_heads_are_consistent_with_the_old_ones(tmp_path: Path) -> None:
    """The leader dies; the next one's office opens its own copy (same size, same root, the membership it replays),
    appends and signs with another key; a consistency proof joins the old head to the new one, and a mirror that
    followed the old active, ``cortex-rm ledger verify`` of the survivor's copy and the office all accept it."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    first = nodes.leader()
    old = office_on(nodes, first, KEYS[0])
    old.record_membership(membership_change(0, joined=MEMBERS, snapshot=True))
    for n in range(20):
        attest(old, n % 3, (n + 1) % 3, n * 60_000, (n + 1) * 60_000, n)
    old_head = old.tree_head(HOUR)
    clock = task.Clock()
    mirror = LedgerMirror(MerkleLog(MemoryLedgerStore()), defer.maybeDeferred, clock, RMS, random.Random(1))
    result_of(defer.ensureDeferred(mirror.open()))
    result_of(defer.ensureDeferred(mirror.sync_round(OfficeSource(old, HOUR))))
    assert mirror.size == 21

    nodes.kill(first)
    nodes.run(20)
    second = nodes.leader()
    new = office_on(nodes, second, KEYS[1])  # built from the copy alone, as a new active's keeper does
    assert new.log.size() == 21 and new.log.root_hash() == old_head.root_hash
    assert new.contents.memberships.live == old.contents.memberships.live
    assert new.tree_head(HOUR) == old_head  # the log did not grow: the old head stands
    new.record_membership(membership_change(HOUR, joined=[ring_id_of_key(KEYS[1].public_key())]))  # (its key, signed)
    new_head = attest(new, 0, 1, HOUR, HOUR + 60_000, 99)
    assert new_head.key_id != old_head.key_id and new_head.size == 23
    proof = new.log.consistency_proof(old_head.size)
    assert verify_consistency(old_head.size, new_head.size, old_head.root_hash, new_head.root_hash, proof)

    nodes.run(2)
    [survivor] = [i for i in nodes.journals if i != second]
    survivor_log = copy_log(nodes, survivor)
    assert survivor_log.root_hash() == new_head.root_hash
    audit = survivor_log.verify_all(trusted_keys(survivor_log))
    assert audit.ok and audit.tree_heads_checked == 21, audit.problems
    out = io.StringIO()
    url = nodes.copies[survivor].ledger.store.url  # type: ignore[attr-defined]
    assert verify_ledger(url, 8, RMS, out), out.getvalue()
    result_of(defer.ensureDeferred(mirror.sync_round(OfficeSource(new, 2 * HOUR))))
    assert mirror.size == 23 and mirror.findings.count == 0 and mirror.head == new_head


def test_reapplying_the_journal_changes_nothing_and_a_conflicting_append_is_refused(tmp_path: Path) -> None:
    """Every committed ledger entry applied again to a copy (a node restarted before saving its mark) leaves it as it
    was; an append of other entries at indices the copy holds, or beyond its end, raises LedgerConflict."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    leader = nodes.leader()
    office = office_on(nodes, leader, KEYS[0])
    office.record_membership(membership_change(0, joined=MEMBERS, snapshot=True))
    for n in range(5):
        attest(office, n % 3, (n + 1) % 3, n * 60_000, (n + 1) * 60_000, n)
    nodes.run(2)
    copy = nodes.copies[IDS[0]].ledger
    journal = nodes.journals[leader].node
    assert journal is not None
    entries = [decode_operation(e.data) for e in journal.state.log if e.data]
    ours = [(op, args) for store, op, args in entries if store == replicated_ledger.STORE]
    assert {op for op, _ in ours} == {"append", "tree_head"}
    before = (copy.store.size(), copy.store.node_count(), copy.store.tree_heads(), copy.store.entries(0, 100))
    apply = ledger_applier(copy)
    for op, args in ours:
        result_of(apply(op, args))
    assert (copy.store.size(), copy.store.node_count(), copy.store.tree_heads(), copy.store.entries(0, 100)) == before

    other = LedgerEntry("attestation", b"not what the log holds")
    forged = decode_operation(encode_append(1, [(other, other.leaf_hash())], [])[0])
    with pytest.raises(LedgerConflict, match="unlike"):
        result_of(apply(forged[1], forged[2]))
    beyond = decode_operation(encode_append(copy.store.size() + 1, [(other, other.leaf_hash())], [])[0])
    with pytest.raises(LedgerConflict, match="to a copy of"):
        result_of(apply(beyond[1], beyond[2]))
    ahead = sign_tree_head(KEYS[0], copy.store.size() + 5, office.log.root_hash(), 0)
    with pytest.raises(LedgerConflict, match="tree head of size"):
        result_of(apply("tree_head", [ahead.size, encode_tree_head(ahead)]))
    assert copy.store.size() == before[0]


def test_malformed_ledger_entries_are_refused_by_name() -> None:
    """A leaf hash that is not its entry's, a bad kind, a subtree of level 0, a part out of range, a head of the
    wrong size, an unknown operation: UnknownOperation before anything is written."""
    copy = LedgerCopy(MemoryLedgerStore(), MemoryLedgerParts(), synchronous_runner)
    apply = ledger_applier(copy)
    entry = LedgerEntry("attestation", b"x")
    h = entry.leaf_hash()
    head = encode_tree_head(office_head())
    for op, args, words in [
        ("append", [0, [["attestation", b"y", h]], []], "leaf hash"),
        ("append", [0, [["Bad Kind", b"x", h]], []], "malformed entry"),
        ("append", [0, [["attestation", b"x", h]], [[0, 0, h]]], "level"),
        ("append", [True, [], []], "first index"),
        ("part", [0, 3, 3, h, "x"], "part 3 of 3"),
        ("part", [0, 0, MAX_PARTS + 1, h, "x"], "part 0 of"),
        ("part", [0, 0, 1, h, b"x"], "part 0 of 1"),
        ("part", [0, 0, 1, h, "\u00e9"], "not ASCII"),
        ("tree_head", [7, head], "size 7"),
        ("tree_head", [0, b"junk"], "malformed"),
        ("truncate", [0], "no operation"),
    ]:
        with pytest.raises(UnknownOperation, match=words):
            apply(op, args)
    assert copy.store.size() == 0


def office_head() -> SignedTreeHead:
    log = MerkleLog(MemoryLedgerStore())
    return log.sign_tree_head(KEYS[0], 1)


def big_snapshot(members: int) -> list[int]:
    rng = random.Random(members)
    return [rng.getrandbits(160) for _ in range(members)]


def test_a_membership_snapshot_larger_than_a_journal_entry_goes_in_parts_and_lands_whole(tmp_path: Path) -> None:
    """A snapshot of 60,000 members (over 1 MB, several journal entries): the leader's append returns once every
    part is committed; each copy holds it as one entry at the next index; a head over it verifies everywhere."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    leader = nodes.leader()
    office = office_on(nodes, leader, KEYS[0])
    office.record_membership(membership_change(0, joined=MEMBERS, snapshot=True))
    members = big_snapshot(60_000)
    change = membership_change(HOUR, joined=members, snapshot=True)
    index = office.record_membership(change)
    payload = office.log.entries(index, index + 1)[0].payload
    stored = [(e, e.leaf_hash()) for e in [LedgerEntry("membership", payload)]]
    assert len(encode_append(index, stored, [])) >= 3 and len(payload) > 2 * MAX_ENTRY_BYTES
    head = office.tree_head(HOUR)
    nodes.run(2)
    for i in IDS:
        log = copy_log(nodes, i)
        assert log.size() == 2 and log.root_hash() == head.root_hash
        assert log.entries(1, 2)[0].payload == payload
        assert log.verify_all(trusted_keys(log)).ok
        assert nodes.copies[i].ledger.parts.joined(1, b"\0" * 32, 1) is None  # (nothing left staged)


def test_parts_survive_a_restart_between_them_and_an_abandoned_appends_parts_are_dropped(tmp_path: Path) -> None:
    """Parts applied, the node restarted (a new copy on the same file), the rest applied: the append lands whole.
    Parts applied again are kept once.  The parts of an append an old active never finished are dropped once
    another append at that index lands, and its late parts are skipped."""
    url = f"sqlite:///{tmp_path / 'copy.sqlite'}"

    def opened() -> LedgerCopy:
        return LedgerCopy(SqlLedgerStore(url), SqlLedgerParts(url), synchronous_runner)

    rows = [(e, e.leaf_hash()) for e in (LedgerEntry("membership", bytes([i]) * (PART_CHARS // 2)) for i in range(5))]
    parts = [decode_operation(data) for data in encode_append(0, rows, [])]
    assert len(parts) == 5 and all(op == "part" for _, op, _ in parts)
    copy = opened()
    for _, op, args in parts[:2]:
        result_of(ledger_applier(copy)(op, args))
    copy.close()
    copy = opened()
    for _, op, args in [parts[1], *parts[2:]]:
        result_of(ledger_applier(copy)(op, args))
    assert copy.store.size() == 5 and [r.leaf_hash for r in copy.store.entries(0, 5)] == [d for _, d in rows]

    other = [(e, e.leaf_hash()) for e in (LedgerEntry("payout", bytes([9]) * PART_CHARS) for _ in range(2))]
    abandoned = [decode_operation(data) for data in encode_append(5, other, [])]
    result_of(ledger_applier(copy)(abandoned[0][1], abandoned[0][2]))  # the old active lost the lead after one part
    small = LedgerEntry("attestation", b"the next active's")
    [(_, _, args)] = [decode_operation(data) for data in encode_append(5, [(small, small.leaf_hash())], [])]
    result_of(ledger_applier(copy)("append", args))
    digest = abandoned[0][2][3]
    assert copy.parts.joined(5, digest, 1) is None  # dropped
    for _, op, args in abandoned[1:]:
        result_of(ledger_applier(copy)(op, args))  # (committed late: below the copy's size, skipped)
    assert copy.store.size() == 6 and copy.store.entries(5, 6)[0].payload == small.payload
    copy.close()


def test_an_append_beyond_what_the_journal_carries_is_refused_before_anything_is_proposed(tmp_path: Path) -> None:
    """More than MAX_PARTS parts: BadLedgerRequest, the copies unchanged; a write at a stale index: LedgerConflict."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    store = nodes.ledger_of(nodes.leader())
    huge = LedgerEntry("payout", b"\xff" * (4 * 1024 * 1024))
    rows = [(huge, huge.leaf_hash())] * 7  # (base64: 39 MB of JSON)
    with pytest.raises(BadLedgerRequest, match="more than the journal carries"):
        store.append(0, rows, [])
    with pytest.raises(LedgerConflict):
        store.append(3, rows[:1], [])
    assert store.size() == 0


def test_a_standby_cannot_write_the_ledger_and_a_closed_store_refuses_at_once(tmp_path: Path) -> None:
    """A follower's store raises NotLeader (its copy unchanged); the leader's, once closed, too."""
    nodes = Nodes(tmp_path)
    nodes.run(7)
    leader = nodes.leader()
    [follower, *_] = [i for i in IDS if i != leader]
    entry = LedgerEntry("attestation", b"x")
    with pytest.raises(NotLeader):
        nodes.ledger_of(follower).append(0, [(entry, entry.leaf_hash())], [])
    store = nodes.ledger_of(leader)
    store.close()
    with pytest.raises(NotLeader):
        store.add_tree_head(0, encode_tree_head(office_head()))
    assert all(nodes.copies[i].ledger.store.size() == 0 for i in IDS)
    assert Subtree(4, 0) not in nodes.copies[leader].ledger.store.stored_hashes([Subtree(4, 0)])


def test_parts_stay_within_the_journals_bound_even_when_made_of_quotes() -> None:
    """An append whose JSON is mostly quotes (many empty-payload entries) is cut into parts that each fit one
    journal entry once escaped, and they join back into the very append."""
    entries = [LedgerEntry("a", b"") for _ in range(60_000)]
    datas = encode_append(0, [(e, e.leaf_hash()) for e in entries], [])
    assert len(datas) > 1 and all(len(d) <= MAX_ENTRY_BYTES for d in datas)
    copy = LedgerCopy(MemoryLedgerStore(), MemoryLedgerParts(), synchronous_runner)
    for data in datas:
        _, op, args = decode_operation(data)
        result_of(ledger_applier(copy)(op, args))
    assert copy.store.size() == 60_000 and copy.parts.joined(0, decode_operation(datas[0])[2][3], 1) is None


@pytest.mark.parametrize("seed", range(4))
def test_random_kills_and_restarts_never_lose_an_acknowledged_append_nor_fork_the_copies(
    tmp_path: Path, seed: int
) -> None:
    """Appends of one to three entries (now and then one too large for a journal entry) and heads through whoever
    leads, while leaders are killed and dead nodes restarted at random: every append the store acknowledged is,
    at its index, in every copy at the end, and the copies are one log that audits clean."""
    rng = random.Random(seed)
    nodes = Nodes(tmp_path)
    nodes.run(7)
    acknowledged: dict[int, bytes] = {}
    dead: list[int] = []
    for step in range(40):
        roll = rng.random()
        leaders = [i for i, j in nodes.journals.items() if j.node is not None and j.node.is_leader]
        if roll < 0.12 and leaders and len(dead) == 0:
            nodes.kill(leaders[0])
            dead.append(leaders[0])
        elif roll < 0.25 and dead:
            nodes.start(dead.pop())
        elif leaders:
            log = MerkleLog(nodes.ledger_of(leaders[0]))  # (an office's log, opened anew as a new active does)
            size = PART_CHARS if rng.random() < 0.05 else 30
            entries = [LedgerEntry("attestation", rng.randbytes(size)) for _ in range(rng.randint(1, 3))]
            try:
                first = log.append(entries)
                if rng.random() < 0.5:
                    log.sign_tree_head(KEYS[step % 2], step)
            except NotLeader:
                pass
            else:
                acknowledged.update((first + k, e.leaf_hash()) for k, e in enumerate(entries))
        nodes.run(rng.choice([0.5, 2, 8]))
    for i in dead:
        nodes.start(i)
    nodes.run(20)
    logs = [copy_log(nodes, i) for i in IDS]
    assert len({(log.size(), log.root_hash()) for log in logs}) == 1
    assert len(acknowledged) > 20
    for log in logs:
        held = {row.index: row.leaf_hash for row in log.entries(0, log.size())}
        assert all(held.get(index) == leaf for index, leaf in acknowledged.items())
        assert log.verify_all(keys_by_id([k.public_key() for k in KEYS])).ok
