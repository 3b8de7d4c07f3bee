"""A node's identity: its key pair, its self-signed certificate, its ring id, and whom it trusts.

Every node owns an EC P-256 key pair, created on first start under
``<state_dir>/identity/`` (``node.key``, PKCS#8 PEM, mode 0600; ``node.crt``, a
self-signed X.509 certificate for that key) and loaded on every later start.
The public key is the identity:

* the **ring id** is the SHA-1 of the DER ``SubjectPublicKeyInfo``, a 160-bit
  integer, so nobody picks where they land on the ring (DESIGN.md);
* the **fingerprint** is the SHA-256 of the same DER, in lower-case hex: the value
  that peers pin (as HTTP public-key pins did).  Pinning the key rather than the
  certificate lets a certificate be re-issued for the same key (``load_or_create``
  does so when it nears its end) without changing who the node is.

How peers are verified today, honestly
--------------------------------------
There is no certificate authority.  Every internal connection is mutual TLS
(``cortex_rm/internal/tls.py``): both sides present their certificate and prove
they hold its key (the TLS handshake's CertificateVerify); OpenSSL accepts any
*self-signed* certificate, and what that certificate may do is decided by pinning
above TLS:

* **The ResourceManager** accepts any node that shows a self-signed certificate,
  and binds the NodeId (``host:port``) it registers to that certificate's
  fingerprint (``allocator/node_tracker.py``).  A later registration or heartbeat
  for that NodeId from another key is refused with ``NodeRefused``.  The binding
  lives in the RM's memory: an RM restart forgets it, so the first node to
  register a NodeId after a restart owns it.  A node that lost its state
  directory (and so its key) cannot take its old NodeId back until the RM
  restarts.
* **A node** trusts the ResourceManager's key on first use (TOFU, as ssh's
  ``known_hosts``): the first time a registration with an RM address succeeds,
  the RM's fingerprint is stored in ``identity/known_resourcemanagers.json``
  under that address; a later connection to that address that shows another key
  is refused with ``PinMismatch`` before anything is sent.  Whoever answers first
  is trusted, so the first contact must happen on a network you trust; if the RM
  was legitimately reinstalled, delete its entry from that file.

  A node that finds the RM through the ring pins it the same way, under the
  name ``ring:cortex:resourcemanager``: the ring's record says where the RM is
  and which key it shows.  Only the ring ids in ``[ring] resource_managers`` may
  write that record (every replica refuses others: ``dht/write_policy.py``); with
  that list empty the first writer owns it, so the pin is what protects a node.

What the ring checks beyond TLS
-------------------------------
A peer's ring id must be the SHA-1 of the key it shows in TLS; that key must solve
the ring's key puzzle (``dht/ring_work.py``: ``[ring] key_bits``, 17 by default:
SHA-256 over the key has that many leading zero bits, so a node makes ~2**17 keys
before it has one, at its first start: ``load_or_create``) and come with a proof of
work (``[ring] work_bits``, 22 by default, solved once and kept in
``identity/ring-work.json`` by ``ring_work_store.py``).  So each id costs work and
so does each *candidate* place on the ring: see that module for what it costs.

A stored key that fails the key puzzle (made before the puzzle existed, or under
fewer ``key_bits``) is replaced at start: the old key and certificate are kept as
``node.key.replaced`` and ``node.crt.replaced``, and the log names the old and the
new ring id and fingerprint.  The node is then another node to everyone who pinned
it (the RM's NodeId binding until the RM restarts; if it runs the RM, the nodes'
``known_resourcemanagers.json`` and ``[ring] resource_managers``).  Everything a member says about others is
signed with this key and checked by every receiver (``dht/ring_trust.py``): a
member's ALIVE and LEFT only by itself, a SUSPECT or DEAD by its accuser (and a
DEAD from others is only a claim, checked by our own probe), a record by its
writer under the key's write policy (the RM's record: the configured
ResourceManagers; ``cortex:node:<id>``: that member; any other key: its first
writer), a gossip item by its publisher.  Each peer's rumours and puts are rate
limited (``dht/rate_limits.py``).  Membership stays open: anyone who does the
work may join, and a member may still lie about what only it can sign.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger

from cortex_rm.dht.ring_work import key_ok

log = Logger()

IDENTITY_DIR = "identity"
KEY_FILE = "node.key"
CERT_FILE = "node.crt"
KNOWN_RMS_FILE = "known_resourcemanagers.json"
REPLACED_SUFFIX = ".replaced"  # a key that failed the key puzzle, and its certificate, kept under this suffix
PROGRESS_KEYS = 2**16  # keys made between two progress lines while looking for one that solves the key puzzle

CERT_VALIDITY = datetime.timedelta(days=3650)
# A certificate this close to its end is re-issued (same key) on start.
CERT_RENEW_BEFORE = datetime.timedelta(days=30)
# notBefore is set this far in the past, so a peer whose clock runs behind ours
# (volunteered machines drift) still finds the certificate valid.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(days=1)



class IdentityError(Exception):
    """The node's identity cannot be loaded or created; the message says which file and what to do."""


class PinMismatch(IdentityError):
    """A peer showed a different key than the one pinned for its address."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# ------------------------------------------------------------- pure functions


def spki_der(public_key: PublicKeyTypes) -> bytes:
    """The DER ``SubjectPublicKeyInfo`` of a public key (what ring id and fingerprint hash)."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ring_id_of(spki: bytes) -> int:
    """The ring id: SHA-1 of the DER SPKI as a big-endian 160-bit integer."""
    return int.from_bytes(hashlib.sha1(spki).digest(), "big")


def fingerprint_of(spki: bytes) -> str:
    """The pinned fingerprint: SHA-256 of the DER SPKI, lower-case hex (64 characters)."""
    return hashlib.sha256(spki).hexdigest()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """The fingerprint of the key a certificate carries."""
    return fingerprint_of(spki_der(certificate.public_key()))


def self_signed_certificate(
    key: ec.EllipticCurvePrivateKey, now: datetime.datetime, serial: int | None = None
) -> x509.Certificate:
    """A self-signed certificate for ``key``, usable by both ends of a mutual-TLS connection.

    The subject names the ring id; the extended key usage lists both serverAuth
    and clientAuth, because OpenSSL checks the purpose matching the role.
    """
    ring_hex = f"{ring_id_of(spki_der(key.public_key())):040x}"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cortex RM node"),
            x509.NameAttribute(NameOID.COMMON_NAME, ring_hex),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def ring_key(key_bits: int, progress: Callable[[int], object] | None = None) -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key whose DER SPKI solves the ring's key puzzle at ``key_bits``
    (``dht/ring_work.py``: ~2**key_bits keys, a few seconds at 17 bits; it blocks, so run it
    in a thread).  ``progress(keys made)`` is called every ``PROGRESS_KEYS`` keys."""
    made = 0
    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        made += 1
        if key_ok(spki_der(key.public_key()), key_bits):
            return key
        if progress is not None and made % PROGRESS_KEYS == 0:
            progress(made)


def _log_progress(key_bits: int) -> Callable[[int], None]:
    def progress(made: int) -> None:
        log.info(
            "made {made} node keys, none solves the ring's key puzzle at {bits} bits yet (~{expected} on average)",
            made=made, bits=key_bits, expected=2**key_bits,
        )  # fmt: skip

    return progress


# ------------------------------------------------------------- files


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (never wider, whatever the umask)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class NodeIdentity:
    """A node's key pair and certificate, with the ids derived from the public key."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def spki(self) -> bytes:
        return spki_der(self.key.public_key())

    @property
    def ring_id(self) -> int:
        """SHA-1 of the DER SPKI, a 160-bit integer."""
        return ring_id_of(self.spki)

    @property
    def ring_id_hex(self) -> str:
        return f"{self.ring_id:040x}"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER SPKI, hex: what peers pin."""
        return fingerprint_of(self.spki)

    @classmethod
    def generate(
        cls, now: datetime.datetime | None = None, *, key_bits: int = 0, progress: Callable[[int], object] | None = None
    ) -> NodeIdentity:
        """A fresh identity in memory (tests, and the first start) whose key solves the key puzzle at ``key_bits``."""
        key = ring_key(key_bits, progress)
        return cls(key, self_signed_certificate(key, now or _utcnow()))

    @classmethod
    def load_or_create(
        cls, state_dir: Path, now: Callable[[], datetime.datetime] = _utcnow, *, key_bits: int
    ) -> NodeIdentity:
        """The identity stored under ``state_dir/identity``, created there on first start with a key
        that solves the ring's key puzzle at ``key_bits`` (0 for a node without the ring: any key).

        A missing certificate (or one within ``CERT_RENEW_BEFORE`` of its end) is
        re-issued for the stored key.  The key itself is replaced only when it fails
        the key puzzle (the ring would refuse it): see the module doc.  Making a key
        blocks for ~2**key_bits key generations: call this in a thread.
        """
        directory = Path(state_dir) / IDENTITY_DIR
        key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not key_path.exists():
            if cert_path.exists():
                raise IdentityError(
                    f"{key_path} is missing but {cert_path} exists: restore the key, "
                    f"or delete {cert_path} to give this node a new identity (and a new ring id)"
                )
            identity = cls._create(directory, key_bits, now())
            log.info(
                "created node identity {fingerprint} (ring id {ring_id}) in {directory}",
                fingerprint=identity.fingerprint,
                ring_id=identity.ring_id_hex,
                directory=str(directory),
            )
            return identity
        key = cls._load_key(key_path)
        if not key_ok(spki_der(key.public_key()), key_bits):
            return cls._replace(directory, key, key_bits, now())
        certificate = cls._load_certificate(cert_path, key) if cert_path.exists() else None
        current = now()
        if certificate is None or certificate.not_valid_after_utc - CERT_RENEW_BEFORE <= current:
            certificate = self_signed_certificate(key, current)
            _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
            log.info("issued a new certificate for the node key in {path}", path=str(cert_path))
        return cls(key, certificate)

    @classmethod
    def _create(cls, directory: Path, key_bits: int, now: datetime.datetime) -> NodeIdentity:
        """A new identity, its key made until it solves the key puzzle, written to ``directory``."""
        if key_bits > 0:
            log.info(
                "making this node's key: it must solve the ring's key puzzle at {bits} bits (~{expected} keys, "
                "a few seconds at 17 bits, twice as long per bit; once per node)", bits=key_bits, expected=2**key_bits,
            )  # fmt: skip
        identity = cls.generate(now, key_bits=key_bits, progress=_log_progress(key_bits))
        pem = identity.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(directory / KEY_FILE, pem, 0o600)
        _write_private(directory / CERT_FILE, identity.certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        return identity

    @classmethod
    def _replace(
        cls, directory: Path, old: ec.EllipticCurvePrivateKey, key_bits: int, now: datetime.datetime
    ) -> NodeIdentity:
        """A new identity in place of ``old``, whose key fails the key puzzle; the old files are kept aside.

        The certificate is moved first, then the key: a start interrupted in between
        finds the old key without a certificate and replaces it again."""
        old_spki = spki_der(old.public_key())
        log.warn(
            "the node key in {directory} (ring id {ring_id}) does not solve the ring's key puzzle at {bits} bits "
            "(made before the puzzle, or under fewer [ring] key_bits): the ring would refuse it, so this node "
            "gets a new key", directory=str(directory), ring_id=f"{ring_id_of(old_spki):040x}", bits=key_bits,
        )  # fmt: skip
        for name in (CERT_FILE, KEY_FILE):
            if (directory / name).exists():
                os.replace(directory / name, directory / (name + REPLACED_SUFFIX))
        identity = cls._create(directory, key_bits, now)
        log.warn(
            "this node's ring id changed from {old_id} to {new_id} (fingerprint {old_fingerprint} -> {fingerprint}; "
            "the old key is kept as {kept}).  Whoever pinned the old key must be told: a running RM binds this "
            "node's NodeId to the old key until it restarts; if this node runs the RM, every node's [ring] "
            "resource_managers must name the new ring id, and the nodes must drop the RM's old fingerprint from "
            "their identity/{known}",
            old_id=f"{ring_id_of(old_spki):040x}", new_id=identity.ring_id_hex, old_fingerprint=fingerprint_of(old_spki),
            fingerprint=identity.fingerprint, kept=str(directory / (KEY_FILE + REPLACED_SUFFIX)), known=KNOWN_RMS_FILE,
        )  # fmt: skip
        return identity

    @staticmethod
    def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise IdentityError(
                f"{path} is readable by others (mode {mode:04o}); the node key must be private: chmod 600 {path}"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as e:
            raise IdentityError(f"{path} is not an unencrypted PEM private key: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"{path} holds a {type(key).__name__}, not an EC key")
        return key

    @staticmethod
    def _load_certificate(path: Path, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError as e:
            raise IdentityError(f"{path} is not a PEM certificate: {e}; delete it to have it re-issued") from None
        if spki_der(certificate.public_key()) != spki_der(key.public_key()):
            raise IdentityError(
                f"{path} is for another key than {path.with_name(KEY_FILE)}; delete it to have it re-issued"
            )
        return certificate


class KnownResourceManagers:
    """The ResourceManager fingerprints this node pinned, by RM address (trust on first use).

    Stored as a JSON object ``{"host:port": "<fingerprint>"}``; written whole and
    atomically whenever a new address is pinned.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pins: dict[str, str] = self._read()

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> KnownResourceManagers:
        return cls(Path(state_dir) / IDENTITY_DIR / KNOWN_RMS_FILE)

    def _read(self) -> dict[str, str]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise IdentityError(f"{self.path} cannot be read as JSON ({e}); fix or delete it") from None
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise IdentityError(f"{self.path} must map RM addresses to fingerprints; fix or delete it")
        return dict(raw)

    def fingerprints(self) -> set[str]:
        """Every fingerprint pinned, under any address."""
        return set(self._pins.values())

    def pinned(self, address: str) -> str | None:
        """The fingerprint pinned for ``address``, if any."""
        return self._pins.get(address)

    def check(self, address: str, fingerprint: str) -> bool:
        """Whether ``fingerprint`` is already pinned for ``address`` (False: nothing pinned yet).

        Raises PinMismatch when another fingerprint is pinned there.
        """
        pinned = self._pins.get(address)
        if pinned is None:
            return False
        if pinned != fingerprint:
            raise PinMismatch(
                f"the ResourceManager at {address} presented key {fingerprint}, but this node pinned "
                f"{pinned} on first contact (in {self.path}); refusing to talk to it. If the RM was "
                f"reinstalled on purpose, delete the {address!r} entry from that file"
            )
        return True

    def pin(self, address: str, fingerprint: str) -> None:
        """Pin ``fingerprint`` for ``address`` (first successful contact); a no-op when already pinned."""
        if self.check(address, fingerprint):
            return
        self._pins[address] = fingerprint
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(self.path, (json.dumps(self._pins, indent=2, sort_keys=True) + "\n").encode(), 0o644)
        log.info(
            "pinned the ResourceManager at {address}: key {fingerprint} (trust on first use)",
            address=address,
            fingerprint=fingerprint,
        )
