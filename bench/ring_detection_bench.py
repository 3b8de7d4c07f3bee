"""Time for real ring daemons to declare a SIGKILLed member dead, with a 1 s probe interval.

Starts ``--nodes`` real ``cortex-rm node`` daemons (ring member only, each at its
own loopback address, mutual TLS, the default LAN timings: probe every 1 s) and,
for each of ``--trials`` rounds, SIGKILLs one member (never the introducer),
measures the seconds until the first and until the last of the others reports it
DEAD in its ring view (polled every 0.1 s over HTTP: what ``cortex-rm ring``
reads), then restarts it (it rejoins from its neighbour log) and waits for the
ring to be whole again.  Target: the last member within 8 s at 10 nodes.

Usage: .venv/bin/python bench/ring_detection_bench.py [--nodes 10] [--trials 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.ring_daemons import (  # noqa: E402
    make_daemons,
    names_peers,
    ring_is_correct,
    start_ring,
    status_of,
    wait_for,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--probe-interval-ms", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ring-detection-") as root:
        daemons = make_daemons(Path(root), args.nodes, args.probe_interval_ms)
        start_ring(daemons)
        try:
            took = wait_for(lambda: ring_is_correct(daemons), "the ring to form", timeout=180)
            print(f"{args.nodes} daemons formed a correct ring in {took:.1f} s", flush=True)
            firsts, lasts = [], []
            for trial in range(args.trials):
                victim = daemons[1 + trial % (len(daemons) - 1)]
                victim_id = victim.view()["node"]["id"]  # type: ignore[index]
                wait_for(lambda: names_peers(victim.directory, victim_id), "the victim's neighbour log", 60)
                others = [d for d in daemons if d is not victim]
                victim.kill()
                killed = time.monotonic()
                first = None
                while True:
                    dead = sum(status_of(d.view(), victim_id) == "dead" for d in others)
                    if dead and first is None:
                        first = time.monotonic() - killed
                    if dead == len(others):
                        last = time.monotonic() - killed
                        break
                    if time.monotonic() - killed > 120:
                        raise SystemExit(f"trial {trial + 1}: not declared dead by all within 120 s")
                    time.sleep(0.1)
                assert first is not None
                firsts.append(first)
                lasts.append(last)
                print(f"trial {trial + 1}: {victim.name} declared dead by the first member after {first:.1f} s, "
                      f"by all {len(others)} after {last:.1f} s", flush=True)
                victim.start([])
                wait_for(lambda: ring_is_correct(daemons), "the victim to rejoin", timeout=120)
            print(f"first member: mean {statistics.mean(firsts):.2f} s, max {max(firsts):.2f} s; "
                  f"all members: mean {statistics.mean(lasts):.2f} s, max {max(lasts):.2f} s "
                  f"(target: all within 8 s; {args.nodes} daemons, probe every {args.probe_interval_ms} ms)")
        finally:
            for daemon in daemons:
                daemon.stop()


if __name__ == "__main__":
    main()
