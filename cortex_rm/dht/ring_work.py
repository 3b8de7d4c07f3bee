"""The work a ring id costs: a puzzle on the member's key itself, and a nonce solved for that key.

A ring id is the SHA-1 of a member's public key, so nobody *picks* an id; but anyone
may make keys until one lands where they want (next to a victim, to own its keys),
or make many ids (a Sybil attack).  Two puzzles price these, both checked with one
SHA-256 and both with a width every member of a ring must agree on:

* **The key puzzle** (S/Kademlia's static puzzle; ``[ring] key_bits``, 17 by
  default): a key may be a member's only if ``SHA-256(KEY_DOMAIN || spki)`` has at
  least ``key_bits`` leading zero bits.  A node makes keys until one does, at its
  first start (``internal/identity.py``: ``ring_key``, in a thread): ~2**key_bits
  keys.  Since the puzzle is on the key, every *candidate* id costs that many keys,
  so it prices where an id lands, not just the id.
* **The nonce** (``[ring] work_bits``, 22 by default): a ``nonce`` such that
  ``SHA-256(WORK_DOMAIN || spki || nonce)`` has at least ``work_bits`` leading zero
  bits (``nonce`` as 8 bytes, big-endian), solved once per key and stored beside it.

Every envelope carries the sender's nonce and every ALIVE rumour the subject's, and
members refuse anything from an id whose key fails the key puzzle or whose nonce
does not solve its puzzle (``ring_trust.py``: counted, and the first of each reason
logged).  A stored key that fails the key puzzle is replaced at start: the node
gets a new ring id (``internal/identity.py`` says who must be told).

**Cost** (``bench/ring_work_bench.py``, one core of the development machine, three
runs, one with other jobs running; see bench/RESULTS.md).  Keys: ~70,000 a second
with ``cryptography``; one key that solves the key puzzle takes 2**bits of them on
average: 16 bits ~0.9 s, 17 bits ~1.9 s, 18 bits ~3.7 s (real keys, 6 per width and
run: 17 bits 1.2-2.4 s mean, the slowest 7.8 s; 18 bits the slowest 25.5 s).
Nonces: 2.4-2.7 million tries a second; 22 bits ~1.6 s (the slowest of 18 keys
3.2 s).  Both are geometric: one key in twenty takes three times the mean or more.

**What the key puzzle buys: grinding.**  To land just before a victim in a ring of
n members a grinder needs about n candidate ids (the victim's interval is 1/n of the
ring on average: for 400 random victims in a ring of 100, median 103 candidates,
mean 1,400, the mean dominated by victims whose interval happens to be tiny), and
each candidate must solve the key puzzle: n * 2**key_bits keys.  At 17 bits, in a
ring of 100, ~13.5 million keys: **3.2 minutes** of this machine's key generation
for a median victim, then one nonce; without the key puzzle it was ~100 keys, a few
milliseconds.  Deriving keys by point addition (key d+1 is P+G) instead of making
them was no faster with an off-the-shelf library (20,000-49,000 keys a second with
pycryptodome); a grinder with its own batched field arithmetic could approach the
cost of the hashes alone, which is the floor: 0.9-1.4 million candidate hashes a
second in Python here, 10-15 s for that median victim at 17 bits (less in C).  Grinding also
parallelises perfectly.  So the key puzzle is a price -- linear in the ring's size,
doubling per bit -- not a wall: what protects a victim's keys remains that records
are signed and their writers checked (``write_policy.py``).

**The default, 17 bits**, costs an honest node ~2 s once (a rare key ~8 s), and
every candidate id a grinder tries the same; 18 bits would double both (4 s, some
keys 25 s), 16 halve them (grinding next to a median victim of 100: 1.6 minutes).
17 keeps a node's first start within seconds on the slow cores volunteers bring and
puts minutes of one core (more on slower ones) between a grinder and each victim.

**The nonce stays at 22 bits.**  It prices *ids* (flooding a ring with n ids costs
n proofs) in SHA-256 work, which has no known shortcut, so it keeps a floor under
each id's price that does not rest on how fast keys can be made (the key puzzle's
price does: see above).  It adds nothing to grinding (a grinder solves one nonce,
for the key that landed), and ~1.6 s to an honest node's first start; lowering it
would save that second and drop the floor.  Raising either width means every key
that no longer passes is replaced (key puzzle: a new ring id) or solved again
(nonce) at its next start.
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
