"""Signed tree heads and the mirrors' watcher (``accounting/tree_heads.py``).

Heads are signed with real P-256 keys (``cryptography``); logs are ``MerkleLog``s
over the memory store.  Scenarios: a growing log is followed; a log that rewrote
history, or showed two roots for one size, is caught as a fork, with evidence that
a third node can check; forged or unknown signers are rejected without blaming the
log.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import MalformedTreeHead
from cortex_rm.accounting.ledger_store import LedgerEntry, MemoryLedgerStore
from cortex_rm.accounting.merkle import EMPTY_ROOT
from cortex_rm.accounting.tree_heads import (
    MAX_ENCODED_BYTES,
    SignedTreeHead,
    TreeHeadWatcher,
    Verdict,
    decode_tree_head,
    encode_tree_head,
    evidence_error,
    key_id_of,
    keys_by_id,
    sign_tree_head,
    signature_error,
    tree_head_message,
)

RM_KEY = ec.generate_private_key(ec.SECP256R1())
STANDBY_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER_KEY = ec.generate_private_key(ec.SECP256R1())
TRUSTED = keys_by_id([RM_KEY.public_key(), STANDBY_KEY.public_key()])


def _log(n: int, salt: str = "") -> MerkleLog:
    log = MerkleLog(MemoryLedgerStore())
    log.append([LedgerEntry("attestation", f"{salt}{i}".encode()) for i in range(n)])
    return log


def test_the_signed_message_is_fixed_and_deterministic() -> None:
    """The signed bytes are the domain, version, timestamp, size, root and key id, nothing else, big-endian."""
    key_id = bytes(range(32))
    message = tree_head_message(7, EMPTY_ROOT, 1_700_000_000_123, key_id)
    assert message == b"cortex-ledger-sth\x00" + struct.pack(">BQQ", 1, 1_700_000_000_123, 7) + EMPTY_ROOT + key_id
    assert len(message) == 18 + 17 + 32 + 32
    sth = sign_tree_head(RM_KEY, 7, EMPTY_ROOT, 1_700_000_000_123)
    assert sth.message() == tree_head_message(7, EMPTY_ROOT, 1_700_000_000_123, key_id_of(RM_KEY.public_key()))


def test_a_head_verifies_with_its_signers_key_and_nothing_else() -> None:
    """Good with the signer's key; an unknown signer, a wrong key under its id, or any edited field fails."""
    sth = sign_tree_head(RM_KEY, 3, EMPTY_ROOT, 10)
    assert signature_error(sth, TRUSTED) is None
    stranger = sign_tree_head(STRANGER_KEY, 3, EMPTY_ROOT, 10)
    assert "unknown key" in (signature_error(stranger, TRUSTED) or "")
    impostor = dataclasses.replace(stranger, key_id=sth.key_id)  # claims to be the RM
    assert "bad signature" in (signature_error(impostor, TRUSTED) or "")
    assert "another id" in (signature_error(sth, lambda _: STANDBY_KEY.public_key()) or "")
    for change in ({"size": 4}, {"timestamp_ms": 11}, {"root_hash": b"\x01" * 32}):
        assert "bad signature" in (signature_error(dataclasses.replace(sth, **change), TRUSTED) or "")  # type: ignore[arg-type]


def test_encoding_round_trips_and_refuses_malformed_bytes() -> None:
    """decode(encode(h)) == h; truncated, extended, other-version or other-domain bytes are MalformedTreeHead."""
    sth = sign_tree_head(RM_KEY, 123456, b"\x07" * 32, 99)
    data = encode_tree_head(sth)
    assert decode_tree_head(data) == sth
    for bad in (data[:-1], data + b"\x00", b"x" + data[1:], data[:18] + b"\x02" + data[19:], b"", data[:100]):
        with pytest.raises(MalformedTreeHead):
            decode_tree_head(bad)
    with pytest.raises(MalformedTreeHead):
        SignedTreeHead(1, b"short", 0, sth.key_id, sth.signature)
    with pytest.raises(MalformedTreeHead):
        SignedTreeHead(-1, EMPTY_ROOT, 0, sth.key_id, sth.signature)


@given(st.binary(max_size=MAX_ENCODED_BYTES + 10))
def test_decoding_arbitrary_bytes_gives_a_head_or_malformed_never_another_error(data: bytes) -> None:
    """Whatever a peer sends, decoding yields a well-formed head or raises MalformedTreeHead."""
    try:
        sth = decode_tree_head(data)
    except MalformedTreeHead:
        return
    assert encode_tree_head(sth) == data


@given(st.integers(0, 200), st.binary(min_size=1, max_size=72))
def test_decoding_a_mutated_head_never_raises_anything_else(at: int, junk: bytes) -> None:
    """Bytes of a real head with a stretch overwritten: a head (whose signature then fails) or MalformedTreeHead."""
    data = bytearray(encode_tree_head(sign_tree_head(RM_KEY, 5, EMPTY_ROOT, 1)))
    data[at : at + len(junk)] = junk
    try:
        sth = decode_tree_head(bytes(data))
    except MalformedTreeHead:
        return
    assert sth == decode_tree_head(encode_tree_head(sth))


def test_a_watcher_follows_a_growing_log_and_ignores_old_gossip() -> None:
    """Heads that grow with valid proofs are accepted and become the latest; a smaller consistent head changes nothing."""
    log = _log(10)
    watcher = TreeHeadWatcher(TRUSTED)
    first = log.sign_tree_head(RM_KEY, 1)
    assert watcher.observe(first, []).verdict is Verdict.ACCEPTED
    log.append([LedgerEntry("payout", b"march")] * 7)
    second = log.sign_tree_head(STANDBY_KEY, 2)  # a new active RM signs the same log after a failover
    assert watcher.observe(second, log.consistency_proof(10, 17)).verdict is Verdict.ACCEPTED
    assert watcher.latest == second
    old = watcher.observe(first, log.consistency_proof(10, 17))
    assert old.verdict is Verdict.ACCEPTED and watcher.latest == second
    again = sign_tree_head(RM_KEY, 17, second.root_hash, 3)
    assert watcher.observe(again, []).verdict is Verdict.ACCEPTED and watcher.latest == again
    assert watcher.forks == []


def test_a_log_that_rewrote_an_entry_is_caught_as_a_fork() -> None:
    """A mirror saw size 10; the log then rewrites entry 4 and grows: no proof it gives can verify."""
    honest = _log(10)
    watcher = TreeHeadWatcher(TRUSTED)
    watcher.observe(honest.sign_tree_head(RM_KEY, 1), [])
    rewritten = _log(4)
    rewritten.append([LedgerEntry("attestation", b"not what was witnessed")])
    rewritten.append([LedgerEntry("attestation", f"{i}".encode()) for i in range(5, 12)])
    new = rewritten.sign_tree_head(RM_KEY, 2)
    seen = watcher.observe(new, rewritten.consistency_proof(10, 12))
    assert seen.verdict is Verdict.FORK and seen.evidence is not None
    assert not seen.evidence.conclusive
    assert seen.evidence.earlier.size == 10 and seen.evidence.later == new
    assert watcher.latest is not None and watcher.latest.size == 10  # never moves to the forked head
    assert evidence_error(seen.evidence, TRUSTED) is None
    # the honest proof between the same heads does not exist: the honest log's 12-head has another root
    honest.append([LedgerEntry("attestation", f"{i}".encode()) for i in range(10, 12)])
    assert honest.root_hash() != new.root_hash


def test_two_roots_for_one_size_is_conclusive_evidence_any_node_can_check() -> None:
    """Split view: mirrors shown different trees of the same size; gossip of one head to the other convicts the signer."""
    seen_by_a, seen_by_b = _log(8, "a"), _log(8, "b")
    a = TreeHeadWatcher(TRUSTED)
    b = TreeHeadWatcher(TRUSTED)
    head_a, head_b = seen_by_a.sign_tree_head(RM_KEY, 5), seen_by_b.sign_tree_head(RM_KEY, 5)
    a.observe(head_a, [])
    b.observe(head_b, [])
    gossip = a.observe(head_b, [])
    assert gossip.verdict is Verdict.FORK and gossip.evidence is not None and gossip.evidence.conclusive
    assert evidence_error(gossip.evidence, TRUSTED) is None
    # evidence that does not hold is refused: agreeing heads, a forged head, a proof that reconciles
    agree = dataclasses.replace(gossip.evidence, later=head_a)
    assert evidence_error(agree, TRUSTED) == "the heads agree"
    forged = dataclasses.replace(gossip.evidence, later=dataclasses.replace(head_b, timestamp_ms=6))
    assert "bad signature" in (evidence_error(forged, TRUSTED) or "")
    grown = _log(12, "a")
    big = grown.sign_tree_head(RM_KEY, 9)
    fair = dataclasses.replace(
        gossip.evidence, later=big, proof=tuple(grown.consistency_proof(8, 12)), conclusive=False
    )
    assert evidence_error(fair, TRUSTED) == "the proof reconciles the heads"


def test_heads_from_strangers_are_rejected_without_blaming_the_log() -> None:
    """A head signed by an untrusted key, or with a broken signature, is REJECTED: no fork, latest unchanged."""
    log = _log(4)
    watcher = TreeHeadWatcher(TRUSTED, latest=log.sign_tree_head(RM_KEY, 1))
    stranger = _log(4, "x").sign_tree_head(STRANGER_KEY, 2)
    assert watcher.observe(stranger, []).verdict is Verdict.REJECTED
    good = log.sign_tree_head(RM_KEY, 3)
    broken = dataclasses.replace(good, signature=good.signature[:-1] + bytes([good.signature[-1] ^ 1]))
    assert watcher.observe(broken, []).verdict is Verdict.REJECTED
    assert watcher.forks == [] and watcher.latest is not None and watcher.latest.timestamp_ms == 1


def test_a_head_that_shrinks_the_log_needs_a_proof_to_the_latest() -> None:
    """An older size with a bad proof (or none) is a fork: the log cannot show that old tree inside the newer one."""
    log = _log(9)
    watcher = TreeHeadWatcher(TRUSTED, latest=log.sign_tree_head(RM_KEY, 1))
    other = _log(5, "z").sign_tree_head(RM_KEY, 2)
    seen = watcher.observe(other, [])
    assert seen.verdict is Verdict.FORK and seen.evidence is not None
    assert seen.evidence.earlier == other and watcher.latest is not None and watcher.latest.size == 9
