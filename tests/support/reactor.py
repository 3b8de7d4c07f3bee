"""The running reactor for loopback integration tests, and a bounded wait on a condition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task


def reactor() -> Any:
    """The reactor pytest-twisted runs (imported late, as only entry points may)."""
    from twisted.internet import reactor as global_reactor

    return global_reactor


@defer.inlineCallbacks
def wait_until(condition: Callable[[], bool], what: str, timeout: float):  # type: ignore[no-untyped-def]
    """Poll ``condition`` every 20 ms on the reactor; fail naming ``what`` after ``timeout`` s.

    The bound only keeps a broken test from hanging; correctness never depends on it.
    """
    deadline = reactor().seconds() + timeout
    while not condition():
        if reactor().seconds() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        yield task.deferLater(reactor(), 0.02, lambda: None)
