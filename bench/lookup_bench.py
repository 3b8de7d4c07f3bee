"""Chord lookup cost and resilience, measured on the in-memory network of real ``ChordNode`` cores.

Prints, in one run:

* mean and p99 lookup hops (FindSuccessor requests a lookup sends) for N = 100,
  1,000 and 10,000 nodes, against the target mean <= 1.1 x 1/2 log2 N.  The rings
  of 100 and 1,000 nodes are built by joins and stabilization rounds; the 10,000-node
  ring gets its successor lists, predecessors and fingers from the oracle (the
  state stabilization converges to), because running 10,000 joins takes too long
  in one process.  Lookups start at random live nodes for random keys, and each
  answer is checked against the oracle.
* lookup success after 50% of a 1,000-node ring crashes at once and the survivors
  run stabilization rounds until the ring is correct (target 100%); the
  ring is the joined 1,000-node ring measured above.

Usage: .venv/bin/python bench/lookup_bench.py [--lookups 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.dht.chord import ChordNode  # noqa: E402
from cortex_rm.dht.join_lifecycle import RingState  # noqa: E402
from cortex_rm.dht.ring_math import RING_SIZE, M, finger_start  # noqa: E402
from tests.support.chord_sim import ChordNetwork  # noqa: E402


def joined_ring(n: int, seed: int) -> ChordNetwork:
    """n nodes joined concurrently through one, stabilized until correct, fingers refreshed."""
    net = ChordNetwork(seed)
    first = net.add_node()
    for _ in range(n - 1):
        net.join(net.add_node(), first)
    net.deliver()
    net.stabilize_until_correct(max_rounds=20 * n)
    net.refresh_fingers()
    return net


def oracle_ring(n: int, seed: int) -> ChordNetwork:
    """n nodes whose routing state is set to what a converged ring holds."""
    net = ChordNetwork(seed)
    nodes = [net.add_node() for _ in range(n)]
    ring = sorted(nodes, key=lambda node: node.node_id)
    ids = [node.node_id for node in ring]
    import bisect

    def owner(key: int) -> ChordNode:
        i = bisect.bisect_left(ids, key)
        return ring[i % n]

    for i, node in enumerate(ring):
        r = node.successor_list_length
        successors = [ring[(i + k) % n].me for k in range(1, r + 1)]
        fingers = [owner(finger_start(node.node_id, j)).me for j in range(M)]
        node.routing.install(successors, ring[i - 1].me, fingers)
        node.state = RingState.MEMBER
    return net


def measure_hops(net: ChordNetwork, lookups: int) -> tuple[float, int, int]:
    """Mean and p99 hops of ``lookups`` random lookups, and how many returned a wrong owner."""
    live = net.live_nodes()
    hops, wrong = [], 0
    for _ in range(lookups):
        node = net.random.choice(live)
        key = net.random.randrange(RING_SIZE)
        done = net.lookup(node, key)
        hops.append(done.hops)
        wrong += done.owner != net.true_owner(key)
    hops.sort()
    return sum(hops) / len(hops), hops[min(len(hops) - 1, math.ceil(0.99 * len(hops)) - 1)], wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    print("lookup hops (r = 8, iterative lookups; hops = FindSuccessor requests sent)")
    print(f"{'N':>7} {'built by':>14} {'mean':>6} {'p99':>4} {'target mean':>12} {'wrong':>6} {'seconds':>8}")
    rings: dict[int, ChordNetwork] = {}
    for n in (100, 1000, 10000):
        started = time.process_time()
        net = rings[n] = joined_ring(n, args.seed) if n <= 1000 else oracle_ring(n, args.seed)
        mean, p99, wrong = measure_hops(net, args.lookups)
        target = 1.1 * 0.5 * math.log2(n)
        built = "joins" if n <= 1000 else "oracle"
        verdict = "ok" if mean <= target and wrong == 0 else "MISSED"
        print(f"{n:>7} {built:>14} {mean:>6.2f} {p99:>4} {target:>9.2f} {verdict:>2} {wrong:>6} {time.process_time() - started:>8.1f}")

    started = time.process_time()
    net = rings[1000]
    victims = net.random.sample(net.live_nodes(), 500)
    net.crash(victims)
    rounds = net.stabilize_until_correct(max_rounds=200)
    net.refresh_fingers()
    ok = 0
    live = net.live_nodes()
    for _ in range(args.lookups):
        node = net.random.choice(live)
        key = net.random.randrange(RING_SIZE)
        ok += net.lookup(node, key).owner == net.true_owner(key)
    print(
        f"after 500 of 1000 nodes crashed at once: ring correct after {rounds} stabilization rounds; "
        f"lookups right {ok}/{args.lookups} = {100 * ok / args.lookups:.1f}% (target 100%) "
        f"[{time.process_time() - started:.1f} CPU s]"
    )


if __name__ == "__main__":
    main()
