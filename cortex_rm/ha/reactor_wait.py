"""A blocking thread's wait for something the reactor does: how the ledger's thread waits for the journal.

The ledger is blocking (``accounting/ledger.MerkleLog`` runs on a thread of its own), the journal
lives on the reactor (``roles/rm_journal.RmJournal``).  ``ReactorWait(start)``, called on the
ledger's thread, runs ``start`` on the reactor (it proposes an entry and returns a Deferred that
fires once the entry is committed and applied here) and blocks until that Deferred fires; its
result or failure is the call's.  As Twisted's ``blockingCallFromThread``, with one addition:
``interrupt`` (on the reactor) ends every wait under way and every later one at once with
``NotLeader``.  The owner interrupts before it joins the waiting thread, so a reactor that
stops the ledger never waits for a thread that waits for the reactor; whatever was proposed
may still commit (an unknown outcome, as any write the active was making when it stood down).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import threadable
from twisted.python.failure import Failure

from cortex_rm.ha.journal import NotLeader


class BlockingWait(Protocol):
    """Run ``start`` where the journal lives and block for its Deferred's result (``ReactorWait``)."""

    def __call__(self, start: Callable[[], defer.Deferred[Any]]) -> Any: ...

    def interrupt(self) -> None:
        """End every wait, under way or later, with ``NotLeader``."""


class ReactorWait:
    """See the module docstring."""

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self.reactor = reactor
        self._lock = threading.Lock()
        self._waiting: set[queue.SimpleQueue[Any]] = set()
        self._interrupted = False

    def __call__(self, start: Callable[[], defer.Deferred[Any]]) -> Any:
        if threadable.isInIOThread():  # type: ignore[no-untyped-call]
            raise RuntimeError("ReactorWait on the reactor's thread would wait for itself")
        answer: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            if self._interrupted:
                raise NotLeader(None)
            self._waiting.add(answer)

        def begin() -> None:  # (on the reactor)
            if self._interrupted:
                answer.put(Failure(NotLeader(None)))
                return
            defer.maybeDeferred(start).addBoth(answer.put)

        try:
            self.reactor.callFromThread(begin)
            result = answer.get()
        finally:
            with self._lock:
                self._waiting.discard(answer)
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
            waiting = list(self._waiting)
        for answer in waiting:
            answer.put(Failure(NotLeader(None)))
