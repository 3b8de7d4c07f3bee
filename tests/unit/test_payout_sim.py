"""The payout simulation at unit-test size: 50 churning nodes for 2 days, paid by the real accounting code.

``bench/payout_sim.py`` runs the same world with 1,000 nodes for 30 days.
"""

from __future__ import annotations

import pytest

from cortex_rm.accounting.node_classes import NodeClass
from cortex_rm.accounting.periods import Period
from tests.support.uptime_sim import CHEATS, DAY, ChurnWorld, SimConfig, SimResult, simulate

START = 1_788_220_800_000
SMALL = SimConfig(nodes=50, always_on=5, period=Period(START, START + 2 * DAY), seed=3)


@pytest.fixture(scope="module")
def result() -> SimResult:
    return simulate(SMALL)


def test_every_honest_node_is_paid_within_one_percent_of_its_true_uptime(result: SimResult) -> None:
    """No node is paid more than it was up; each loses at most one probing delay per session edge.

    A session's first instants are paid once a second prober has acked (within the
    stabilization delay and one probe pass), its last ones up to the second-to-last ack
    (within one pass): at most ``8 s + 2 x 20 s`` a session.  So a node whose sessions last
    80 minutes on average is paid within 1%, and all honest nodes together within 1%.
    (Shorter ones are below the probes' resolution: a node up 20 s may not be seen at all;
    over the bench's 30 days every node is within 1%.)
    """
    per_session = SMALL.successors * SMALL.stabilize_ms + 2 * SMALL.pass_ms
    errors = list(result.errors())
    long_sessions = 0
    for node, true_ms, paid_ms in errors:
        sessions = len(result.truth[node])
        assert paid_ms <= true_ms, f"{node:040x} paid more than it was up"
        assert true_ms - paid_ms <= sessions * per_session, f"{node:040x}: paid {paid_ms} of {true_ms} ms in {sessions}"
        if true_ms >= sessions * 100 * per_session:
            assert true_ms - paid_ms < 0.01 * true_ms
            long_sessions += 1
    assert len(errors) > 30 and long_sessions > 20
    assert sum(t - p for _, t, p in errors) < 0.01 * sum(t for _, t, _ in errors)


def test_no_cheat_is_paid_for_time_down_and_only_the_lone_colluder_gains(result: SimResult) -> None:
    """Self-attestation, forgery, non-neighbours, replays and floods gain 0 ms; no cheater is paid while down.

    A lone colluding prober gains only instants at its friend's session edges that exactly one
    honest prober had seen (the friend was up then): at most one probe pass per session edge.
    """
    assert set(result.gains) == set(CHEATS)
    assert all(ms == 0 for ms in result.paid_while_down.values())
    assert {cheat: ms for cheat, ms in result.gains.items() if cheat != "lone colluder"} == dict.fromkeys(CHEATS[:-1], 0)
    friend = result.cheaters["lone colluder"]
    edges = 2 * len(result.truth[friend])
    assert 0 <= result.gains["lone colluder"] <= edges * SMALL.pass_ms


def test_the_refusals_name_each_cheat(result: SimResult) -> None:
    """The ledger's verdicts show each cheat refused for its own reason."""
    for verdict in ("self-attestation", "bad-signature", "not-neighbour", "replay", "overlap"):
        assert result.verdicts.get(verdict, 0) > 0, verdict


def test_always_on_nodes_end_static(result: SimResult) -> None:
    """Two days up: every always-on node is classed static at the end of the period."""
    assert all(result.classes[node] is NodeClass.STATIC for node in result.always_on)


def test_thinned_feed_attests_exactly_what_every_probe_would() -> None:
    """The witness fed only the probes that matter signs the same attestations as one fed every probe."""
    world = ChurnWorld(SimConfig(nodes=20, always_on=2, period=Period(START, START + DAY // 2), warmup_ms=DAY // 4, seed=5))
    busiest = max(world.keys, key=lambda w: len(world.watched[w]))
    for flood in (False, True):
        thinned = [b.attestations for b in world.witness_batches(busiest, flood=flood)]
        full = [b.attestations for b in world.witness_batches(busiest, flood=flood, thin=False)]
        assert thinned == full and len(thinned) > 5
