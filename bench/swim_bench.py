"""SWIM failure detection benchmark: detection time, false positives, and traffic.

No sockets and no reactor: ``tests/support/swim_sim.py`` runs N ``Membership`` cores
on a simulated clock (messages take 1-10 ms; neighbours are 8 successors, the
predecessor and log2 N fingers by sorted ids), with the LAN defaults of
``SwimConfig`` (1 s probes, 0.5 s timeout, k = 3, suspicion mult 3 with K = 2,
max mult 6, retransmit mult 4).  One run prints all three parts:

(a) **Time to declare a crashed node dead**, 10 nodes: one node crashes at a random
    moment after warm-up; measured from the crash to the first member declaring it
    DEAD and to the last running member doing so.  Mean, p99 and max over the
    trials.  Target: every member <= 8 s.
(b) **False positives per node-hour** under 10% message loss, with one node that
    stalls 2 s (processes nothing, timers frozen) at random moments about every
    60 s: the simulation runs as many node-hours as fit in the CPU budget (the
    default, 200 s, gives about 1,300).  A false positive is a member declaring a
    *running* node DEAD (each observer counts).  Target: < 1 per 1,000 node-hours.
(c) **Traffic per node per second**, steady state, with no loss and with 10% loss:
    messages sent, piggybacked items, and bytes as ``ring_codec.encode_envelope``
    frames them (the Thrift binary envelope, without TLS).

    .venv/bin/python bench/swim_bench.py [--trials 20] [--cpu-seconds 200] [--nodes 50]

About 3.5 minutes of CPU with the defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cortex_rm.dht.member_table import MemberDied, MemberSuspected  # noqa: E402
from cortex_rm.internal.ring_codec import encode_envelope  # noqa: E402
from tests.support.swim_sim import SwimNetwork  # noqa: E402


def detection_time(trials: int) -> None:
    """(a) Crash one of 10 nodes; seconds until the first and the last member declare it DEAD."""
    first, last = [], []
    for seed in range(trials):
        net = SwimNetwork(seed=1000 + seed, n=10)
        net.run_until(30 + net.random.random() * 5)
        victim = net.random.randrange(10)
        net.crash(victim)
        crashed_at = net.now
        net.run_for(60)
        deaths = [o.time - crashed_at for o in net.events(MemberDied) if o.event.peer == net.ring[victim]]
        assert len(deaths) == 9, f"trial {seed}: only {len(deaths)} of 9 declared the crash"
        first.append(min(deaths))
        last.append(max(deaths))
    print(f"(a) crash -> DEAD, 10 nodes, 1 s probes, {trials} trials:")
    print(f"    first member:  {_spread(first)}")
    print(f"    every member:  {_spread(last)}   (target <= 8 s)")


def _spread(seconds: list[float]) -> str:
    """Mean, 99th percentile (nearest rank) and max of ``seconds``."""
    ordered = sorted(seconds)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    return f"mean {statistics.mean(ordered):.2f} s, p99 {p99:.2f} s, max {ordered[-1]:.2f} s"


def false_positives(n: int, cpu_budget: float) -> None:
    """(b) 10% loss and one node stalling 2 s about every 60 s: false deaths per node-hour."""
    net = SwimNetwork(seed=7, n=n, drop_rate=0.10)
    stalled = 0
    started = time.process_time()
    next_stall = 30 + net.random.uniform(30, 90)
    stalls = 0
    while time.process_time() - started < cpu_budget:
        net.run_until(next_stall)
        net.stall(stalled, 2.0)
        stalls += 1
        next_stall = net.now + net.random.uniform(30, 90)  # mean 60 s
    cpu = time.process_time() - started
    node_hours = n * net.now / 3600
    false = net.deaths_of_running
    suspicions = len(net.events(MemberSuspected))
    print(f"(b) {n} nodes, 10% loss, node 0 stalls 2 s every ~60 s ({stalls} stalls):")
    print(f"    simulated {net.now / 3600:.1f} h = {node_hours:,.0f} node-hours in {cpu:.0f} s CPU")
    print(f"    suspicions observed: {suspicions:,} ({suspicions / node_hours:.1f} per node-hour, each counted per observer)")
    rate = len(false) / node_hours * 1000
    bound = _poisson_upper_95(len(false)) / node_hours * 1000
    print(f"    false DEAD declarations: {len(false)} = {rate:.2f} per 1,000 node-hours   (target < 1)")
    print(f"    95% upper bound on the rate: {bound:.2f} per 1,000 node-hours")
    for o in false[:5]:
        print(f"      t={o.time:.1f} {o.observer.address} declared {o.event.peer.address} dead")


def _poisson_upper_95(k: int) -> float:
    """The one-sided 95% upper confidence bound on a Poisson mean after observing ``k`` events."""
    low, high = 0.0, 10.0 + 10 * k
    for _ in range(100):
        mid = (low + high) / 2
        term, cdf = math.exp(-mid), 0.0
        for i in range(k + 1):
            cdf += term
            term *= mid / (i + 1)
        low, high = (mid, high) if cdf > 0.05 else (low, mid)
    return high


def traffic(n: int) -> None:
    """(c) Messages, piggyback items and encoded bytes per node per second."""
    print(f"(c) traffic per node per second, {n} nodes, steady state (60 s after 60 s of warm-up):")
    for loss in (0.0, 0.10):
        net = SwimNetwork(seed=3, n=n, drop_rate=loss)
        net.run_until(60)
        sent, items = net.messages_sent, net.items_sent
        net.envelope_log = []
        net.run_for(60)
        per = n * 60
        frames = [encode_envelope(e) for e in net.envelope_log]
        messages = (net.messages_sent - sent) / per
        piggyback = (net.items_sent - items) / per
        print(
            f"    loss {loss:.0%}: {messages:.2f} messages, {piggyback:.2f} piggyback items, "
            f"{sum(len(f) for f in frames) / per:,.0f} bytes (mean frame {statistics.mean(len(f) for f in frames):.0f} B, "
            f"max {max(len(f) for f in frames)} B)"
        )


def main() -> None:
    """Run the three parts once each and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--cpu-seconds", type=float, default=200.0)
    parser.add_argument("--nodes", type=int, default=50)
    args = parser.parse_args()
    detection_time(args.trials)
    false_positives(args.nodes, args.cpu_seconds)
    traffic(args.nodes)


if __name__ == "__main__":
    main()
