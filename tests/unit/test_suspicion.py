"""Lifeguard's suspicion maths: timeout bounds, the confirmation curve, retransmit limits, the timer."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.dht.local_health import LocalHealth
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.suspicion import (
    SuspicionTimer,
    expected_confirmations,
    retransmit_limit,
    suspicion_timeout,
    suspicion_timeout_bounds,
)
from cortex_rm.dht.swim_config import SwimConfig

group_sizes = st.integers(min_value=1, max_value=100_000)
intervals = st.floats(min_value=0.01, max_value=60.0)
mults = st.integers(min_value=1, max_value=12)


@pytest.mark.parametrize(
    ("n", "expected_min", "expected_max"),
    [
        (1, 4.0, 24.0),  # log10 scale floored at 1
        (10, 4.0, 24.0),
        (100, 8.0, 48.0),
        (1000, 12.0, 72.0),
    ],
)
def test_bounds_match_memberlist_defaults(n: int, expected_min: float, expected_max: float) -> None:
    """With 1 s probes, mult 4 and max mult 6, min = 4 * max(1, log10 N) s and max = 6 * min."""
    assert suspicion_timeout_bounds(n, 1.0, 4, 6) == pytest.approx((expected_min, expected_max))


@pytest.mark.parametrize(
    ("confirmations", "expected"),
    [(0, 24.0), (1, 24.0 - 20.0 * math.log(2) / math.log(3)), (2, 4.0), (3, 4.0), (50, 4.0)],
)
def test_timeout_table_for_k_2(confirmations: int, expected: float) -> None:
    """K = 2: no confirmation gives max, one takes log(2)/log(3) of the way, two or more give min."""
    assert suspicion_timeout(confirmations, 2, 4.0, 24.0) == pytest.approx(expected)


def test_small_groups_expect_no_confirmation() -> None:
    """K as configured, unless fewer than K other members could ever accuse (then 0, timeout min)."""
    assert expected_confirmations(2, 10) == 2
    assert expected_confirmations(2, 4) == 2
    assert expected_confirmations(2, 3) == 0
    assert suspicion_timeout(0, 0, 4.0, 24.0) == 4.0


@given(group_sizes, intervals, mults, mults)
def test_bounds_are_ordered_and_scale_with_the_interval(n: int, interval: float, mult: int, max_mult: int) -> None:
    """min <= max, and both are proportional to the probe interval."""
    low, high = suspicion_timeout_bounds(n, interval, mult, max_mult)
    assert 0 < low <= high
    assert high == pytest.approx(max_mult * low)
    low2, _ = suspicion_timeout_bounds(n, 2 * interval, mult, max_mult)
    assert low2 == pytest.approx(2 * low)


@given(group_sizes, group_sizes, mults)
def test_bounds_grow_with_the_group(n1: int, n2: int, mult: int) -> None:
    """A larger group never gets a shorter suspicion timeout (gossip needs longer to reach all)."""
    small, large = sorted((n1, n2))
    assert suspicion_timeout_bounds(small, 1.0, mult, 6)[0] <= suspicion_timeout_bounds(large, 1.0, mult, 6)[0]


@given(
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=10),
    st.floats(min_value=0.1, max_value=100.0),
    st.floats(min_value=1.0, max_value=10.0),
)
def test_timeout_stays_in_bounds_and_never_grows_with_confirmations(c: int, k: int, low: float, factor: float) -> None:
    """min <= timeout(C) <= max, timeout(0) = max (when K >= 1), timeout(C >= K) = min, and C+1 never waits longer."""
    high = low * factor
    t = suspicion_timeout(c, k, low, high)
    assert low <= t <= high + 1e-9
    assert suspicion_timeout(c + 1, k, low, high) <= t + 1e-9
    if k >= 1:
        assert suspicion_timeout(0, k, low, high) == pytest.approx(high)
    if c >= k:
        assert t == pytest.approx(low)


@given(st.integers(min_value=1, max_value=10), group_sizes, group_sizes)
def test_retransmit_limit_is_mult_times_ceil_log10(mult: int, n1: int, n2: int) -> None:
    """limit = mult * ceil(log10(N + 1)): at least mult, and never smaller for a larger group."""
    assert retransmit_limit(mult, n1) == mult * math.ceil(math.log10(n1 + 1))
    assert retransmit_limit(mult, n1) >= mult
    small, large = sorted((n1, n2))
    assert retransmit_limit(mult, small) <= retransmit_limit(mult, large)


def test_retransmit_limit_table() -> None:
    """Defaults (mult 4): 4 up to 9 members, 8 up to 99, 12 up to 999."""
    assert [retransmit_limit(4, n) for n in (1, 9, 10, 50, 99, 100, 999)] == [4, 4, 8, 8, 8, 12, 12]


accusers = st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=30)


@given(accusers)
def test_timer_counts_distinct_accusers_and_only_moves_its_deadline_forward(ids: list[int]) -> None:
    """Repeated accusers confirm nothing; each new one brings the deadline forward, never past start + min."""
    timer = SuspicionTimer(100.0, 4.0, 24.0, 2, Peer(ids[0], "a"))
    assert timer.deadline == pytest.approx(124.0)
    previous = timer.deadline
    for node_id in ids[1:]:
        seen = node_id in timer.accusers
        assert timer.confirm(Peer(node_id, "x")) is not seen
        assert timer.deadline <= previous
        assert timer.deadline >= 104.0
        previous = timer.deadline
    assert timer.confirmations == len(set(ids)) - 1
    assert not timer.expired(timer.deadline - 0.001)
    assert timer.expired(timer.deadline)


def test_local_health_is_bounded_and_scales_timeouts() -> None:
    """LHM stays in 0..S and multiplies intervals by 1 + LHM."""
    health = LocalHealth(3)
    assert health.apply(-1, "acked") == 0
    assert health.scale(0.5) == 0.5
    assert health.apply(5, "missed nacks") == 3
    assert health.scale(1.0) == 4.0
    assert health.apply(-1, "acked") == 2


def test_config_defaults_and_validation() -> None:
    """The LAN defaults are memberlist's but a suspicion mult of 3 (K stays 2); inconsistent timeouts are refused."""
    c = SwimConfig.lan()
    assert (c.probe_interval, c.probe_timeout, c.indirect_checks) == (1.0, 0.5, 3)
    assert (c.suspicion_mult, c.suspicion_confirmations, c.suspicion_max_timeout_mult, c.retransmit_mult) == (3, 2, 6, 4)
    assert suspicion_timeout_bounds(10, c.probe_interval, c.suspicion_mult, c.suspicion_max_timeout_mult) == (3.0, 18.0)
    assert SwimConfig.wan().probe_interval == 5.0
    with pytest.raises(ValueError):
        SwimConfig(probe_timeout=1.0)
    with pytest.raises(ValueError):
        SwimConfig(indirect_probe_timeout=0.6)
    with pytest.raises(ValueError):
        SwimConfig(late_tick_limit=0.0)


def test_scheduler_probes_each_neighbour_once_per_pass_in_a_fixed_cyclic_order() -> None:
    """Round robin over one random order: every neighbour exactly once per pass, the same order each pass,
    so two probes of one member are exactly one pass apart."""
    from cortex_rm.dht.peer import Peer
    from cortex_rm.dht.probe_scheduler import ProbeScheduler

    peers = [Peer(i, f"p{i}:1") for i in range(1, 10)]
    scheduler = ProbeScheduler(Peer(0, "me:1"), random.Random(3))
    scheduler.set_neighbours(peers)
    passes = [[scheduler.next_target(lambda p: True) for _ in peers] for _ in range(3)]
    assert sorted(p.node_id for p in passes[0] if p) == list(range(1, 10))
    assert passes[0] == passes[1] == passes[2]
    assert scheduler.is_neighbour(peers[0]) and not scheduler.is_neighbour(Peer(42, "x:1"))
