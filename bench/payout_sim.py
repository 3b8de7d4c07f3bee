"""Witnessed uptime and payouts of a churning ring, computed by the real accounting code on a fake clock.

1,000 nodes (100 of them always on) over a 30-day period (September 2026, UTC) with a day
of warm-up before it.  Each churning node's sessions are Weibull with a shape drawn
uniformly in 0.34-0.59 -- the range Stutzbach and Rejaie fitted to Gnutella, Kad and
BitTorrent sessions (IMC 2006) -- and a median of one hour; downtimes are Weibull with
shape 0.5 and a median of two hours (heavy-tailed too, as they found).  The medians are
our assumption for volunteers running a daemon, not the paper's fits (which describe
file-sharing users and resolve sessions only to their crawls' few minutes).  The ring is
Chord's: each member is probed by its 8 predecessors (whose successor lists hold it) and
its successor, as membership changes.  Every member runs an ``UptimeWitness`` per session
and signs hourly batches; the ledger is the list of their encoded bytes, read by one
``UptimeTally``.  Six cheaters try what issue 11 lists (``tests/support/uptime_sim.py``).

Prints: the error of every honest node's paid uptime against the time it was really up
(worst, percentiles, all together, and per session), the error of the shares, each
cheat's gain and the time each cheater was paid while down, the ledger's verdicts,
attestation bytes per node per second, the classes at the end, and the run time.

Usage: .venv/bin/python bench/payout_sim.py [--nodes 1000] [--days 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.accounting.node_classes import NodeClass  # noqa: E402
from cortex_rm.accounting.payouts import shares  # noqa: E402
from cortex_rm.accounting.periods import Period  # noqa: E402
from tests.support.uptime_sim import DAY, SimConfig, simulate  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--always-on", type=int, default=None, help="default: a tenth of the nodes")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    start = SimConfig().period.start_ms
    cfg = SimConfig(
        nodes=args.nodes,
        always_on=args.always_on if args.always_on is not None else args.nodes // 10,
        period=Period(start, start + args.days * DAY),
        seed=args.seed,
    )
    load = os.getloadavg()[0]
    began = time.perf_counter()
    result = simulate(cfg)
    wall = time.perf_counter() - began

    errors = list(result.errors())
    relative = {node: (true_ms - paid_ms) / true_ms for node, true_ms, paid_ms in errors}
    worst = max(errors, key=lambda e: abs(e[1] - e[2]) / e[1])
    over = sum(1 for _, true_ms, paid_ms in errors if paid_ms > true_ms)
    per_session = max((true_ms - paid_ms) / len(result.truth[node]) for node, true_ms, paid_ms in errors)
    paid_shares = shares({node: ms for node, _, ms in errors})
    true_shares = shares({node: ms for node, ms, _ in errors})
    share_error = max(abs(paid_shares.get(n, Fraction(0)) - s) / s for n, s in true_shares.items())
    seconds = (cfg.period.length_ms + cfg.warmup_ms + cfg.close_delay_ms) / 1000

    print(f"{cfg.nodes} nodes ({len(result.always_on)} always on), {args.days} days, seed {cfg.seed}")
    print(f"sessions in the period: {sum(len(s) for s in result.truth.values()):,}; "
          f"honest nodes up in it: {len(errors)}")  # fmt: skip
    print(f"uptime error, worst node: {abs(worst[1] - worst[2]) / worst[1]:.4%} "
          f"(paid {worst[2] / 3.6e6:.2f} h of {worst[1] / 3.6e6:.2f} h in {len(result.truth[worst[0]])} sessions)")  # fmt: skip
    print(f"uptime error, median / p99: {percentile(list(relative.values()), 0.5):.4%} / "
          f"{percentile(list(relative.values()), 0.99):.4%}; all nodes together: "
          f"{sum(t - p for _, t, p in errors) / sum(t for _, t, _ in errors):.4%}; paid above truth: {over} nodes")  # fmt: skip
    print(f"largest loss per session: {per_session / 1000:.1f} s; worst share error: {float(share_error):.4%}")
    print("cheat gains (ms):", ", ".join(f"{cheat} {ms}" for cheat, ms in result.gains.items()))
    print("cheaters paid while down (ms):", ", ".join(f"{cheat} {ms}" for cheat, ms in result.paid_while_down.items()))
    if "lone colluder" in result.cheaters:
        friend = result.truth[result.cheaters["lone colluder"]]
        gain = result.gains["lone colluder"]
        print(f"lone colluder's friend: up {sum(b - a for a, b in friend) / 3.6e6:.1f} h in {len(friend)} sessions; "
              f"gain {gain / 1000:.1f} s = {gain / 1000 / len(friend):.1f} s a session, all while it was up")  # fmt: skip
    print("verdicts:", ", ".join(f"{v} {n:,}" for v, n in sorted(result.verdicts.items())))
    print(f"attestations: {result.attestations:,} in {result.batches:,} batches, {result.attestation_bytes:,} bytes: "
          f"{result.attestation_bytes / (cfg.nodes * seconds):.4f} bytes per node per second "
          f"({result.attestation_bytes / result.attestations:.1f} per attestation)")  # fmt: skip
    static = {n for n, c in result.classes.items() if c is NodeClass.STATIC}
    print(f"static at the end: {len(static)} ({len(static & result.always_on)} of {len(result.always_on)} always-on)")
    print("phases (s):", ", ".join(f"{name} {s:.1f}" for name, s in result.seconds.items()),
          f"| wall {wall:.1f} s, load {load:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
