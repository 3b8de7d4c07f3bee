"""How often an ApplicationMaster's node leaves during the AM's life: placed by class vs at random.

The churn of ``bench/payout_sim.py`` (``tests/support/uptime_sim.py``): 1,000 nodes, 100
always on, the others with Weibull sessions (shape 0.34-0.59 per node, median 1 h) and
Weibull downtimes (shape 0.5, median 2 h), over 30 days after 8 days of warm-up (the class
window is 7 days).  Every ``--tick`` minutes the real ``NodeClasses`` re-classes every node
from its uptime so far (the witnessed uptime is within 0.25% of the truth:
``bench/payout_sim.py``, so the true sessions stand in for the ledger here), and AMs arrive:
``--ams`` per tick, each living a fixed time (30 min, 1 h, 4 h, 12 h).  Each AM is placed

* **by class**: on a random live *static* node (a random live node when none is static),
  what the scheduler does (``allocator/node_labels.py``);
* **at random**: on a random live node.

An AM is *lost* when its node's session ends before the AM does.  Prints, per AM life,
the fraction lost each way.

Usage: .venv/bin/python bench/am_placement_sim.py [--nodes 1000] [--days 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.accounting.intervals import clipped  # noqa: E402
from cortex_rm.accounting.node_classes import NodeClasses  # noqa: E402
from tests.support.uptime_sim import DAY, HOUR, SimConfig, churn_sessions  # noqa: E402

LIVES_MS = (30 * 60_000, HOUR, 4 * HOUR, 12 * HOUR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--always-on", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--warmup-days", type=int, default=8)
    parser.add_argument("--tick", type=int, default=30, help="minutes between re-classing and AM arrivals")
    parser.add_argument("--ams", type=int, default=20, help="AMs arriving per tick, per AM life")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cfg = SimConfig(nodes=args.nodes, always_on=args.always_on)
    start = 1_788_220_800_000
    end = start + (args.warmup_days + args.days) * DAY
    sessions = {
        node: [(start, end)] if node < args.always_on else churn_sessions(rng, cfg, start, end) for node in range(args.nodes)
    }
    starts = {node: [s for s, _ in spans] for node, spans in sessions.items()}
    classes = NodeClasses()
    lost = {life: {"class": 0, "random": 0} for life in LIVES_MS}
    placed = {life: 0 for life in LIVES_MS}
    fallback = 0
    began = time.perf_counter()
    now = start + args.warmup_days * DAY
    while now < end - max(LIVES_MS):
        live: dict[int, int] = {}  # node -> end of its current session
        for node, spans in sessions.items():
            i = bisect.bisect_right(starts[node], now) - 1
            if i >= 0 and spans[i][0] <= now < spans[i][1]:
                live[node] = spans[i][1]
            classes.update(node, clipped(spans, start, now), now)
        static = [n for n in classes.static_nodes() if n in live]
        nodes = list(live)
        for life in LIVES_MS:
            for _ in range(args.ams):
                placed[life] += 1
                by_class = rng.choice(static) if static else rng.choice(nodes)
                fallback += not static
                lost[life]["class"] += live[by_class] < now + life
                lost[life]["random"] += live[rng.choice(nodes)] < now + life
        now += args.tick * 60_000
    seconds = time.perf_counter() - began
    print(f"{args.nodes} nodes ({args.always_on} always on), {args.days} days after {args.warmup_days} of warm-up, "
          f"re-classed every {args.tick} min, seed {args.seed}; {seconds:.0f} s")  # fmt: skip
    print(f"static nodes at the end: {len(classes.static_nodes())}; ticks with no live static node: {fallback // (len(LIVES_MS) * args.ams)}")
    print(f"{'AM life':>8} {'AMs':>8} {'lost, by class':>15} {'lost, at random':>16}")
    for life in LIVES_MS:
        n = placed[life]
        print(f"{life / HOUR:>7.1f}h {n:>8} {lost[life]['class'] / n:>14.2%} {lost[life]['random'] / n:>15.2%}")


if __name__ == "__main__":
    main()
