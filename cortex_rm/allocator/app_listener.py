"""The application table's seam to the scheduler: who hears when attempts start and end."""

from __future__ import annotations

from typing import Protocol

from cortex_rm.allocator.app_model import Application, Attempt


class AppListener(Protocol):
    """Who must act when attempts start and end (the scheduler glue)."""

    def attempt_started(self, app: Application, attempt: Attempt) -> None:
        """A new attempt needs its AM container."""

    def attempt_recovered(self, app: Application, attempt: Attempt) -> None:
        """After a restart: ``attempt``'s AM container was placed before it; the attempt goes on,
        waiting for its AM to register again and its nodes to report its containers."""

    def attempt_ended(self, app: Application, attempt: Attempt) -> None:
        """An attempt is over: release everything it holds."""

    def app_finished(self, app: Application) -> None:
        """The application reached a final state: clean up after it on the nodes."""


class NoListener:
    """The listener of a table nobody schedules for (front ends and the table tested alone)."""

    def attempt_started(self, app: Application, attempt: Attempt) -> None:
        pass

    def attempt_recovered(self, app: Application, attempt: Attempt) -> None:
        pass

    def attempt_ended(self, app: Application, attempt: Attempt) -> None:
        pass

    def app_finished(self, app: Application) -> None:
        pass
