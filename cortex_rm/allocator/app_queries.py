"""What clients ask of the application table: the filters of getApplications and GET /apps, and the counts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.app_states import PENDING_APP_STATES, AppState, FinalStatus


def elapsed_ms(app: Application, now_ms: int) -> int:
    """Hadoop's ``Times.elapsed`` for an application: start to finish, or to now while it runs; 0 unstarted."""
    started, finished = app.start_time_ms, app.finish_time_ms
    if finished > 0 and started > 0:
        return max(finished - started, 0)
    return max(now_ms - started, 0) if started > 0 else 0


def tracking_link(url: str) -> str:
    """A tracking URL as a link: with its scheme (an AM may register ``host:port/path``)."""
    return url if "://" in url else "http://" + url


@dataclass(frozen=True)
class ApplicationFilter:
    """getApplications / GET /apps filters; empty sets match everything."""

    types: frozenset[str] = frozenset()
    states: frozenset[AppState] = frozenset()
    users: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    final_statuses: frozenset[FinalStatus] = frozenset()
    name: str | None = None
    started_begin: int = 0
    started_end: int = 2**63 - 1
    finished_begin: int = 0
    finished_end: int = 2**63 - 1
    limit: int = 0  # 0: no limit

    def select(self, apps: Iterable[Application]) -> list[Application]:
        """The matching applications in id order, at most ``limit`` of them."""
        found = [a for a in sorted(apps, key=lambda a: a.app_id) if self.matches(a)]
        return found[: self.limit] if self.limit > 0 else found

    def matches(self, app: Application) -> bool:
        if self.types and app.app_type.lower() not in {t.lower() for t in self.types}:
            return False
        if self.states and app.reported_state not in self.states:
            return False
        if self.users and app.user not in self.users:
            return False
        if self.queues and not self._queue_matches(app.queue):
            return False
        if self.tags and not ({t.lower() for t in self.tags} & {t.lower() for t in app.tags}):
            return False
        if self.final_statuses and app.final_status not in self.final_statuses:
            return False
        if self.name is not None and app.name != self.name:
            return False
        if not self.started_begin <= app.start_time_ms <= self.started_end:
            return False
        return self.finished_begin <= app.finish_time_ms <= self.finished_end

    def _queue_matches(self, queue: str) -> bool:
        """``queue`` is how the app shows its leaf: the short name if unique, else the full path.

        A filter may name the leaf either way, so ``root.default`` matches an app shown as ``default``.
        """
        short = queue.rsplit(".", 1)[-1]
        return any(q == queue or q == short or q.endswith("." + queue) for q in self.queues)


@dataclass(frozen=True)
class AppCounts:
    """Applications by the state clients see (the apps* figures of the cluster metrics)."""

    submitted: int
    completed: int
    pending: int
    running: int
    failed: int
    killed: int

    @classmethod
    def of(cls, apps: Iterable[Application]) -> AppCounts:
        states = [a.reported_state for a in apps]
        return cls(
            submitted=len(states),
            completed=sum(1 for s in states if s is AppState.FINISHED),  # YARN: killed and failed apart
            pending=sum(1 for s in states if s in PENDING_APP_STATES),
            running=sum(1 for s in states if s is AppState.RUNNING),
            failed=sum(1 for s in states if s is AppState.FAILED),
            killed=sum(1 for s in states if s is AppState.KILLED),
        )
