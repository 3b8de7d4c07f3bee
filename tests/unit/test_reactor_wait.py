"""``ha/reactor_wait.ReactorWait``: a thread blocks until the Deferred its call started on the reactor fires, and
``interrupt`` releases it (and refuses later waits) with ``NotLeader``.  The "reactor" is this test's thread: it takes
the calls the waiting thread hands over (``callFromThread``) from a queue and runs them when the test says."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from cortex_rm.ha.journal import NotLeader
from cortex_rm.ha.reactor_wait import ReactorWait

TIMEOUT_S = 30  # (a bound for a broken implementation, never waited out by a working one)


class HandOver:
    """``IReactorFromThreads`` whose calls wait in a queue for the test's thread."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: N802 (Twisted's name)
        self.calls.put(lambda: f(*args, **kwargs))


def waiting(wait: ReactorWait, start: Callable[[], defer.Deferred[Any]]) -> tuple[threading.Thread, list[Any]]:
    """A thread that waits on ``start``; what it got (a result, or the exception) lands in the list."""
    got: list[Any] = []

    def body() -> None:
        try:
            got.append(wait(start))
        except Exception as e:  # noqa: BLE001 - the test looks at it
            got.append(e)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, got


def test_the_waiting_thread_gets_the_deferreds_result_or_failure() -> None:
    """The call runs on the reactor only when the reactor runs it; the thread returns its Deferred's result, or raises
    its failure."""
    reactor = HandOver()
    wait = ReactorWait(reactor)  # type: ignore[arg-type]
    d: defer.Deferred[int] = defer.Deferred()
    thread, got = waiting(wait, lambda: d)
    reactor.calls.get(timeout=TIMEOUT_S)()
    assert thread.is_alive() and got == []
    d.callback(7)
    thread.join(TIMEOUT_S)
    assert got == [7]

    thread, got = waiting(wait, lambda: defer.fail(ValueError("refused")))
    reactor.calls.get(timeout=TIMEOUT_S)()
    thread.join(TIMEOUT_S)
    assert isinstance(got[0], ValueError) and str(got[0]) == "refused"


def test_interrupt_releases_a_waiting_thread_and_refuses_later_waits_before_they_start() -> None:
    """A wait under way ends with NotLeader at ``interrupt``, whether or not its call ran; a call handed over before the
    interrupt is not started after it; a later wait raises at once."""
    reactor = HandOver()
    wait = ReactorWait(reactor)  # type: ignore[arg-type]
    started: list[int] = []

    def start() -> defer.Deferred[int]:
        started.append(1)
        return defer.Deferred()  # (never fires: the journal lost the lead)

    first, got_first = waiting(wait, start)
    reactor.calls.get(timeout=TIMEOUT_S)()
    second, got_second = waiting(wait, start)
    not_run = reactor.calls.get(timeout=TIMEOUT_S)
    wait.interrupt()
    first.join(TIMEOUT_S)
    second.join(TIMEOUT_S)
    assert isinstance(got_first[0], NotLeader) and isinstance(got_second[0], NotLeader)
    not_run()
    assert started == [1]
    later, got_later = waiting(wait, start)
    later.join(TIMEOUT_S)
    assert isinstance(got_later[0], NotLeader) and reactor.calls.empty()
