"""The events' errors, one base: what a trigger can be refused for (the REST API maps each to a status)."""

from __future__ import annotations

RETRY_AFTER_S = 1


class EventError(Exception):
    """Base of the events' refusals; the message says what happened and what to do."""


class FunctionNotFound(EventError):
    """No such function (never registered, or deleted): 404."""


class NotAllowed(EventError):
    """The caller may not do this to the function: 403."""


class AllBusy(EventError):
    """Every executor's queue, or a bound of the entry node's store (activations, bytes, per user), is full: 429."""

    def __init__(self, message: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoExecutor(EventError):
    """No executor could take the activation (none reachable, or every one refused): 503."""
