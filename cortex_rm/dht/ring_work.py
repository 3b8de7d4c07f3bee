"""The proof of work that a ring id costs: a nonce solved for the member's key.

A ring id is the SHA-1 of a member's public key, so nobody *picks* an id; but anyone
may make keys until one lands where they want (next to a victim, to own its keys),
or make many ids.  Each id must come with work: a ``nonce`` such that
``SHA-256(WORK_DOMAIN || spki || nonce)`` has at least ``bits`` leading zero bits
(``nonce`` as 8 bytes, big-endian).  Solving takes 2**bits hashes on average;
checking takes one.  (S/Kademlia puts its static puzzle on the key itself; ours is
beside the key, which makes an id cost work but not its place: see below.)

The nonce is solved once per key and stored beside it (``internal/identity.py``);
every envelope carries the sender's nonce and every ALIVE rumour the subject's, and
members refuse anything from an id whose work does not check (``ring_trust.py``).

**Cost** (``bench/ring_work_bench.py``, one core of the development machine: 1.9 to
2.7 million tries a second, the lower figure with other jobs running; see
bench/RESULTS.md).  One proof takes 2**bits tries on average: 18 bits 0.1-0.15 s,
20 bits 0.4-0.6 s, 22 bits 1.6-2.3 s, 24 bits 6-9 s.  A proof's time is geometric:
one key in twenty takes three times the mean or more (24 bits: the slowest of 8 keys
took 39 s).

**The default, 22 bits**, costs an honest node ~2 s once per key (solved in a thread
at the key's first start, then read from disk) and a rare key ~7 s; 24 bits would
cost most nodes 10 s and some 30 s or more.  Every member of a ring must use the same
value: a node with less work is refused, so raising it means every key solves again
(at its next start).

**What the work buys, and what it does not.**  It prices *ids*: flooding a ring with
n ids (a Sybil attack, or the replicas of one key) costs n proofs, 16 times more at 22
than at 18 bits.  It does not price *where* an id lands: the nonce is solved after the
key is chosen, so a grinder makes keys (about 50,000 a second with ``cryptography``)
until one's SHA-1 lands just before a victim, then solves one proof.  In a ring of
100 that is ~100 keys and a few milliseconds, plus one proof; trying every key's proof
instead (100 proofs) would cost 15 s at 18 bits, 4 minutes at 22.  Pricing the
placement needs the work bound to the id -- the key itself must solve the puzzle, or
the id must hash the nonce too (S/Kademlia's puzzle is on the key) -- which changes
every existing key and ring id; until then a targeted id costs one proof, and what
protects a victim's keys is that records are signed and their writers checked
(``write_policy.py``), not that its neighbours are hard to become.
"""

from __future__ import annotations

import hashlib
import struct

WORK_DOMAIN = b"cortex-ring-work\x00"
DEFAULT_WORK_BITS = 22
MAX_WORK_BITS = 40
NONCE_LIMIT = 2**64

KEY_DOMAIN = b"cortex-ring-key\x00"
DEFAULT_KEY_BITS = 17
MAX_KEY_BITS = 32


def leading_zero_bits(digest: bytes) -> int:
    """How many leading bits of ``digest`` are zero."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def key_digest(spki: bytes) -> bytes:
    """SHA-256 over the key puzzle's domain and the key (DER SPKI)."""
    return hashlib.sha256(KEY_DOMAIN + spki).digest()


def key_ok(spki: bytes, bits: int) -> bool:
    """Whether the key ``spki`` itself solves the ring's key puzzle at ``bits`` (0: every key does)."""
    return bits <= 0 or leading_zero_bits(key_digest(spki)) >= bits


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
