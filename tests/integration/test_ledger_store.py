"""One contract for the ledger over every store: memory, SQLite (a file), a real PostgreSQL server, and the RM's
journal (``ha/replicated_ledger.py``: the leader's store of three eligible nodes on the journal's test rig, its
writes committed by a majority and applied to its SQLite copy, which the tampering hands then edit).

Every test runs against the four.  ``LogUnderTest`` gives the log, a way to
"restart" onto the same rows (a new store object on the same URL) and tampering
hands that edit rows behind the ledger's back, as someone with the database file
would: ``verify_all`` must then name the damage.  Roots and proofs are checked
against the RFC's recursive definitions (``tests/support/merkle_oracle.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, text
from twisted.internet import defer

from cortex_rm.accounting.ledger import Ledger, MerkleLog
from cortex_rm.accounting.ledger_errors import BadLedgerRequest, LedgerConflict
from cortex_rm.accounting.ledger_store import LedgerEntry, LedgerStore, MemoryLedgerStore, SqlLedgerStore
from cortex_rm.accounting.merkle import EMPTY_ROOT, Subtree, verify_consistency, verify_inclusion
from cortex_rm.accounting.tree_heads import decode_tree_head, encode_tree_head, keys_by_id, sign_tree_head
from tests.support.merkle_oracle import mth
from tests.support.postgres import PostgresServer, postgres_server  # noqa: F401 (the session fixture)
from tests.support.journal_nodes import Nodes
from tests.support.rm_core import result_of

pytestmark = pytest.mark.integration

KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = keys_by_id([KEY.public_key()])


@dataclasses.dataclass
class LogUnderTest:
    log: MerkleLog
    reopen: Callable[[], MerkleLog]  # the log a restarted node would open on the same rows
    execute: Callable[[str, dict[str, object]], None] | None  # raw SQL on the rows (None: the memory store)
    memory: MemoryLedgerStore | None


def _entry(i: int, kind: str = "attestation") -> LedgerEntry:
    return LedgerEntry(kind, f"payload {i}".encode() * (1 + i % 3))


def _fill(log: MerkleLog, n: int, batch: int = 50) -> list[bytes]:
    """Append n entries in batches; their leaf hashes."""
    entries = [_entry(i) for i in range(n)]
    for at in range(0, n, batch):
        assert log.append(entries[at : at + batch]) == at
    return [e.leaf_hash() for e in entries]


@pytest.fixture(params=["memory", "sqlite", "postgresql", "replicated"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogUnderTest]:
    opened: list[LedgerStore] = []

    def open_store(store: LedgerStore) -> MerkleLog:
        opened.append(store)
        return MerkleLog(store)

    if request.param == "memory":
        memory = MemoryLedgerStore()
        yield LogUnderTest(open_store(memory), lambda: open_store(memory), None, memory)
    elif request.param == "replicated":
        nodes = Nodes(tmp_path)
        nodes.run(7)
        leader = nodes.leader()
        engine = create_engine(nodes.copies[leader].ledger.store.url)  # type: ignore[attr-defined]

        def edit(sql: str, params: dict[str, object]) -> None:
            with engine.begin() as conn:
                assert conn.execute(text(sql), params).rowcount == 1, sql

        yield LogUnderTest(open_store(nodes.ledger_of(leader)), lambda: open_store(nodes.ledger_of(leader)), edit, None)
        engine.dispose()
        for i in list(nodes.journals):
            nodes.kill(i)
    else:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            url = server.new_database()
        engine = create_engine(url)

        def execute(sql: str, params: dict[str, object]) -> None:
            with engine.begin() as conn:
                assert conn.execute(text(sql), params).rowcount == 1, sql

        yield LogUnderTest(open_store(SqlLedgerStore(url)), lambda: open_store(SqlLedgerStore(url)), execute, None)
        engine.dispose()
    for store in opened:
        store.close()


def test_an_empty_log_has_the_empty_root_and_audits_clean(logs: LogUnderTest) -> None:
    """No entries: size 0, root SHA-256(""), no heads, a clean audit."""
    assert logs.log.size() == 0
    assert logs.log.root_hash() == EMPTY_ROOT
    assert logs.log.tree_heads() == [] and logs.log.latest_tree_head() is None
    audit = logs.log.verify_all(KEYS)
    assert audit.ok and audit.size == 0


def test_appended_entries_read_back_in_order_and_are_found_by_content(logs: LogUnderTest) -> None:
    """Batches land at consecutive indices; entries read back as written; index_of finds the first copy."""
    assert logs.log.append([_entry(0), _entry(1)]) == 0
    assert logs.log.append([]) == 2
    assert logs.log.append([_entry(2, "payout"), _entry(0)]) == 2
    rows = logs.log.entries(0, 100)
    assert [(r.index, r.kind, r.payload) for r in rows] == [
        (0, "attestation", _entry(0).payload),
        (1, "attestation", _entry(1).payload),
        (2, "payout", _entry(2).payload),
        (3, "attestation", _entry(0).payload),
    ]
    assert all(r.leaf_hash == r.entry().leaf_hash() for r in rows)
    assert logs.log.entries(1, 3) == rows[1:3]
    assert logs.log.index_of(_entry(0)) == 0 and logs.log.index_of(_entry(2, "payout")) == 2
    assert logs.log.index_of(_entry(99)) is None


def test_roots_and_proofs_at_every_size_match_the_rfc(logs: LogUnderTest) -> None:
    """Over 70 entries, every past root equals MTH, every inclusion and consistency proof verifies."""
    leaves = _fill(logs.log, 70, batch=9)
    for size in range(71):
        root = logs.log.root_hash(size)
        assert root == mth(leaves[:size])
        for index in range(0, size, 7):
            assert verify_inclusion(index, size, leaves[index], logs.log.inclusion_proof(index, size), root)
        for old in range(0, size + 1, 5):
            proof = logs.log.consistency_proof(old, size)
            assert verify_consistency(old, size, mth(leaves[:old]), root, proof)


def test_a_log_across_several_tile_levels_keeps_n_over_15_subtree_hashes_and_audits_clean(logs: LogUnderTest) -> None:
    """5,000 entries: stored subtrees of levels 4, 8 and 12 only; proofs deep in the tree verify; the audit passes."""
    leaves = _fill(logs.log, 5000, batch=700)
    expected_nodes = sum(5000 >> level for level in (4, 8, 12))
    assert logs.log.store.node_count() == expected_nodes
    root = logs.log.root_hash()
    assert root == mth(leaves)
    for index in (0, 4095, 4096, 4999):
        assert verify_inclusion(index, 5000, leaves[index], logs.log.inclusion_proof(index), root)
    assert verify_consistency(4097, 5000, mth(leaves[:4097]), root, logs.log.consistency_proof(4097))
    logs.log.sign_tree_head(KEY, 1_700_000_000_000)
    audit = logs.log.verify_all(KEYS, chunk=333)
    assert audit.ok, audit.problems
    assert audit.size == 5000 and audit.tree_heads_checked == 1


def test_a_reopened_log_continues_where_it_stopped(logs: LogUnderTest) -> None:
    """After a restart (a new store object), appends continue at the same index and roots as one unbroken log."""
    leaves = _fill(logs.log, 37)
    again = logs.reopen()
    assert again.size() == 37 and again.root_hash() == mth(leaves)
    assert again.append([_entry(37), _entry(38)]) == 37
    assert again.root_hash() == mth(leaves + [_entry(37).leaf_hash(), _entry(38).leaf_hash()])
    assert again.verify_all().ok


def test_a_second_writer_at_a_stale_size_conflicts_and_writes_nothing(logs: LogUnderTest) -> None:
    """Two logs on the same rows: the one that did not see the other's append fails, then recovers."""
    _fill(logs.log, 3)
    other = logs.reopen()
    assert other.append([_entry(3)]) == 3
    with pytest.raises(LedgerConflict):
        logs.log.append([_entry(100), _entry(101)])
    assert logs.reopen().size() == 4
    assert logs.log.append([_entry(4)]) == 4  # it read the edge again
    assert logs.log.verify_all().ok


def test_a_mirror_replays_entries_only_if_they_hash_to_the_signed_root(logs: LogUnderTest) -> None:
    """Replaying a log: wrong entries for the head's root write nothing; the right ones are written and the head kept."""
    source = MerkleLog(MemoryLedgerStore())
    source.append([_entry(i) for i in range(10)])
    sth = source.sign_tree_head(KEY, 1_000)
    with pytest.raises(LedgerConflict):
        logs.log.append([_entry(i) for i in range(9)] + [_entry(42)], expected_root=sth.root_hash)
    assert logs.log.size() == 0
    assert logs.log.append([e.entry() for e in source.entries(0, 10)], expected_root=sth.root_hash) == 0
    logs.log.add_tree_head(sth)
    assert logs.log.tree_heads() == [sth]
    assert logs.log.verify_all(KEYS).ok


def test_tree_heads_are_kept_by_size_and_checked_against_the_log(logs: LogUnderTest) -> None:
    """Signed heads are kept once each, listed by size; a head of another tree or a larger size is refused."""
    _fill(logs.log, 5)
    first = logs.log.sign_tree_head(KEY, 10)
    _fill_more = [_entry(i) for i in range(5, 8)]
    logs.log.append(_fill_more)
    second = logs.log.sign_tree_head(KEY, 20)
    logs.log.add_tree_head(first)  # the same head again: kept once
    assert logs.log.tree_heads() == [first, second]
    assert logs.log.latest_tree_head() == second
    assert (first.size, second.size) == (5, 8)
    with pytest.raises(LedgerConflict):
        logs.log.add_tree_head(sign_tree_head(KEY, 5, mth([b"\x00" * 32] * 5), 30))
    with pytest.raises(BadLedgerRequest):
        logs.log.add_tree_head(sign_tree_head(KEY, 9, EMPTY_ROOT, 30))
    assert logs.reopen().tree_heads() == [first, second]


def test_requests_outside_the_log_are_refused(logs: LogUnderTest) -> None:
    """A leaf or size beyond the log, or an old size above the new, is a BadLedgerRequest."""
    _fill(logs.log, 4)
    for call in (
        lambda: logs.log.inclusion_proof(4),
        lambda: logs.log.inclusion_proof(1, 5),
        lambda: logs.log.consistency_proof(3, 2),
        lambda: logs.log.consistency_proof(1, 5),
        lambda: logs.log.root_hash(5),
    ):
        with pytest.raises(BadLedgerRequest):
            call()


# ---------------------------------------------------------------- tampering behind the ledger's back


def _tampered_log(logs: LogUnderTest) -> list[bytes]:
    leaves = _fill(logs.log, 40, batch=16)
    logs.log.sign_tree_head(KEY, 100)
    assert logs.log.verify_all(KEYS).ok
    return leaves


def _edit_entry(logs: LogUnderTest, index: int, **values: object) -> None:
    if logs.memory is not None:
        logs.memory.rows[index] = dataclasses.replace(logs.memory.rows[index], **values)  # type: ignore[arg-type]
    else:
        assert logs.execute is not None
        sets = ", ".join(f"{column} = :{column}" for column in values)
        logs.execute(f"UPDATE ledger_entries SET {sets} WHERE idx = :index", {"index": index, **values})


def test_an_edited_payload_fails_the_audit(logs: LogUnderTest) -> None:
    """One payload byte changed in the database: the audit names the entry and the head it breaks."""
    _tampered_log(logs)
    _edit_entry(logs, 17, payload=b"payload 17, paid twice")
    audit = logs.reopen().verify_all(KEYS)
    assert not audit.ok
    assert any("entry 17" in p for p in audit.problems)
    assert any("STH(size=40" in p for p in audit.problems)


def test_a_consistently_rewritten_entry_fails_the_audit(logs: LogUnderTest) -> None:
    """Payload and its leaf hash rewritten together: the subtree hashes and the signed head no longer match."""
    _tampered_log(logs)
    forged = LedgerEntry("attestation", b"forged")
    _edit_entry(logs, 3, payload=forged.payload, leaf_hash=forged.leaf_hash())
    audit = logs.reopen().verify_all(KEYS)
    assert not audit.ok
    assert any("subtree (4, 0)" in p for p in audit.problems)
    assert any("STH(size=40" in p for p in audit.problems)


def test_a_deleted_entry_fails_the_audit(logs: LogUnderTest) -> None:
    """A row removed from the middle: the audit reports the gap."""
    _tampered_log(logs)
    if logs.memory is not None:
        del logs.memory.rows[20]
    else:
        assert logs.execute is not None
        logs.execute("DELETE FROM ledger_entries WHERE idx = :index", {"index": 20})
    audit = logs.reopen().verify_all(KEYS)
    assert any("entry 20 is missing" in p for p in audit.problems)


def test_an_edited_subtree_hash_fails_the_audit(logs: LogUnderTest) -> None:
    """A stored subtree hash changed: proofs would lie, and the audit names that subtree."""
    _tampered_log(logs)
    if logs.memory is not None:
        logs.memory.node_rows[Subtree(4, 1)] = b"\x00" * 32
    else:
        assert logs.execute is not None
        logs.execute("UPDATE ledger_nodes SET hash = :h WHERE level = 4 AND idx = 1", {"h": b"\x00" * 32})
    audit = logs.reopen().verify_all(KEYS)
    assert audit.problems == ["stored hash of subtree (4, 1) is not the hash of its entries"]


def test_an_edited_tree_head_fails_the_audit(logs: LogUnderTest) -> None:
    """A kept head re-encoded with another root fails on its signature and on the entries."""
    _tampered_log(logs)
    (sth,) = logs.log.tree_heads()
    bent = dataclasses.replace(sth, root_hash=mth([b"\x01" * 32]))
    if logs.memory is not None:
        logs.memory.head_rows[0] = (sth.size, encode_tree_head(bent))
    else:
        assert logs.execute is not None
        logs.execute("UPDATE ledger_tree_heads SET encoded = :e WHERE size = 40", {"e": encode_tree_head(bent)})
    audit = logs.reopen().verify_all(KEYS)
    assert any("bad signature" in p for p in audit.problems)
    assert any("the stored entries hash to" in p for p in audit.problems)
    assert decode_tree_head(encode_tree_head(bent)) == bent


def test_the_ledger_answers_on_the_reactor_through_its_runner(logs: LogUnderTest) -> None:
    """``Ledger`` runs each call through the runner and fires with the log's answer."""
    ledger = Ledger(logs.log, defer.maybeDeferred)
    assert result_of(ledger.append([_entry(0), _entry(1), _entry(2)])) == 0
    sth = result_of(ledger.sign_tree_head(KEY, 5))
    assert result_of(ledger.latest_tree_head()) == sth
    proof = result_of(ledger.inclusion_proof(1))
    assert verify_inclusion(1, 3, _entry(1).leaf_hash(), proof, sth.root_hash)
    assert result_of(ledger.verify_all(KEYS)).ok
