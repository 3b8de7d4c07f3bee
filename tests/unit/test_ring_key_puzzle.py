"""The ring's key puzzle (``dht/ring_work.py``): a key is a member's only if SHA-256 over a domain
tag and the key has ``key_bits`` leading zero bits.  The pure check, keys made until one solves it,
the refusals of keys that fail it (``ring_trust.py``: envelopes, ALIVE rumours) and a stored key
that fails it replaced at start (``internal/identity.py``) -- real keys, no clock at all."""

from __future__ import annotations

import datetime
import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.logger import LogEvent, LogLevel, formatEvent

from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.member_table import ALIVE
from cortex_rm.dht.membership import Membership
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_member import RingMember, Transmit
from cortex_rm.dht.ring_trust import KeyTrust
from cortex_rm.dht.ring_work import (
    KEY_DOMAIN,
    WORK_DOMAIN,
    key_digest,
    key_ok,
    leading_zero_bits,
    solve_work,
)
from cortex_rm.dht.swim_config import SwimConfig
from cortex_rm.dht.swim_messages import Ack, MemberUpdate, Probe
from cortex_rm.internal import identity as identity_module
from cortex_rm.internal.identity import (
    CERT_FILE,
    IDENTITY_DIR,
    KEY_FILE,
    REPLACED_SUFFIX,
    NodeIdentity,
    ring_key,
    self_signed_certificate,
    spki_der,
)
from cortex_rm.internal.identity import KNOWN_RMS_FILE, KnownResourceManagers
from cortex_rm.internal.ring_codec import piggyback_size
from cortex_rm.local_cluster import rm_identity

KEY_BITS = 6  # ~64 keys a member: cheap, and a random key fails it 63 times in 64
WORK_BITS = 8


def weak_key(bits: int) -> ec.EllipticCurvePrivateKey:
    """A fresh key that does *not* solve the key puzzle at ``bits`` (what a key from before the puzzle is)."""
    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        if not key_ok(spki_der(key.public_key()), bits):
            return key


class Node:
    """A key, its work and its trust.  ``key_bits`` is what the node itself checks others against:
    0 for a node whose own key fails the ring's puzzle (it could not build its trust otherwise)."""

    def __init__(self, n: int, key: ec.EllipticCurvePrivateKey, key_bits: int) -> None:
        self.spki = spki_der(key.public_key())
        self.work = solve_work(self.spki, WORK_BITS)
        self.trust = KeyTrust(key, self.work, WORK_BITS, key_bits)
        self.peer = Peer(self.trust.node_id, f"10.0.2.{n}:7000")


@pytest.fixture(scope="module")
def honest() -> list[Node]:
    return [Node(i, ring_key(KEY_BITS), KEY_BITS) for i in range(3)]


@pytest.fixture(scope="module")
def grinder() -> Node:
    return Node(9, weak_key(KEY_BITS), 0)


# ------------------------------------------------------------------ the pure check


def test_the_key_puzzle_is_the_leading_zero_bits_of_sha256_over_its_domain_and_the_key() -> None:
    """key_ok(spki, bits) holds exactly when SHA-256(KEY_DOMAIN || spki) has at least ``bits`` leading
    zero bits; 0 bits admits every key; the domain is not the nonce puzzle's (one hash cannot serve both)."""
    seen = Counter[int]()
    for i in range(4000):
        spki = b"candidate key %d" % i
        digest = key_digest(spki)
        assert digest == hashlib.sha256(KEY_DOMAIN + spki).digest()
        assert digest != hashlib.sha256(WORK_DOMAIN + spki).digest()
        zeros = leading_zero_bits(digest)
        seen[zeros] += 1
        assert key_ok(spki, 0) and key_ok(spki, -1)
        assert [key_ok(spki, bits) for bits in range(zeros + 3)] == [bits <= zeros for bits in range(zeros + 3)]
    # about half the keys fail at 1 bit, a quarter pass at 2; some pass at 8 (4000 fixed inputs)
    assert 1800 < seen[0] < 2200 and sum(n for z, n in seen.items() if z >= 8) > 0


def test_leading_zero_bits_counts_from_the_first_byte() -> None:
    """A table: the count runs across byte boundaries and an all-zero digest is all zeros."""
    assert [leading_zero_bits(d) for d in (b"\x80", b"\x01", b"\x00\x01", b"\x00\x00", b"\x00\x7f\xff")] == [0, 7, 15, 16, 9]


def test_ring_key_makes_keys_until_one_solves_the_puzzle_and_reports_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key returned solves the puzzle; every key made before it is reported, one by one (PROGRESS_KEYS=1)."""
    monkeypatch.setattr(identity_module, "PROGRESS_KEYS", 1)
    made: list[int] = []
    key = ring_key(KEY_BITS, made.append)
    assert key_ok(spki_der(key.public_key()), KEY_BITS)
    assert made == list(range(1, len(made) + 1))
    assert key_ok(spki_der(ring_key(0).public_key()), 0)  # 0 bits: the first key made


# ------------------------------------------------------------------ refusals


def test_key_trust_is_not_built_on_a_key_that_fails_the_puzzle() -> None:
    """Our own key must pass what we ask of others: the ring would refuse us otherwise."""
    key = weak_key(KEY_BITS)
    work = solve_work(spki_der(key.public_key()), WORK_BITS)
    with pytest.raises(ValueError, match=f"key puzzle at {KEY_BITS} bits"):
        KeyTrust(key, work, WORK_BITS, KEY_BITS)


def test_an_envelope_from_a_key_failing_the_puzzle_is_dropped_whole_though_its_work_checks(
    honest: list[Node], grinder: Node
) -> None:
    """A sender whose id hashes from its key and whose nonce solves its work, but whose key fails the key
    puzzle, is never heard from: no reply, no member entry, one refusal counted under its reason.  A key
    that solves it, with work, is answered and becomes a member."""
    me, other = honest[0], honest[1]
    assert key_ok(grinder.spki, 0) and not key_ok(grinder.spki, KEY_BITS)
    assert me.trust.sender_error(grinder.peer.node_id, grinder.spki, grinder.work) is not None
    config = RingConfig(work_bits=WORK_BITS, key_bits=KEY_BITS)
    member = RingMember(me.peer, config, random.Random(1), piggyback_size=piggyback_size, trust=me.trust)
    member.start(0.0)
    probe = Envelope(grinder.peer, Probe(1), (), work=grinder.work, sender_key=grinder.spki)
    assert member.receive(probe, 1.0) == []
    assert member.refused == Counter({f"the sender's key fails the key puzzle at {KEY_BITS} bits": 1})
    assert member.membership.status_of(grinder.peer) is None
    fine = Envelope(other.peer, Probe(2), (), work=other.work, sender_key=other.spki)
    [reply] = [a for a in member.receive(fine, 1.0) if isinstance(a, Transmit)]
    assert reply.envelope.body == Ack(2) and member.membership.status_of(other.peer) is ALIVE
    assert sum(member.refused.values()) == 1


def test_an_alive_rumour_for_a_key_failing_the_puzzle_is_refused(honest: list[Node], grinder: Node) -> None:
    """An ALIVE signed by its subject, with valid work, relayed by a member: refused and counted when the
    subject's key fails the key puzzle; the same rumour for a key that solves it is believed."""
    me, relay, other = honest
    m = Membership(me.peer, SwimConfig(), random.Random(1), trust=me.trust)
    forged = grinder.trust.sign_rumour(MemberUpdate(grinder.peer, ALIVE, 1))
    assert forged.work == grinder.work and grinder.trust.rumour_error(forged) is None  # it checks where keys are free
    assert m.receive_piggyback(relay.peer, [forged], 1.0) == []
    assert m.status_of(grinder.peer) is None
    assert m.view.refused == Counter({f"an ALIVE rumour whose key fails the key puzzle at {KEY_BITS} bits": 1})
    fine = other.trust.sign_rumour(MemberUpdate(other.peer, ALIVE, 1))
    assert m.receive_piggyback(relay.peer, [fine], 1.0) != [] and m.status_of(other.peer) is ALIVE


# ------------------------------------------------------------------ a stored key that fails the puzzle


def store(state_dir: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` and its certificate where a node keeps them (as a start before the puzzle did)."""
    directory = state_dir / IDENTITY_DIR
    directory.mkdir(parents=True, mode=0o700)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (directory / KEY_FILE).write_bytes(pem)
    (directory / KEY_FILE).chmod(0o600)
    certificate = self_signed_certificate(key, datetime.datetime.now(datetime.timezone.utc))
    (directory / CERT_FILE).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def test_a_stored_key_that_fails_the_puzzle_is_replaced_kept_aside_and_the_new_ring_id_logged(
    tmp_path: Path, log_events: list[LogEvent]
) -> None:
    """The node does not die: it makes a key that solves the puzzle, keeps the old key and certificate
    as ``*.replaced``, and warns naming the old and the new ring id.  The next start loads the new key
    (no second replacement); a node without the ring (0 bits) keeps whatever key it has."""
    old_key = weak_key(KEY_BITS)
    store(tmp_path, old_key)
    old = NodeIdentity.load_or_create(tmp_path, key_bits=0)  # no ring: any key is kept
    assert old.spki == spki_der(old_key.public_key())
    new = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    assert key_ok(new.spki, KEY_BITS) and new.ring_id != old.ring_id
    directory = tmp_path / IDENTITY_DIR
    kept = serialization.load_pem_private_key((directory / (KEY_FILE + REPLACED_SUFFIX)).read_bytes(), None)
    assert spki_der(kept.public_key()) == old.spki
    assert (directory / (KEY_FILE + REPLACED_SUFFIX)).stat().st_mode & 0o077 == 0
    assert (directory / (CERT_FILE + REPLACED_SUFFIX)).exists()
    warned = [formatEvent(e) for e in log_events if e.get("log_level") is LogLevel.warn]
    changed = [w for w in warned if "ring id changed" in w]
    assert len(changed) == 1 and old.ring_id_hex in changed[0] and new.ring_id_hex in changed[0]
    assert "resource_managers" in changed[0]
    again = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    assert again.fingerprint == new.fingerprint
    assert len([e for e in log_events if "ring id changed" in formatEvent(e)]) == 1


def test_local_cluster_replaces_a_pre_puzzle_rm_key_and_drops_the_nodes_pins_of_it(tmp_path: Path) -> None:
    """``local-cluster up`` on a work dir from before the puzzle: the RM node's key is replaced (the
    nodes' configs then name the new ring id), and every node's pin of the old RM key -- which would
    make it refuse the RM -- is dropped; a pin of the current key is kept."""
    old_key = weak_key(KEY_BITS)
    store(tmp_path / "node1", old_key)
    old_fingerprint = NodeIdentity.load_or_create(tmp_path / "node1", key_bits=0).fingerprint
    for name in ("node1", "node2"):
        KnownResourceManagers(tmp_path / name / IDENTITY_DIR / KNOWN_RMS_FILE).pin("ring:cortex:resourcemanager", old_fingerprint)
    said: list[str] = []
    rm = rm_identity(tmp_path, 3, said.append, key_bits=KEY_BITS)
    assert key_ok(rm.spki, KEY_BITS) and rm.fingerprint != old_fingerprint
    assert not (tmp_path / "node1" / IDENTITY_DIR / KNOWN_RMS_FILE).exists()
    assert not (tmp_path / "node2" / IDENTITY_DIR / KNOWN_RMS_FILE).exists()
    assert sum("pinned another RM key" in line for line in said) == 2
    KnownResourceManagers(tmp_path / "node2" / IDENTITY_DIR / KNOWN_RMS_FILE).pin("ring:cortex:resourcemanager", rm.fingerprint)
    assert rm_identity(tmp_path, 3, said.append, key_bits=KEY_BITS).fingerprint == rm.fingerprint
    assert (tmp_path / "node2" / IDENTITY_DIR / KNOWN_RMS_FILE).exists()
