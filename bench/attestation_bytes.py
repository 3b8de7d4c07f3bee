"""Attestation bytes per node per second in the ring: whole ring members witnessing each other, signed hourly.

Runs N signed ``RingMember`` cores (real keys, ring ids their hashes; cheap key puzzle
and work) on the simulated network (``tests/support/ring_sim.py``, fake clock) with the
LAN profile (a probe a second, ``SwimConfig.lan``) for a few simulated hours.  Every
member's reporter takes ``attestations_due`` every ``attestation_interval`` (3,600 s)
at its own random phase, as the daemon's does through ``RingService.take_attestations``,
signs what it got with ``sign_attestations`` (batches of at most 1,024) and encodes it:
those bytes are what a node sends to the ledger.  The first interval is warm-up (the
ring forms, runs start); the figures count the batches taken after it.

``--restarts-per-hour K``: K random members a simulated hour crash and restart 60 s
later (ended runs add pieces; a crashed witness's unattested hour is lost).

Usage: .venv/bin/python bench/attestation_bytes.py [--nodes 64 256] [--hours 3] [--restarts-per-hour 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.accounting.attestations import sign_attestations  # noqa: E402
from cortex_rm.accounting.uptime_witness import batches  # noqa: E402
from cortex_rm.dht.ring_config import RingConfig  # noqa: E402
from cortex_rm.dht.ring_member import RingMember  # noqa: E402
from tests.support.ring_sim import RingNetwork  # noqa: E402


@dataclass
class Reporter:
    """One node's reporter: when it next takes its attestations, and what it sent after the warm-up."""

    phase: float
    next_at: float
    batches: int = 0
    attestations: int = 0
    bytes: int = 0
    sizes: list[int] = field(default_factory=list)


def run(nodes: int, hours: float, restarts_per_hour: int, seed: int) -> dict[str, float]:
    interval = 3600.0
    config = RingConfig(work_bits=16, key_bits=8, attestation_interval=interval)
    net = RingNetwork(seed, config, signed=True)
    first = net.add_member()
    for _ in range(nodes - 1):
        net.join(net.add_member(), [first])
    net.run_until(net.ring_is_correct, timeout=30 * nodes)
    start = net.now
    rng = random.Random(seed)
    reporters: dict[str, Reporter] = {}
    for member in net.live():
        phase = rng.random() * interval
        reporters[member.me.address] = Reporter(phase, start + phase)
    warmup_end, end = start + interval, start + hours * interval
    restarts: list[tuple[float, RingMember]] = []  # (when to restart, the crashed member)
    step = 10.0
    while net.now < end:
        net.run_for(step)
        now = net.now
        for when, member in [r for r in restarts if r[0] <= now]:
            restarts.remove((when, member))
            net.restart(member, introducers=net.live()[:1])
        if restarts_per_hour and rng.random() < restarts_per_hour * step / interval:
            victim = rng.choice([m for m in net.live() if m is not first])
            net.crash([victim])
            restarts.append((now + 60.0, victim))
        for member in net.live():
            reporter = reporters[member.me.address]
            if now < reporter.next_at:
                continue
            reporter.next_at += interval
            due = member.attestations_due(now)
            if now < warmup_end or not due:
                continue
            for batch in batches(due):
                encoded = sign_attestations(net.keys[member.me.node_id], batch).encode()
                reporter.batches += 1
                reporter.attestations += len(batch)
                reporter.bytes += len(encoded)
                reporter.sizes.append(len(encoded))
    measured = end - warmup_end
    total_bytes = sum(r.bytes for r in reporters.values())
    total_attestations = sum(r.attestations for r in reporters.values())
    sizes = [s for r in reporters.values() for s in r.sizes]
    return {
        "bytes_per_node_s": total_bytes / nodes / measured,
        "attestations_per_node_h": total_attestations / nodes / (measured / 3600),
        "batches_per_node_h": sum(r.batches for r in reporters.values()) / nodes / (measured / 3600),
        "median_batch_bytes": statistics.median(sizes) if sizes else 0.0,
        "bytes_per_attestation": total_bytes / total_attestations if total_attestations else 0.0,
        "subjects_per_node": statistics.mean(m.uptime.witness.tracked if m.uptime.witness else 0 for m in net.live()),
        "simulated_h": (end - start) / 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours after the ring formed (the first is warm-up)")
    parser.add_argument("--restarts-per-hour", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("| members | simulated h | restarts/h | bytes/node/s | attestations/node/h | batches/node/h | median batch "
          "| bytes/attestation | subjects/witness | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for nodes in args.nodes:
        started = time.process_time()
        r = run(nodes, args.hours, args.restarts_per_hour, args.seed)
        cpu = time.process_time() - started
        print(
            f"| {nodes} | {r['simulated_h']:.1f} | {args.restarts_per_hour} | {r['bytes_per_node_s']:.4f} "
            f"| {r['attestations_per_node_h']:.2f} | {r['batches_per_node_h']:.2f} | {r['median_batch_bytes']:.0f} B "
            f"| {r['bytes_per_attestation']:.1f} | {r['subjects_per_node']:.1f} | {cpu:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
