"""The warm pool's decisions: warm reuse, cold starts within the function's concurrency and the node's bound, LRU eviction, idle expiry."""

from __future__ import annotations

from cortex_rm.events.warm_pool import SlotState, WarmPool

A, B = ("a", 1), ("b", 1)


def test_a_released_sandbox_is_reused_warm() -> None:
    pool = WarmPool(max_sandboxes=4, idle_timeout_s=60)
    first = pool.place(A, 2, 0.0)
    assert first.new is not None and not first.evict
    pool.ready(first.new)
    pool.release(first.new, 1.0)
    again = pool.place(A, 2, 2.0)
    assert again.warm is first.new and again.warm.state is SlotState.BUSY


def test_a_function_gets_at_most_its_concurrency_then_is_busy() -> None:
    pool = WarmPool(max_sandboxes=8, idle_timeout_s=60)
    for _ in range(2):
        assert pool.place(A, 2, 0.0).new is not None
    assert pool.busy(A, 2) and pool.place(A, 2, 0.0).busy
    assert not pool.busy(B, 2)


def test_a_full_node_evicts_the_least_recently_used_idle_sandbox_of_another_function() -> None:
    pool = WarmPool(max_sandboxes=2, idle_timeout_s=60)
    old, recent = pool.place(A, 4, 0.0).new, pool.place(B, 4, 0.0).new
    assert old is not None and recent is not None
    pool.release(old, 1.0)
    pool.release(recent, 2.0)
    placed = pool.place(("c", 1), 4, 3.0)
    assert placed.new is not None and placed.evict == (old,) and old.number not in pool.slots


def test_a_full_node_of_busy_sandboxes_is_busy() -> None:
    pool = WarmPool(max_sandboxes=1, idle_timeout_s=60)
    assert pool.place(A, 4, 0.0).new is not None
    assert pool.busy(B, 4)


def test_idle_sandboxes_expire_and_discarded_ones_are_never_reused() -> None:
    pool = WarmPool(max_sandboxes=4, idle_timeout_s=10)
    slot = pool.place(A, 4, 0.0).new
    assert slot is not None
    pool.release(slot, 5.0)
    assert pool.expired(14.9) == [] and pool.expired(15.0) == [slot]
    broken = pool.place(A, 4, 20.0).new
    assert broken is not None
    pool.discard(broken)
    pool.release(broken, 21.0)  # (a late release of a discarded sandbox changes nothing)
    assert pool.place(A, 4, 22.0).new is not None and broken.number not in pool.slots


def test_the_sandboxes_memory_is_bounded_node_wide() -> None:
    """New sandboxes fit the node's memory budget, idle ones of other functions evicted to make room; a function
    that asks more than the whole budget never fits."""
    pool = WarmPool(max_sandboxes=8, idle_timeout_s=60, max_memory_mb=1000)
    a1 = pool.place(A, 4, 0.0, 400).new
    b1 = pool.place(B, 4, 1.0, 400).new
    assert a1 is not None and b1 is not None
    assert pool.busy(("c", 1), 4, 300)  # 800 used, both busy
    pool.release(a1, 2.0)
    placed = pool.place(("c", 1), 4, 3.0, 300)
    assert placed.new is not None and placed.evict == (a1,)
    assert not pool.fits(1001) and pool.place(("d", 1), 4, 4.0, 1001).busy
