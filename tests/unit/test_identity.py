"""Node identity: the key pair and certificate on disk, the ring id, the fingerprint, and TOFU pins."""

from __future__ import annotations

import datetime
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cortex_rm.dht.ring_math import RING_ID_BITS
from cortex_rm.internal.identity import (
    CERT_FILE,
    IDENTITY_DIR,
    KEY_FILE,
    IdentityError,
    KnownResourceManagers,
    NodeIdentity,
    PinMismatch,
)


KEY_BITS = 4  # the ring's key puzzle, cheap: ~16 keys a new identity (test_ring_key_puzzle.py checks the replacement)


def spki_of(cert_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_first_start_creates_a_private_key_and_a_self_signed_certificate(tmp_path: Path) -> None:
    """identity/node.key (0600) and identity/node.crt appear; the certificate is self-signed for that key."""
    identity = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    key_path = tmp_path / IDENTITY_DIR / KEY_FILE
    cert_path = tmp_path / IDENTITY_DIR / CERT_FILE
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / IDENTITY_DIR).stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # signed by its own key
    assert spki_of(cert_path) == identity.spki
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == identity.ring_id_hex


def test_later_starts_load_the_same_identity(tmp_path: Path) -> None:
    """A second start reuses the key and certificate: same ring id, same fingerprint, files untouched."""
    first = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    cert_bytes = (tmp_path / IDENTITY_DIR / CERT_FILE).read_bytes()
    second = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    assert (second.ring_id, second.fingerprint) == (first.ring_id, first.fingerprint)
    assert (tmp_path / IDENTITY_DIR / CERT_FILE).read_bytes() == cert_bytes


def test_ring_id_is_the_sha1_of_the_der_spki_and_the_fingerprint_its_sha256(tmp_path: Path) -> None:
    """ring_id = SHA-1(DER SubjectPublicKeyInfo) as a 160-bit int; fingerprint = SHA-256 of it, hex."""
    identity = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    spki = spki_of(tmp_path / IDENTITY_DIR / CERT_FILE)
    assert identity.ring_id == int.from_bytes(hashlib.sha1(spki).digest(), "big")
    assert 0 <= identity.ring_id < 2**RING_ID_BITS
    assert identity.ring_id_hex == hashlib.sha1(spki).hexdigest()
    assert identity.fingerprint == hashlib.sha256(spki).hexdigest()


def test_two_nodes_get_different_ids(tmp_path: Path) -> None:
    """Each state directory gets its own key, hence its own ring id."""
    a = NodeIdentity.load_or_create(tmp_path / "a", key_bits=KEY_BITS)
    b = NodeIdentity.load_or_create(tmp_path / "b", key_bits=KEY_BITS)
    assert a.ring_id != b.ring_id and a.fingerprint != b.fingerprint


def test_certificate_near_its_end_is_reissued_for_the_same_key(tmp_path: Path) -> None:
    """A start within 30 days of notAfter re-issues the certificate; the identity does not change."""
    first = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    later = first.certificate.not_valid_after_utc - datetime.timedelta(days=10)
    renewed = NodeIdentity.load_or_create(tmp_path, now=lambda: later, key_bits=KEY_BITS)
    assert renewed.fingerprint == first.fingerprint
    assert renewed.certificate.not_valid_after_utc > first.certificate.not_valid_after_utc


def test_missing_certificate_is_reissued(tmp_path: Path) -> None:
    """Deleting node.crt is harmless: it is made again from the key."""
    first = NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    (tmp_path / IDENTITY_DIR / CERT_FILE).unlink()
    assert NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS).fingerprint == first.fingerprint


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A node key with group/other permissions is an error naming the file and the fix."""
    NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    key_path = tmp_path / IDENTITY_DIR / KEY_FILE
    key_path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)


def test_lost_key_with_a_certificate_left_is_an_error(tmp_path: Path) -> None:
    """A missing key is never silently replaced while its certificate remains."""
    NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)
    (tmp_path / IDENTITY_DIR / KEY_FILE).unlink()
    with pytest.raises(IdentityError, match="is missing"):
        NodeIdentity.load_or_create(tmp_path, key_bits=KEY_BITS)


def test_certificate_of_another_key_is_an_error(tmp_path: Path) -> None:
    """node.crt must carry node.key's public key."""
    NodeIdentity.load_or_create(tmp_path / "a", key_bits=KEY_BITS)
    NodeIdentity.load_or_create(tmp_path / "b", key_bits=KEY_BITS)
    other = (tmp_path / "b" / IDENTITY_DIR / CERT_FILE).read_bytes()
    (tmp_path / "a" / IDENTITY_DIR / CERT_FILE).write_bytes(other)
    with pytest.raises(IdentityError, match="another key"):
        NodeIdentity.load_or_create(tmp_path / "a", key_bits=KEY_BITS)


# -- trust on first use ------------------------------------------------------------------


def test_pin_is_stored_and_survives_a_restart(tmp_path: Path) -> None:
    """The first pin for an address is written to disk and found by the next process."""
    path = tmp_path / "known.json"
    known = KnownResourceManagers(path)
    assert known.check("rm:8031", "f1") is False
    known.pin("rm:8031", "f1")
    again = KnownResourceManagers(path)
    assert again.pinned("rm:8031") == "f1"
    assert again.check("rm:8031", "f1") is True


def test_another_key_at_a_pinned_address_is_refused_clearly(tmp_path: Path) -> None:
    """A different fingerprint for a pinned address raises PinMismatch naming both keys and the file."""
    known = KnownResourceManagers(tmp_path / "known.json")
    known.pin("rm:8031", "f1")
    with pytest.raises(PinMismatch) as e:
        known.check("rm:8031", "f2")
    assert "f1" in str(e.value) and "f2" in str(e.value) and "known.json" in str(e.value)
    with pytest.raises(PinMismatch):
        known.pin("rm:8031", "f2")
    assert KnownResourceManagers(tmp_path / "known.json").pinned("rm:8031") == "f1"


def test_pins_are_per_address(tmp_path: Path) -> None:
    """Each RM address has its own pin (an HA pair has two)."""
    known = KnownResourceManagers(tmp_path / "known.json")
    known.pin("rm1:8031", "f1")
    known.pin("rm2:8031", "f2")
    assert (known.pinned("rm1:8031"), known.pinned("rm2:8031")) == ("f1", "f2")


def test_corrupt_pin_file_is_an_error(tmp_path: Path) -> None:
    """A pin file that is not a JSON object of strings is an error, never an empty trust store."""
    path = tmp_path / "known.json"
    path.write_text("[1, 2]")
    with pytest.raises(IdentityError, match="fix or delete"):
        KnownResourceManagers(path)
