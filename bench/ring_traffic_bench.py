"""Steady-state traffic of whole ring members (Chord + SWIM + key space), as bytes on the wire.

Runs N ``RingMember`` cores on the simulated network with the real codec
(``tests/support/ring_sim.py`` with ``wire=True``): they join, converge, then run
for a measured window with ``records`` records stored and capacity reports
published by every member every 30 s (as NodeManagers do).  Prints bytes and
messages per node per second, split by what the message was for, and the share of
bytes that piggybacked rumours take.

Usage: .venv/bin/python bench/ring_traffic_bench.py [--nodes 50] [--seconds 300] [--records 100]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.dht import chord_messages, kv_messages, swim_messages  # noqa: E402
from cortex_rm.dht.ring_config import RingConfig  # noqa: E402
from cortex_rm.dht.ring_member import Transmit
from cortex_rm.internal.ring_codec import (
    encode_envelope,  # noqa: E402
    piggyback_size,  # noqa: E402
)
from tests.support.ring_sim import RingNetwork  # noqa: E402

KINDS = {"swim": swim_messages.SwimMessage, "chord": chord_messages.ChordMessage, "keyspace": kv_messages.KeySpaceMessage}


# A capacity report as a NodeManager publishes it (ring_records.CapacityReport, same size).
REPORT = (
    b'{"http_address": "127.0.0.12:8042", "memory_mb": 8192, "node_id": "127.0.0.12:45454", '
    b'"rack": "/default-rack", "ring_id": "' + b"0" * 40 + b'", "vcores": 8}'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--signed", action="store_true", help="members hold real keys and sign rumours and records")
    args = parser.parse_args()
    started = time.process_time()

    # Signed members solve their keys' work: 16 bits (the nonce is 8 bytes whatever the bits), not the default's seconds each.
    net = RingNetwork(args.seed, RingConfig(work_bits=16, key_bits=8), wire=True, signed=args.signed)
    first = net.add_member()
    members = [first] + [net.add_member() for _ in range(args.nodes - 1)]
    for member in members[1:]:
        net.join(member, [first])
    net.run_until(net.ring_is_correct, timeout=60 * args.nodes)
    for member in members:
        seen: set[tuple[str, bytes]] = set()

        def receive(item, seen=seen):  # type: ignore[no-untyped-def]
            new = (item.key, item.payload) not in seen  # like CapacityReports: only news is passed on
            seen.add((item.key, item.payload))
            return new

        member.membership.sections.register("node-capacity", receive)
    for i in range(args.records):
        net.put(members[i % len(members)], f"record-{i}", b"x" * 200)
    net.run_for(30)

    by_kind: collections.Counter[str] = collections.Counter()
    messages: collections.Counter[str] = collections.Counter()
    rumour_bytes = 0
    perform = net._perform  # noqa: SLF001 (measure what the network carries)

    def counting(member, actions):  # type: ignore[no-untyped-def]
        nonlocal rumour_bytes
        for action in actions:
            if isinstance(action, Transmit):
                body = action.envelope.body
                kind = next(k for k, types in KINDS.items() if isinstance(body, types))
                size = len(encode_envelope(action.envelope)) + 4
                by_kind[kind] += size
                messages[kind] += 1
                rumour_bytes += sum(piggyback_size(p) for p in action.envelope.piggyback)
        perform(member, actions)

    net._perform = counting  # type: ignore[method-assign]
    window_start = net.now
    next_report = net.now
    while net.now < window_start + args.seconds:
        if net.now >= next_report:  # every member republishes its capacity report every 30 s
            for member in members:
                member.membership.sections.publish("node-capacity", member.me.address, REPORT)
            next_report += 30
        net.run_for(1.0)
    per = args.nodes * args.seconds
    total = sum(by_kind.values())
    print(f"ring traffic, {args.nodes} members, {args.seconds:.0f} s measured after convergence, "
          f"{args.records} records, capacity reports every 30 s")
    print(f"{'purpose':>10} {'msgs/node/s':>12} {'bytes/node/s':>13}")
    for kind in KINDS:
        print(f"{kind:>10} {messages[kind] / per:>12.2f} {by_kind[kind] / per:>13.0f}")
    print(f"{'total':>10} {sum(messages.values()) / per:>12.2f} {total / per:>13.0f}")
    print(f"piggybacked rumours: {rumour_bytes / per:.0f} bytes/node/s ({100 * rumour_bytes / max(total, 1):.1f}% of all bytes)")
    print(f"[{time.process_time() - started:.1f} CPU s]")


if __name__ == "__main__":
    main()
