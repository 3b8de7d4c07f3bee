"""What the ring's proof of work (``cortex_rm/dht/ring_work.py``) costs on this machine.

Prints, in one run:

* the puzzle's hash rate (SHA-256 tries a second, one core, ``solve_work``'s loop);
* for 18, 20, 22 and 24 bits: the expected time of one proof (2**bits / rate) and
  the times of real proofs for fresh keys (mean, median, max of ``--keys`` keys; a
  proof's time is geometric, so one key may take several times the mean: the
  expected 95th percentile is 3 x the mean);
* what grinding an id into the interval just before a victim costs in a ring of
  ``--ring`` members (the interval is 1/ring of the ring on average), two ways:
  *naive* (a proof for every key made: ``ring`` proofs) and *key first* (make keys
  until one's id lands in the interval, then one proof): the puzzle is solved after
  the key is chosen, so the second costs key generations plus one proof.

Usage: .venv/bin/python bench/ring_work_bench.py [--keys 8] [--ring 100] [--bits 18 20 22 24]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from cortex_rm.dht.ring_math import RING_SIZE, in_interval  # noqa: E402
from cortex_rm.dht.ring_work import solve_work  # noqa: E402
from cortex_rm.internal.identity import ring_id_of, spki_der  # noqa: E402


def fresh_spki() -> bytes:
    return spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())


def proofs(bits: int, keys: int) -> list[tuple[float, int]]:
    """(seconds, tries) of solving the puzzle at ``bits`` for ``keys`` fresh keys (tries: the nonce found + 1)."""
    found = []
    for _ in range(keys):
        spki = fresh_spki()
        started = time.perf_counter()
        nonce = solve_work(spki, bits)
        found.append((time.perf_counter() - started, nonce + 1))
    return found


def key_rate(seconds: float = 2.0) -> float:
    """Keys made (P-256, DER SPKI, SHA-1 ring id) a second."""
    made, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        ring_id_of(fresh_spki())
        made += 1
    return made / (time.perf_counter() - started)


def grind_key_first(ring: int, rng: random.Random) -> tuple[float, int]:
    """Make keys until one's id lands just before a victim in a ring of ``ring`` random ids: (seconds, keys)."""
    ids = sorted(rng.randrange(RING_SIZE) for _ in range(ring))
    i = rng.randrange(ring)
    predecessor, victim = ids[i - 1], ids[i]
    started, made = time.perf_counter(), 0
    while True:
        made += 1
        if in_interval(ring_id_of(fresh_spki()), predecessor, victim, include_right=True):
            return time.perf_counter() - started, made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=8, help="fresh keys proven per bit count")
    parser.add_argument("--ring", type=int, default=100, help="members in the ring a grinder targets")
    parser.add_argument("--bits", type=int, nargs="+", default=[18, 20, 22, 24])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    keys_per_s = key_rate()
    runs = {bits: proofs(bits, args.keys) for bits in args.bits}
    every = [run for found in runs.values() for run in found]
    rate = sum(tries for _, tries in every) / sum(seconds for seconds, _ in every)
    print(f"puzzle tries: {rate / 1e6:.2f} M/s (one core, over every proof below); keys made: {keys_per_s:,.0f}/s")
    print(f"{'bits':>4} {'expected':>9} {'mean':>8} {'median':>8} {'max':>8}  (of {args.keys} fresh keys)"
          f"  naive grind ({args.ring} proofs)")
    expected = {}
    for bits, found in runs.items():
        expected[bits] = 2**bits / rate
        times = [seconds for seconds, _ in found]
        print(f"{bits:>4} {expected[bits]:>8.2f}s {statistics.mean(times):>7.2f}s {statistics.median(times):>7.2f}s "
              f"{max(times):>7.2f}s  {args.ring * expected[bits]:>9.0f} s")
    rng = random.Random(args.seed)
    grinds = [grind_key_first(args.ring, rng) for _ in range(5)]
    mean_s = statistics.mean(s for s, _ in grinds)
    mean_keys = statistics.mean(k for _, k in grinds)
    print(f"key-first grind into 1 of {args.ring} intervals (5 tries): {mean_keys:.0f} keys, {mean_s:.3f} s, then "
          "one proof: " + ", ".join(f"{bits} bits {mean_s + expected[bits]:.2f} s" for bits in args.bits))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
