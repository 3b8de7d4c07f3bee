"""Who said what on the ring: signed rumours, signed records, and the work behind every id.

Anyone may open a TLS connection to a member and gossip; the transport only proves
*who is talking* (the certificate hashes to the sender's ring id).  What a message
*claims* about others must be proven separately, by the one who may claim it:

=====================  =========================  ==================================
what                   signed by                  checked
=====================  =========================  ==================================
ALIVE i, LEFT i        the member itself          SHA-1(signer key) = subject's id;
                                                  ALIVE: the subject's key solves
                                                  the key puzzle and the rumour
                                                  carries its work (``ring_work.py``)
SUSPECT i, DEAD i      its accuser                SHA-1(signer key) = accuser's id
                                                  (and ``group_view.py``: the accuser
                                                  is a live member we know)
a key-space record     its writer                 SHA-1(signer key) = ``writer``; the
                                                  key's ``WritePolicy`` allows writer
a gossip item          its publisher              SHA-1(signer key) = ``publisher``;
                                                  the section's own rule (capacity:
                                                  only about itself)
an envelope            (TLS)                      the sender's key (the one its TLS
                                                  certificate carries) solves the
                                                  key puzzle, and its work checks
=====================  =========================  ==================================

So ALIVE and LEFT are self-certifying: nobody can speak for a member's life or its
leaving but the member.  A DEAD is only ever a claim: ``membership.py`` probes the
member itself before it acts on someone else's DEAD.

Signatures are ECDSA P-256 with SHA-256 (the identity key, ``internal/identity.py``),
made with ``cryptography``.  Each rumour is signed once, when it is made (not per
send); verifications are cached by (key, message, signature), so a rumour heard
again from many relays costs one verification.

``KeyTrust`` is the real thing.  ``OpenTrust`` signs nothing and accepts everything:
it exists only for simulations that place members at chosen ring ids, which no key
can hash to (``tests/support``); the ring service always builds a ``KeyTrust``.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import replace
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.ring_work import key_ok, work_ok
from cortex_rm.dht.swim_messages import GossipItem, MemberStatus, MemberUpdate

MAX_KEY_BYTES = 512  # a DER SPKI (P-256: 91 bytes); anything longer is not a member's key
MAX_SIGNATURE_BYTES = 160  # a DER ECDSA signature (P-256: at most 72 bytes)
VERIFIED_CACHE = 8192  # verification results kept (remote input: bounded, least recently used out)

_SELF_SIGNED = (MemberStatus.ALIVE, MemberStatus.LEFT)
_STATUS_BYTE = {MemberStatus.ALIVE: 1, MemberStatus.SUSPECT: 2, MemberStatus.DEAD: 3, MemberStatus.LEFT: 4}


def key_id(spki: bytes) -> int:
    """The ring id a public key (DER SPKI) stands for: SHA-1 as a 160-bit integer."""
    return int.from_bytes(hashlib.sha1(spki).digest(), "big")


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def rumour_message(update: MemberUpdate) -> bytes:
    """The bytes a rumour's signature covers: subject, address, status, incarnation, accuser, work."""
    accuser = 0 if update.accuser is None else update.accuser.node_id
    return b"".join(
        (
            b"cortex-rumour\x00",
            update.peer.node_id.to_bytes(20, "big"),
            _text(update.peer.address),
            struct.pack(">BQ", _STATUS_BYTE[update.status], update.incarnation),
            accuser.to_bytes(20, "big"),
            struct.pack(">Q", update.work),
        )
    )


def record_message(key: str, value: bytes, version: int) -> bytes:
    """The bytes a record's signature covers: key, version, value."""
    return b"cortex-record\x00" + _text(key) + struct.pack(">Q", version) + value


def gossip_message(item: GossipItem) -> bytes:
    """The bytes a gossip item's signature covers: section, key, payload."""
    return b"cortex-gossip\x00" + _text(item.section) + _text(item.key) + item.payload


class RingTrust(Protocol):
    """What the ring's cores need to sign what they say and check what they hear."""

    node_id: int
    work: int
    signs: bool  # whether what we say is signed (False only for ``OpenTrust``)

    def sign_rumour(self, update: MemberUpdate) -> MemberUpdate: ...

    def rumour_error(self, update: MemberUpdate) -> str | None: ...

    def sign_record(self, key: str, value: bytes, version: int) -> Record: ...

    def record_error(self, record: Record) -> str | None: ...

    def sign_gossip(self, item: GossipItem) -> GossipItem: ...

    def gossip_error(self, item: GossipItem) -> str | None: ...

    def sender_error(self, node_id: int, spki: bytes, work: int) -> str | None: ...


class KeyTrust:
    """Signs with this member's key; checks signatures, key hashes, key puzzles and work.

    ``work_bits`` and ``key_bits`` are the ring's (``RingConfig``); our own key and work must
    pass them too (ValueError otherwise: the ring would refuse us).
    """

    signs = True

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, work: int, work_bits: int, key_bits: int) -> None:
        self._key = private_key
        self.spki = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.node_id = key_id(self.spki)
        self.work = work
        self.work_bits = work_bits
        self.key_bits = key_bits
        if not key_ok(self.spki, key_bits):
            raise ValueError(f"this key does not solve the ring's key puzzle at {key_bits} bits")
        if not work_ok(self.spki, work, work_bits):
            raise ValueError(f"work {work} does not solve this key's puzzle at {work_bits} bits")
        self._verified: OrderedDict[bytes, bool] = OrderedDict()
        self._keys: OrderedDict[bytes, ec.EllipticCurvePublicKey | None] = OrderedDict()
        self._workers: OrderedDict[int, tuple[bytes, int]] = OrderedDict()  # id -> (key, work) admitted
        self.verifications = 0  # signatures actually verified (cache misses), for benchmarks
        self.signatures = 0

    # ------------------------------------------------------------ signing

    def _sign(self, message: bytes) -> bytes:
        self.signatures += 1
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def sign_rumour(self, update: MemberUpdate) -> MemberUpdate:
        """``update`` signed by us (we must be its subject for ALIVE/LEFT, its accuser otherwise)."""
        if update.status in _SELF_SIGNED:
            if update.peer.node_id != self.node_id:
                raise ValueError("only a member itself can sign its ALIVE or LEFT")
            update = replace(update, work=self.work)
        elif update.accuser is None or update.accuser.node_id != self.node_id:
            raise ValueError("a SUSPECT or DEAD is signed by its accuser: set accuser to us")
        return replace(update, signer_key=self.spki, signature=self._sign(rumour_message(update)))

    def sign_record(self, key: str, value: bytes, version: int) -> Record:
        """A record of ours: written (and signed) by us."""
        signature = self._sign(record_message(key, value, version))
        return Record(key, value, version, self.node_id, self.spki, signature)

    def sign_gossip(self, item: GossipItem) -> GossipItem:
        """A gossip item published (and signed) by us."""
        item = replace(item, publisher=self.node_id, signer_key=self.spki)
        return replace(item, signature=self._sign(gossip_message(item)))

    # ------------------------------------------------------------ checking

    def rumour_error(self, update: MemberUpdate) -> str | None:
        """Why ``update`` cannot be believed (None: its signature and signer check out)."""
        if update.status in _SELF_SIGNED:
            signer = update.peer.node_id
        elif update.accuser is None:
            return f"a {update.status.value} rumour names no accuser"
        else:
            signer = update.accuser.node_id
        if key_id(update.signer_key) != signer:
            return f"a {update.status.value} rumour not signed by {'its subject' if update.status in _SELF_SIGNED else 'its accuser'}"
        if update.status is MemberStatus.ALIVE:
            refused = self._admission_error(signer, update.signer_key, update.work)
            if refused is not None:
                return f"an ALIVE rumour whose {refused}"
        if not self._verify(update.signer_key, rumour_message(update), update.signature):
            return f"a {update.status.value} rumour with a bad signature"
        return None

    def record_error(self, record: Record) -> str | None:
        """Why ``record`` was not written by its ``writer`` (None: it was)."""
        if key_id(record.signer_key) != record.writer:
            return f"record {record.key[:40]!r} not signed by its writer"
        if not self._verify(record.signer_key, record_message(record.key, record.value, record.version), record.signature):
            return f"record {record.key[:40]!r} has a bad signature"
        return None

    def gossip_error(self, item: GossipItem) -> str | None:
        """Why ``item`` was not published by its ``publisher`` (None: it was)."""
        if key_id(item.signer_key) != item.publisher:
            return f"a {item.section} item not signed by its publisher"
        if not self._verify(item.signer_key, gossip_message(item), item.signature):
            return f"a {item.section} item with a bad signature"
        return None

    def sender_error(self, node_id: int, spki: bytes, work: int) -> str | None:
        """Why the sender of an envelope may not take part (None: its key and work check out)."""
        if key_id(spki) != node_id:
            return "the sender's key does not hash to its id"
        refused = self._admission_error(node_id, spki, work)
        return None if refused is None else f"the sender's {refused}"

    def _admission_error(self, node_id: int, spki: bytes, work: int) -> str | None:
        """Why the key ``spki`` with ``work`` may not be a member (None: both puzzles check)."""
        if self._workers.get(node_id) == (spki, work):
            self._workers.move_to_end(node_id)
            return None
        if not key_ok(spki, self.key_bits):
            return f"key fails the key puzzle at {self.key_bits} bits"
        if not work_ok(spki, work, self.work_bits):
            return "work does not solve its key's puzzle"
        self._workers[node_id] = (spki, work)
        if len(self._workers) > VERIFIED_CACHE:
            self._workers.popitem(last=False)
        return None

    def _verify(self, spki: bytes, message: bytes, signature: bytes) -> bool:
        if not signature or len(signature) > MAX_SIGNATURE_BYTES or len(spki) > MAX_KEY_BYTES:
            return False
        digest = hashlib.sha256(struct.pack(">HH", len(spki), len(signature)) + spki + signature + message).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            self._verified.move_to_end(digest)
            return cached
        self.verifications += 1
        public_key = self._public_key(spki)
        good = False
        if public_key is not None:
            try:
                public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                good = True
            except InvalidSignature:
                good = False
        self._verified[digest] = good
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return good

    def _public_key(self, spki: bytes) -> ec.EllipticCurvePublicKey | None:
        if spki in self._keys:
            return self._keys[spki]
        try:
            loaded = serialization.load_der_public_key(spki)
        except (ValueError, TypeError):  # not DER, or a key type cryptography does not know
            loaded = None
        public_key = loaded if isinstance(loaded, ec.EllipticCurvePublicKey) and isinstance(loaded.curve, ec.SECP256R1) else None
        self._keys[spki] = public_key
        if len(self._keys) > VERIFIED_CACHE:
            self._keys.popitem(last=False)
        return public_key


class OpenTrust:
    """Signs nothing and believes everything: for simulations at chosen ring ids only (see the module doc)."""

    work = 0
    signs = False

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id

    def sign_rumour(self, update: MemberUpdate) -> MemberUpdate:
        return update

    def rumour_error(self, update: MemberUpdate) -> str | None:
        return None

    def sign_record(self, key: str, value: bytes, version: int) -> Record:
        return Record(key, value, version, self.node_id)

    def record_error(self, record: Record) -> str | None:
        return None

    def sign_gossip(self, item: GossipItem) -> GossipItem:
        return replace(item, publisher=self.node_id)

    def gossip_error(self, item: GossipItem) -> str | None:
        return None

    def sender_error(self, node_id: int, spki: bytes, work: int) -> str | None:
        return None
