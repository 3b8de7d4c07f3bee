"""Thread pools the roles give their cores, so blocking work (SQL, files) never runs on the reactor.

A core takes a ``Runner`` (``yarn/blocking.py``); a role makes one here and
starts and stops the pool with itself.  One thread keeps work in the order it
was issued (the RM's state store, the ring's neighbour log); more let
independent work overlap (the NodeManager's localizations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from cortex_rm.yarn.blocking import Runner

T = TypeVar("T")


def thread_runner(
    reactor: IReactorFromThreads, name: str = "rm-state-store", threads: int = 1
) -> tuple[Runner, ThreadPool]:
    """A runner backed by a pool of at most ``threads`` threads (one: work runs in issue order)."""
    pool = ThreadPool(minthreads=min(1, threads), maxthreads=threads, name=name)

    def run(func: Callable[[], T]) -> defer.Deferred[T]:
        return deferToThreadPool(reactor, pool, func)

    return run, pool
