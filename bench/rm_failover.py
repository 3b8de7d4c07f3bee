"""RM failover time, and what the replicated journal costs a submission (issue 13).

Failover: three RM-eligible ``cortex-rm node`` daemons on loopback (ring member and ResourceManager, no
NodeManager; the ring's default timings), ``[ring] resource_managers`` naming all three.  Each trial SIGKILLs
the active and measures the seconds from the kill to the first successful client call: a REST
``new-application`` (a write: the journal must commit it) tried at each eligible node in turn every 0.1 s, as
a failover client does.  The killed node is then restarted; the next trial waits until it has caught up with
the journal, so every trial kills an active whose standbys hold everything.

Cost: ``--submissions`` REST submissions (``new-application`` + submit of an application whose AM never runs:
there is no NodeManager) one after the other, on one RM without standbys and on the active of the three;
the median and p99 milliseconds a submission, and the journal entries and bytes it added.

Usage: .venv/bin/python bench/rm_failover.py [--trials 20] [--submissions 200]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.user_credential import UserCredential, load_credential  # noqa: E402
from tests.support.ring_daemons import wait_for  # noqa: E402
from tests.support.rm_nodes import RmNode, journal_applied, make_rm_nodes, rest, submit  # noqa: E402


def active_of(nodes: list[RmNode]) -> RmNode | None:
    serving = [n for n in nodes if n.process is not None and n.process.poll() is None and "resourcemanager.tracker_address" in n.ready()]
    return next((n for n in serving if n.serves()), None)


def first_call(nodes: list[RmNode], credential: UserCredential, timeout: float = 120) -> tuple[float, RmNode]:
    """Seconds until one of ``nodes`` answers a new-application, trying each in turn; and which did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for node in nodes:
            try:
                rest(node, "/ws/v1/cluster/apps/new-application", credential, {})
                return time.monotonic() - started, node
            except (urllib.error.URLError, OSError, ValueError):
                continue
        time.sleep(0.1)
    raise AssertionError(f"no RM answered within {timeout:.0f} s")


def journal_size(node: RmNode) -> tuple[int, int]:
    path = node.directory / "rm-journal.sqlite"
    if not path.exists():
        return 0, 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        count, size = db.execute("select count(*), coalesce(sum(length(data)), 0) from journal_entries").fetchone()
    return int(count), int(size)


def submissions(node: RmNode, credential: UserCredential, count: int) -> tuple[list[float], tuple[int, int]]:
    before = journal_size(node)
    took = []
    for i in range(count):
        started = time.perf_counter()
        submit(node, credential, f"bench-{i}")
        took.append((time.perf_counter() - started) * 1000)
    after = journal_size(node)
    return took, (after[0] - before[0], after[1] - before[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def cost(label: str, took: list[float], journal: tuple[int, int], count: int) -> None:
    per = f"{journal[0] / count:.1f} entries, {journal[1] / count:.0f} B" if journal[0] else "no journal"
    print(f"  {label:<22} median {statistics.median(took):6.1f} ms  p99 {percentile(took, 99):6.1f} ms  "
          f"a submission; {per}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rm-failover-") as tmp:
        root = Path(tmp)
        (root / "single").mkdir()
        (root / "ha").mkdir()
        single = make_rm_nodes(root / "single", 1)[0]
        nodes = make_rm_nodes(root / "ha", 3)
        try:
            single.start([single.ring_id], None, probe_interval_ms=None)
            wait_for(lambda: "resourcemanager.tracker_address" in single.ready(), "the single RM", 120)
            alone = load_credential(single.directory / "admin.token")
            took, journal = submissions(single, alone, args.submissions)
            single.stop()
            print(f"submissions ({args.submissions} each, one after the other):")
            cost("one RM, no standbys", took, journal, args.submissions)

            order = [n.ring_id for n in nodes]
            nodes[0].start(order, None, probe_interval_ms=None)
            for node in nodes[1:]:
                node.start(order, nodes[0].ports["ring"], probe_interval_ms=None)
            wait_for(lambda: active_of(nodes) is not None, "an active RM", 180)
            active = active_of(nodes)
            assert active is not None
            admin = load_credential(active.directory / "admin.token")
            took, journal = submissions(active, admin, args.submissions)
            cost("active of 3 eligible", took, journal, args.submissions)

            times = []
            for trial in range(1, args.trials + 1):
                active = active_of(nodes)
                assert active is not None
                others = [n for n in nodes if n is not active]
                wait_for(lambda: min(journal_applied(n) for n in others) >= journal_applied(active) > 0,
                         "the standbys to catch up", 120)  # fmt: skip
                active.kill()
                seconds, new = first_call(others, admin)
                times.append(seconds)
                print(f"trial {trial:2}: killed {active.name}; {new.name} answered after {seconds:5.2f} s", flush=True)
                active.start(order, new.ports["ring"], probe_interval_ms=None)
                wait_for(lambda: bool(active.ready()), f"{active.name} to restart", 120)
            print(f"failover, kill -> first successful client call, {len(times)} trials: "
                  f"median {statistics.median(times):.2f} s, p99 {percentile(times, 99):.2f} s, "
                  f"min {min(times):.2f} s, max {max(times):.2f} s")  # fmt: skip
        finally:
            for node in [single, *nodes]:
                node.stop()


if __name__ == "__main__":
    main()
