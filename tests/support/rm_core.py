"""Helpers for unit tests of the RM's decision core: a Clock, a memory store, fired Deferreds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cortex_rm.allocator.app_listener import AppListener
from cortex_rm.allocator.app_model import Application, Attempt, SchedulerLimits, Submission
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.state_store import MemoryStateStore, RMStateStore

T0 = 1_700_000_000.0


def result_of(d: defer.Deferred) -> Any:
    """The result of an already-fired Deferred (re-raising its failure)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class ManualRunner:
    """A state-store runner whose jobs wait until the test runs them: a slow store, fired by hand."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], defer.Deferred]] = []

    def __call__(self, func: Callable[[], Any]) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append((func, d))
        return d

    def run_next(self) -> None:
        func, d = self.pending.pop(0)
        try:
            result = func()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def drain(self) -> None:
        while self.pending:
            self.run_next()


@dataclass
class RecordingListener:
    """An AppListener that records what the table told it."""

    started: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def attempt_started(self, app: Application, attempt: Attempt) -> None:
        self.started.append(str(attempt.attempt_id))

    def attempt_recovered(self, app: Application, attempt: Attempt) -> None:
        self.recovered.append(str(attempt.attempt_id))

    def attempt_ended(self, app: Application, attempt: Attempt) -> None:
        self.ended.append(str(attempt.attempt_id))

    def app_finished(self, app: Application) -> None:
        self.finished.append(str(app.app_id))


def new_table(
    store: RMStateStore | None = None,
    limits: SchedulerLimits = SchedulerLimits(),
    clock: Clock | None = None,
    listener: AppListener | None = None,
) -> ApplicationTable:
    """A recovered (empty) table on a Clock at T0 with a memory store, telling ``listener`` of attempts."""
    if clock is None:
        clock = Clock()
        clock.advance(T0)
    return result_of(ApplicationTable.recover(clock, store or MemoryStateStore(), QueueTree(), limits, listener))


def submitted(table: ApplicationTable, **fields: Any) -> Application:
    """A new application submitted to the table (ACCEPTED with attempt 1 if all is well)."""
    user = fields.pop("user", "alice")
    app_id = result_of(table.new_application(user))
    return result_of(table.submit(Submission(app_id, user, **fields)))
