"""Ring membership in the ledger: who was a live member when, as the active RM saw it, signed.

The payout rules count a witness's word only while the ring made it one of the
subject's probers (``neighbour_history.py``), and that follows from membership
alone.  So membership must be in the log too, or nobody could recompute a payout:
the RM appends a ``MembershipChange`` whenever its ring member reports members
joining (``MemberJoined``, a refuted death) or going (``MemberDied``,
``MemberLeft``), and a *snapshot* of every live member when it starts (an RM
that was down missed what happened meanwhile: the snapshot ends whatever it no
longer sees).

Encoding (integers big-endian; version 1)::

    kind          1   0x03: a membership change, version 1
    at_ms         8   when the RM's member learnt it
    flags         1   bit 0: snapshot (``joined`` is every live member; all others went)
    n_joined      4   then n_joined ring ids (20 bytes each), strictly increasing
    n_left        4   then n_left ring ids, strictly increasing, none of them joined
    signer key   33   the RM's P-256 key, SEC1 compressed point
    siglen        1   at most 72, then ECDSA P-256 / SHA-256 over
                      ``b"cortex-membership\\x00"`` and every byte before siglen

``Memberships`` replays changes in log order into each ring id's live intervals;
``ring_neighbour_table`` turns those into the probers of each subject.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.accounting.attestations import KEY_BYTES, MAX_SIGNATURE_BYTES, RING_ID_BYTES, key_identity, public_key_bytes
from cortex_rm.accounting.intervals import Interval

KIND_MEMBERSHIP = 0x03
"""First byte of a ledger entry that is a membership change (version 1)."""

MAX_MEMBERS = 100_000  # ring ids in one change: a snapshot of a very large ring (2 MB) still fits
_HEAD = struct.Struct(">BQB")
_COUNT = struct.Struct(">I")
_DOMAIN = b"cortex-membership\x00"
_ECDSA = ec.ECDSA(hashes.SHA256())
SNAPSHOT = 0x01


class MalformedMembership(ValueError):
    """The bytes are not a membership change (version 1)."""


@dataclass(frozen=True)
class MembershipChange:
    """At ``at_ms`` the members ``joined`` became live and ``left`` went; a snapshot lists all live ones."""

    at_ms: int
    joined: tuple[int, ...] = ()
    left: tuple[int, ...] = ()
    snapshot: bool = False
    signer_key: bytes = b""
    signature: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.at_ms < 1 << 63:
            raise ValueError(f"membership time {self.at_ms} out of range")
        for name in ("joined", "left"):
            ids = getattr(self, name)
            if len(ids) > MAX_MEMBERS or any(not 0 <= i < 1 << (8 * RING_ID_BYTES) for i in ids):
                raise ValueError(f"membership {name}: at most {MAX_MEMBERS} 160-bit ring ids")
            if any(a >= b for a, b in zip(ids, ids[1:])):
                raise ValueError(f"membership {name} must be strictly increasing")
        if set(self.joined) & set(self.left) or (self.snapshot and self.left):
            raise ValueError("a ring id cannot both join and leave in one change; a snapshot lists only who is live")

    @property
    def signer(self) -> int:
        """The ring id of the key that signed (ValueError when unsigned)."""
        return key_identity(self.signer_key)[1]

    def body(self) -> bytes:
        if len(self.signer_key) != KEY_BYTES:
            raise ValueError("an unsigned membership change has no encoding; sign it first")
        parts = [_HEAD.pack(KIND_MEMBERSHIP, self.at_ms, SNAPSHOT if self.snapshot else 0)]
        for ids in (self.joined, self.left):
            parts.append(_COUNT.pack(len(ids)))
            parts.extend(i.to_bytes(RING_ID_BYTES, "big") for i in ids)
        parts.append(self.signer_key)
        return b"".join(parts)

    def encode(self) -> bytes:
        return self.body() + bytes([len(self.signature)]) + self.signature


def membership_change(at_ms: int, joined: Iterable[int] = (), left: Iterable[int] = (), snapshot: bool = False) -> MembershipChange:
    """An unsigned change (ids sorted, duplicates dropped)."""
    return MembershipChange(at_ms, tuple(sorted(set(joined))), tuple(sorted(set(left))), snapshot)


def sign_membership(private_key: ec.EllipticCurvePrivateKey, change: MembershipChange) -> MembershipChange:
    """``change`` signed with the RM's key."""
    unsigned = replace(change, signer_key=public_key_bytes(private_key.public_key()), signature=b"")
    return replace(unsigned, signature=private_key.sign(_DOMAIN + unsigned.body(), _ECDSA))


def membership_error(change: MembershipChange) -> str | None:
    """Why ``change`` was not signed by its signer key (None: it was)."""
    try:
        public_key = key_identity(change.signer_key)[0]
        public_key.verify(change.signature, _DOMAIN + change.body(), _ECDSA)
    except (InvalidSignature, ValueError):
        return "the membership change's signature does not verify with its signer key"
    return None


def decode_membership(data: bytes) -> MembershipChange:
    """The change ``data`` encodes (``MalformedMembership`` otherwise); the signature is not checked."""
    try:
        kind, at_ms, flags = _HEAD.unpack_from(data)
        if kind != KIND_MEMBERSHIP or flags & ~SNAPSHOT:
            raise MalformedMembership(f"kind {kind:#04x} / flags {flags:#04x} are not a membership change")
        at = _HEAD.size
        lists: list[tuple[int, ...]] = []
        for _ in range(2):
            (count,) = _COUNT.unpack_from(data, at)
            at += _COUNT.size
            if count > MAX_MEMBERS or len(data) < at + count * RING_ID_BYTES:
                raise MalformedMembership(f"{len(data)} bytes cannot hold {count} ring ids")
            raw = data[at : at + count * RING_ID_BYTES]
            lists.append(tuple(int.from_bytes(raw[i : i + RING_ID_BYTES], "big") for i in range(0, len(raw), RING_ID_BYTES)))
            at += count * RING_ID_BYTES
        key = bytes(data[at : at + KEY_BYTES])
        at += KEY_BYTES
        signature = bytes(data[at + 1 :])
        if len(key) != KEY_BYTES or at >= len(data) or len(signature) != data[at] or not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
            raise MalformedMembership("the signer key or signature length does not match the bytes left")
        key_identity(key)
        return MembershipChange(at_ms, lists[0], lists[1], bool(flags & SNAPSHOT), key, signature)
    except MalformedMembership:
        raise
    except (struct.error, IndexError, ValueError) as error:
        raise MalformedMembership(str(error)) from None


class Memberships:
    """Each ring id's live intervals, replayed from membership changes in log order."""

    def __init__(self) -> None:
        self._open: dict[int, int] = {}  # ring id -> since when it is live
        self._closed: dict[int, list[Interval]] = {}
        self.last_ms = 0  # the latest change's time (changes never move time back)
        self.first_ms: int | None = None  # the first change's time
        self.ever: set[int] = set()  # every ring id that was ever live

    def apply(self, change: MembershipChange) -> None:
        if self.first_ms is None:
            self.first_ms = change.at_ms
        at = max(change.at_ms, self.last_ms)  # a change stamped earlier than its predecessor happened no earlier
        self.last_ms = at
        going = set(self._open) - set(change.joined) if change.snapshot else set(change.left)
        for member in going:
            since = self._open.pop(member, None)
            if since is not None and since < at:
                self._closed.setdefault(member, []).append((since, at))
        for member in change.joined:
            self._open.setdefault(member, at)
        self.ever.update(change.joined)

    @property
    def live(self) -> frozenset[int]:
        """The members live after the last change."""
        return frozenset(self._open)

    def intervals(self, until_ms: int) -> dict[int, list[Interval]]:
        """Every ring id's live intervals, those still open ending at ``until_ms``."""
        result = {member: list(spans) for member, spans in self._closed.items()}
        for member, since in self._open.items():
            if since < until_ms:
                result.setdefault(member, []).append((since, until_ms))
        return result
