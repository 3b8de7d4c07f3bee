"""The payout statement: a closed period's uptimes, signed by the RM and appended to the ledger.

It names what it was computed from -- the period, the rule's ``min_witnesses``,
and the ledger prefix (``log_size`` entries, whose tree head is ``log_root``) --
and each paid node's uptime in ms.  Shares are not written: each is exactly
``uptime / total`` (``payouts.shares``), so there is nothing to round.  Anyone
holding the same prefix and membership history recomputes the same uptimes
(``payouts.UptimeTally``) and can compare ``encode()`` byte for byte.

Encoding (integers big-endian; version 1)::

    kind             1   0x02: a payout statement, version 1
    period           16  start_ms (8), end_ms (8)
    min_witnesses    1
    log_size         8
    root length      1   at most 64, then the root's bytes
    count            4   n, at most 1,000,000
    n entries        28  ring id (20), uptime_ms (8, 1 .. period length); ring ids strictly increasing
    signer key       33  the RM's P-256 key, SEC1 compressed point
    siglen           1   at most 72, then an ECDSA P-256 / SHA-256 signature, DER

The signature covers ``b"cortex-payout-statement\\x00"`` and every byte before
``siglen``.  An unsigned statement (as ``UptimeTally.statement`` makes it) has an
empty key and signature and does not encode; ``sign_statement`` completes it.
Which ring ids may sign statements (the RMs) is the reader's policy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from fractions import Fraction

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.accounting.attestations import (
    KEY_BYTES,
    MAX_SIGNATURE_BYTES,
    RING_ID_BYTES,
    key_identity,
    public_key_bytes,
)
from cortex_rm.accounting.periods import Period

KIND_PAYOUT_STATEMENT = 0x02
"""First byte of a ledger entry that is a payout statement (version 1)."""

MAX_NODES = 1_000_000
MAX_ROOT_BYTES = 64

_HEAD = struct.Struct(">BQQBQ")  # kind, start, end, min_witnesses, log_size
_ENTRY = struct.Struct(">20sQ")
_DOMAIN = b"cortex-payout-statement\x00"
_ECDSA = ec.ECDSA(hashes.SHA256())


class MalformedStatement(ValueError):
    """The bytes are not a payout statement (version 1)."""


@dataclass(frozen=True)
class PayoutStatement:
    """A period's uptimes, the rule and the log prefix they come from, and the RM's signature."""

    period: Period
    min_witnesses: int
    log_size: int
    log_root: bytes
    uptimes: tuple[tuple[int, int], ...]  # (ring id, uptime ms), ring ids increasing
    signer_key: bytes = b""
    signature: bytes = b""

    def __post_init__(self) -> None:
        if not 1 <= self.min_witnesses <= 255 or not 0 <= self.log_size < 1 << 63:
            raise ValueError("min_witnesses must lie in [1, 255] and log_size in [0, 2**63)")
        if len(self.log_root) > MAX_ROOT_BYTES or len(self.uptimes) > MAX_NODES:
            raise ValueError(f"at most {MAX_ROOT_BYTES} root bytes and {MAX_NODES} nodes")
        previous = -1
        for node, uptime in self.uptimes:
            if not previous < node < 1 << (8 * RING_ID_BYTES):
                raise ValueError("statement ring ids must be 160-bit and strictly increasing")
            if not 0 < uptime <= self.period.length_ms:
                raise ValueError(f"uptime {uptime} of {node:040x} is not within (0, {self.period.length_ms}]")
            previous = node

    @property
    def total_ms(self) -> int:
        """The sum of all uptimes: the denominator of every share."""
        return sum(uptime for _, uptime in self.uptimes)

    def share(self, node: int) -> Fraction:
        """``node``'s share of the period's payout (0 when it is not in the statement)."""
        uptime = dict(self.uptimes).get(node, 0)
        return Fraction(uptime, self.total_ms) if uptime else Fraction(0)

    @property
    def signer(self) -> int:
        """The ring id of the key that signed (ValueError when unsigned)."""
        return key_identity(self.signer_key)[1]

    def body(self) -> bytes:
        """Every byte before the signature's length."""
        if len(self.signer_key) != KEY_BYTES:
            raise ValueError("an unsigned statement has no encoding; sign it first")
        parts = [
            _HEAD.pack(
                KIND_PAYOUT_STATEMENT, self.period.start_ms, self.period.end_ms, self.min_witnesses, self.log_size
            ),
            bytes([len(self.log_root)]),
            self.log_root,
            struct.pack(">I", len(self.uptimes)),
        ]
        parts += [_ENTRY.pack(node.to_bytes(RING_ID_BYTES, "big"), uptime) for node, uptime in self.uptimes]
        parts.append(self.signer_key)
        return b"".join(parts)

    def encode(self) -> bytes:
        """The ledger entry."""
        return self.body() + bytes([len(self.signature)]) + self.signature


def sign_statement(private_key: ec.EllipticCurvePrivateKey, statement: PayoutStatement) -> PayoutStatement:
    """``statement`` signed with the RM's key."""
    unsigned = replace(statement, signer_key=public_key_bytes(private_key.public_key()), signature=b"")
    return replace(unsigned, signature=private_key.sign(_DOMAIN + unsigned.body(), _ECDSA))


def statement_error(statement: PayoutStatement) -> str | None:
    """Why ``statement`` was not signed by its signer key (None: it was)."""
    try:
        public_key = key_identity(statement.signer_key)[0]
    except ValueError:
        return "the signer key is not a P-256 point"
    try:
        public_key.verify(statement.signature, _DOMAIN + statement.body(), _ECDSA)
    except (InvalidSignature, ValueError):
        return "the signature does not verify with the signer key"
    return None


def decode_statement(data: bytes) -> PayoutStatement:
    """The statement ``data`` encodes (``MalformedStatement`` otherwise); the signature is not checked."""
    try:
        kind, start, end, min_witnesses, log_size = _HEAD.unpack_from(data)
        if kind != KIND_PAYOUT_STATEMENT:
            raise MalformedStatement(f"kind byte {kind:#04x} is not a payout statement")
        at = _HEAD.size
        root = data[at + 1 : at + 1 + data[at]]
        at += 1 + data[at]
        (count,) = struct.unpack_from(">I", data, at)
        at += 4
        if count > MAX_NODES or len(data) < at + count * _ENTRY.size + KEY_BYTES + 1:
            raise MalformedStatement(f"{len(data)} bytes cannot hold {count} uptimes")
        rows = _ENTRY.iter_unpack(data[at : at + count * _ENTRY.size])
        uptimes = tuple((int.from_bytes(node, "big"), uptime) for node, uptime in rows)
        at += count * _ENTRY.size
        key = data[at : at + KEY_BYTES]
        at += KEY_BYTES
        signature = data[at + 1 :]
        if len(signature) != data[at] or not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
            raise MalformedStatement("the signature length does not match the bytes left")
        key_identity(bytes(key))
        period = Period(start, end)
        return PayoutStatement(period, min_witnesses, log_size, bytes(root), uptimes, bytes(key), bytes(signature))
    except (struct.error, IndexError, ValueError) as error:
        if isinstance(error, MalformedStatement):
            raise
        raise MalformedStatement(str(error)) from None
