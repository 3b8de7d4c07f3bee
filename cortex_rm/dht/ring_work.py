"""The proof of work that a ring id costs (S/Kademlia's static crypto puzzle, on our key).

A ring id is the SHA-1 of a member's public key, so nobody *picks* an id; but anyone
may make keys until one lands where they want (next to a victim, to own its keys).
The puzzle makes each try expensive: a member must also show a ``nonce`` such that
``SHA-256(WORK_DOMAIN || spki || nonce)`` has at least ``bits`` leading zero bits
(``nonce`` as 8 bytes, big-endian).  Solving takes 2**bits hashes on average;
checking takes one.  Grinding an id into a chosen interval of the ring of width
1/m costs m puzzles instead of m key generations.

The nonce is solved once per key and stored beside it (``internal/identity.py``);
every envelope carries the sender's nonce and every ALIVE rumour the subject's, and
members refuse anything from an id whose work does not check (``ring_trust.py``).

Figures (one core of the development machine, shared with other jobs): about 1.8
million tries a second, so the default of 18 bits takes ~0.15 s on average (16 bits:
0.036 s mean, 0.067 s worst of 20 keys); 20 bits ~0.6 s, 24 bits ~9 s.  Each extra bit doubles the cost of an id for honest members and grinders
alike.
"""

from __future__ import annotations

import hashlib
import struct

WORK_DOMAIN = b"cortex-ring-work\x00"
DEFAULT_WORK_BITS = 18
MAX_WORK_BITS = 40
NONCE_LIMIT = 2**64


def leading_zero_bits(digest: bytes) -> int:
    """How many leading bits of ``digest`` are zero."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def work_digest(spki: bytes, nonce: int) -> bytes:
    """SHA-256 over the domain, the key and the nonce (8 bytes, big-endian)."""
    return hashlib.sha256(WORK_DOMAIN + spki + struct.pack(">Q", nonce)).digest()


def work_ok(spki: bytes, nonce: int, bits: int) -> bool:
    """Whether ``nonce`` solves the puzzle of ``spki`` at ``bits`` (a nonce outside 64 bits never does)."""
    if not 0 <= nonce < NONCE_LIMIT:
        return False
    return bits <= 0 or leading_zero_bits(work_digest(spki, nonce)) >= bits


def solve_work(spki: bytes, bits: int, start: int = 0) -> int:
    """The first nonce from ``start`` that solves the puzzle of ``spki`` at ``bits``."""
    if not 0 <= bits <= MAX_WORK_BITS:
        raise ValueError(f"work bits must lie in [0, {MAX_WORK_BITS}], not {bits}")
    prefix = hashlib.sha256(WORK_DOMAIN + spki)
    limit = 1 << (256 - bits)
    pack = struct.Struct(">Q").pack
    nonce = start
    while True:
        h = prefix.copy()
        h.update(pack(nonce))
        if int.from_bytes(h.digest(), "big") < limit:
            return nonce
        nonce += 1
