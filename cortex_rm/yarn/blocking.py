"""The seam through which cores run blocking work (disk, database) off the reactor thread.

A core that must touch the disk takes a ``Runner``: ``run(fn)`` calls the blocking
``fn`` somewhere else (a thread pool in the daemon, inline in unit tests) and
returns a Deferred that fires with its result on the reactor thread.  The roles
make the thread pools (``roles/threads.py``); the cores never import one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


class Runner(Protocol):
    """``run(fn)``: call the blocking ``fn`` elsewhere; a Deferred that fires on the reactor with its result."""

    def __call__(self, func: Callable[[], T], /) -> Deferred[T]: ...
