"""LogBudget: a bounded number of lines per interval, the rest counted for one summary."""

from __future__ import annotations

from cortex_rm.yarn.log_budget import LogBudget


def test_lines_past_the_limit_are_counted_and_reported_when_the_next_interval_starts() -> None:
    """Within an interval the first ``limit`` lines may be written; the interval that ended says
    how many it refused, once; ``suppressed`` counts them all."""
    budget = LogBudget(2, 60.0)
    assert budget.roll(0.0) == 0
    assert [budget.spend() for _ in range(5)] == [True, True, False, False, False]
    assert budget.roll(59.9) == 0  # the interval goes on
    assert budget.spend() is False
    assert budget.roll(60.0) == 4
    assert budget.roll(60.0) == 0 and budget.spend() is True
    assert budget.roll(200.0) == 0 and budget.suppressed == 4
