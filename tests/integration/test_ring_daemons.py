"""Eight real ring daemons on loopback: join, a SIGKILL, repair, records, and a rejoin from the neighbour log.

Each daemon is ``cortex-rm node`` with only its ring member enabled, at its own
loopback address 127.0.0.<i>, with a 200 ms probe interval.  The test reads each
node's ring view over HTTP (``/ws/v1/ring``, what ``cortex-rm ring`` prints) and
uses a short-lived ring member (``tests/support/ring_client.py``) to put and get
records.  Every wait is bounded; the assertions are about state, and the one
about time is the configured detection bound, with the formula below.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_rm.config import RingSection
from cortex_rm.dht.suspicion import suspicion_timeout_bounds
from tests.support.ring_daemons import (
    RingDaemon,
    made_daemons,
    names_peers,
    ring_client,
    ring_is_correct,
    start_ring,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.integration

NODES = 8
PROBE_INTERVAL_MS = 200


def detection_bound_s(nodes: int) -> float:
    """How long the ring may take to declare a crashed member dead everywhere.

    The victim is probed within one probe interval by one of its several probers,
    suspected at the end of that probe's period (a second interval), and declared
    dead when the suspicion times out: at most the Lifeguard maximum for N members
    (suspicion_max_timeout_mult x suspicion_mult x log10(N) x interval).  The death
    then spreads by gossip within a few intervals.  Three seconds more cover that,
    the HTTP polling of eight daemons, and probers slowed by their local health on a
    busy machine (the measured time is printed; bench/ring_detection_bench.py
    measures it properly).
    """
    swim = RingSection(probe_interval_ms=PROBE_INTERVAL_MS).ring_config().swim
    _, longest = suspicion_timeout_bounds(nodes, swim.probe_interval, swim.suspicion_mult, swim.suspicion_max_timeout_mult)
    return 2 * swim.probe_interval + longest + 3.0


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[RingDaemon]]:
    with made_daemons(tmp_path, NODES, PROBE_INTERVAL_MS) as daemons:
        yield daemons


def test_eight_daemons_survive_a_sigkill_keep_their_records_and_the_victim_rejoins_from_its_log(
    daemons: list[RingDaemon], tmp_path: Path
) -> None:
    """8 daemons join through the first; a SIGKILLed one is declared dead by all the others
    within the configured bound; the ring repairs; records put before the kill are all
    read back after it; restarted with no introducer, the victim rejoins through its
    neighbour log and the ring is whole again with it ALIVE everywhere."""
    first = daemons[0]
    start_ring(daemons)
    try:
        took = wait_for(lambda: ring_is_correct(daemons), "8 daemons to form a correct ring", timeout=90)
        print(f"ring of {NODES} correct after {took:.1f} s")

        keys = [f"record-{i}" for i in range(20)]
        pairs = [item for key in keys for item in (key, f"value of {key}")]
        ring_client(tmp_path / "client-put", first.ring_address, "put", *pairs)

        victim = daemons[4]
        victim_id = victim.view()["node"]["id"]  # type: ignore[index]
        wait_for(lambda: names_peers(victim.directory, victim_id), "the victim's neighbour log to name its peers", timeout=30)
        others = [d for d in daemons if d is not victim]
        victim.kill()
        bound = detection_bound_s(NODES)
        took = wait_for(
            lambda: all(status_of(d.view(), victim_id) in ("dead",) for d in others),
            "every other daemon to declare the SIGKILLed one dead",
            timeout=bound,
        )
        print(f"declared dead by all {len(others)} others after {took:.1f} s (bound {bound:.1f} s)")
        wait_for(lambda: ring_is_correct(others), "the ring of 7 to repair", timeout=60)

        lines = ring_client(tmp_path / "client-get", first.ring_address, "get", *keys)
        assert lines == [f"{key} value of {key}" for key in keys]

        victim.start([])  # no introducer: only its neighbour log knows where the ring is
        wait_for(lambda: ring_is_correct(daemons), "the restarted daemon to rejoin the ring", timeout=60)
        wait_for(
            lambda: all(status_of(d.view(), victim_id) == "alive" for d in others),
            "every daemon to see the restarted one alive",
            timeout=30,
        )
        assert "joining through" in victim.log().split("started, incarnation")[-1]
    except BaseException:
        for daemon in daemons:
            print(f"==== {daemon.name} ====\n{daemon.log()[-4000:]}")
        raise
