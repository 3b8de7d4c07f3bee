"""What the ring's two puzzles (``cortex_rm/dht/ring_work.py``) cost on this machine, honestly and to a grinder.

Prints, in one run:

* the rates, one core: nonce-puzzle tries (``solve_work``'s SHA-256 loop), keys made
  (``ring_key``'s loop: a P-256 key, its DER SPKI, the key-puzzle hash) and bare
  candidate hashes (SHA-256 over the key puzzle's domain and an SPKI, plus its SHA-1
  ring id: what a grinder pays per candidate key if keys cost it nothing) and, when
  ``pycryptodome`` is importable (not a project dependency: ``pip install --target DIR
  pycryptodome`` and put DIR on PYTHONPATH), keys derived the grinder's cheap way, one
  point addition each (key d+1 is P+G), encoded and hashed;
* the **key puzzle** at ``--key-bits`` (17 by default, and its neighbours): the expected
  time of one key (2**bits / keys a second) and real keys made by ``ring_key`` (mean,
  median, max of ``--key-runs``; geometric like the nonce: one in twenty takes 3x the
  mean or more);
* the **nonce puzzle** at ``--bits`` (22 by default): expected and real proofs for fresh keys;
* **grinding** an id into the interval just before a victim in a ring of ``--ring``
  random ids: the candidate ids it takes (SHA-1 of random bytes, as uniform as a key's:
  median and mean over ``--targets`` victims; the mean is dominated by victims whose
  interval happens to be tiny), then what that many candidates cost at each key-puzzle
  width -- every candidate must solve the puzzle, so 2**bits keys each -- with this
  machine's key generation and at the bare-hash floor, plus one nonce proof;
* a real grind at ``--check-bits`` (small) for a few victims, to show the model holds:
  keys made by a key-first grinder against candidates x 2**bits.

Usage: .venv/bin/python bench/ring_work_bench.py [--key-bits 16 17 18] [--key-runs 6] [--bits 22]
       [--keys 6] [--ring 100] [--targets 400]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from cortex_rm.dht.ring_math import RING_SIZE, in_interval  # noqa: E402
from cortex_rm.dht.ring_work import DEFAULT_KEY_BITS, DEFAULT_WORK_BITS, KEY_DOMAIN, key_ok, solve_work  # noqa: E402
from cortex_rm.internal.identity import ring_id_of, ring_key, spki_der  # noqa: E402


def fresh_spki() -> bytes:
    return spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())


def timed(run: int, work) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds each of ``run`` calls of ``work()`` took."""
    times = []
    for _ in range(run):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def rate(step, seconds: float = 2.0) -> float:  # type: ignore[no-untyped-def]
    """Calls of ``step()`` a second, over ``seconds``."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += 1
    return done / (time.perf_counter() - started)


def nonce_rate() -> float:
    """Nonce-puzzle tries a second (a proof at 18 bits for a fresh key: tries = nonce + 1)."""
    spki, started = fresh_spki(), time.perf_counter()
    nonce = solve_work(spki, 18)
    return (nonce + 1) / (time.perf_counter() - started)


def key_step() -> None:
    """One step of ``ring_key``'s loop: a key, its SPKI, the key-puzzle check (and its ring id)."""
    spki = fresh_spki()
    key_ok(spki, 1)
    ring_id_of(spki)


def hash_step(spki: bytes = fresh_spki()) -> None:
    """What a candidate costs a grinder whose keys cost nothing: the key-puzzle hash and the ring id."""
    hashlib.sha256(KEY_DOMAIN + spki).digest()
    hashlib.sha1(spki).digest()


def point_add_rate() -> float | None:
    """Keys a second derived by point addition (P, P+G, P+2G...: keys d, d+1, d+2), each encoded as a DER
    SPKI and hashed for the puzzle and the ring id; None without pycryptodome."""
    try:
        from Crypto.PublicKey import ECC  # type: ignore[import-not-found]
        from Crypto.PublicKey.ECC import EccPoint  # type: ignore[import-not-found]
    except ImportError:
        return None
    start = ECC.generate(curve="P-256")
    curve = ECC._curves["p256"]
    generator = EccPoint(curve.Gx, curve.Gy, "p256")
    prefix = fresh_spki()[:-65]  # the DER header of a P-256 SPKI; the point (04 || x || y) follows

    def encode(point) -> bytes:  # type: ignore[no-untyped-def]
        return prefix + b"\x04" + int(point.x).to_bytes(32, "big") + int(point.y).to_bytes(32, "big")

    # the shortcut makes the very keys cryptography would: key d+1's SPKI is P+G's
    assert encode(start.pointQ + generator) == spki_der(ec.derive_private_key(int(start.d) + 1, ec.SECP256R1()).public_key())
    point = start.pointQ

    def step() -> None:
        nonlocal point
        point = point + generator
        hash_step(encode(point))

    return rate(step)


def victim(ring: int, rng: random.Random) -> tuple[int, int]:
    """The interval (predecessor, victim] of a random victim in a ring of ``ring`` random ids."""
    ids = sorted(rng.randrange(RING_SIZE) for _ in range(ring))
    i = rng.randrange(ring)
    return ids[i - 1], ids[i]


def candidates_to_land(ring: int, rng: random.Random) -> int:
    """Candidate ids (uniform, as SHA-1 of keys) until one lands just before a random victim."""
    predecessor, target = victim(ring, rng)
    tries = 0
    while True:
        tries += 1
        candidate = int.from_bytes(hashlib.sha1(rng.randbytes(32)).digest(), "big")
        if in_interval(candidate, predecessor, target, include_right=True):
            return tries


def real_grind(ring: int, bits: int, rng: random.Random) -> tuple[int, int]:
    """A key-first grinder under the key puzzle at ``bits``: (keys made, candidates that solved the puzzle)."""
    predecessor, target = victim(ring, rng)
    keys = candidates = 0
    while True:
        keys += 1
        spki = fresh_spki()
        if not key_ok(spki, bits):
            continue
        candidates += 1
        if in_interval(ring_id_of(spki), predecessor, target, include_right=True):
            return keys, candidates


def minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--key-bits", type=int, nargs="+", default=[DEFAULT_KEY_BITS - 1, DEFAULT_KEY_BITS, DEFAULT_KEY_BITS + 1])
    parser.add_argument("--key-runs", type=int, default=6, help="real keys made per key-puzzle width")
    parser.add_argument("--bits", type=int, nargs="+", default=[DEFAULT_WORK_BITS], help="nonce-puzzle widths")
    parser.add_argument("--keys", type=int, default=6, help="fresh keys proven per nonce width")
    parser.add_argument("--ring", type=int, default=100, help="members in the ring a grinder targets")
    parser.add_argument("--targets", type=int, default=400, help="victims whose intervals are ground into (cheap)")
    parser.add_argument("--check-bits", type=int, default=6, help="key-puzzle width of the real grinds")
    parser.add_argument("--checks", type=int, default=5, help="real grinds at --check-bits")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    tries_per_s, keys_per_s, hashes_per_s, added_per_s = nonce_rate(), rate(key_step), rate(hash_step), point_add_rate()
    print(f"rates, one core: nonce tries {tries_per_s / 1e6:.2f} M/s; keys made {keys_per_s:,.0f}/s; "
          f"bare candidate hashes {hashes_per_s:,.0f}/s; keys by point addition "
          + ("skipped (no pycryptodome)" if added_per_s is None else f"{added_per_s:,.0f}/s"))

    print(f"\nkey puzzle ({args.key_runs} real keys per width; ring_key)")
    print(f"{'bits':>4} {'keys':>9} {'expected':>9} {'mean':>8} {'median':>8} {'max':>8}")
    for bits in args.key_bits:
        times = timed(args.key_runs, lambda: ring_key(bits))
        print(f"{bits:>4} {2**bits:>9,} {2**bits / keys_per_s:>8.2f}s {statistics.mean(times):>7.2f}s "
              f"{statistics.median(times):>7.2f}s {max(times):>7.2f}s")

    print(f"\nnonce puzzle ({args.keys} fresh keys per width; solve_work)")
    print(f"{'bits':>4} {'expected':>9} {'mean':>8} {'median':>8} {'max':>8}")
    nonce_s = {}
    for bits in args.bits:
        times = timed(args.keys, lambda: solve_work(fresh_spki(), bits))
        nonce_s[bits] = 2**bits / tries_per_s
        print(f"{bits:>4} {nonce_s[bits]:>8.2f}s {statistics.mean(times):>7.2f}s {statistics.median(times):>7.2f}s "
              f"{max(times):>7.2f}s")

    rng = random.Random(args.seed)
    landed = [candidates_to_land(args.ring, rng) for _ in range(args.targets)]
    median, mean = statistics.median(landed), statistics.mean(landed)
    print(f"\ngrinding next to a victim in a ring of {args.ring}: candidate ids until one lands, over "
          f"{args.targets} victims: median {median:.0f}, mean {mean:.0f}")
    print(f"{'bits':>4} {'keys (median victim)':>21} {'at keys/s':>10} {'floor (hashes)':>15}  (+ one nonce proof)")
    for bits in sorted({0, *args.key_bits}):
        keys = median * 2**bits
        print(f"{bits:>4} {keys:>21,.0f} {minutes(keys / keys_per_s):>10} {minutes(keys / hashes_per_s):>15}")

    checks = [real_grind(args.ring, args.check_bits, rng) for _ in range(args.checks)]
    print(f"\nreal key-first grinds at {args.check_bits} bits (keys made, candidates that solved the puzzle): "
          + ", ".join(f"({k:,}, {c})" for k, c in checks)
          + f"; keys / candidates = {sum(k for k, _ in checks) / sum(c for _, c in checks):.0f} "
          f"(2**{args.check_bits} = {2**args.check_bits})")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
