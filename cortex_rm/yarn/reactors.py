"""The reactor as each layer takes it: an interface naming what it uses, never the global reactor.

The cores take ``IReactorTime`` (timers and the clock), the container runtime
``IReactorTimeProcess``; the wire takes ``IReactorTimeTCP`` (timers and TCP
connections); the roles and the composition root take ``INodeReactor``.  Only the entry point (``node.run_node``) imports the
global reactor, and says once which interfaces it provides.  Tests pass
``twisted.internet.task.Clock`` or ``MemoryReactorClock`` where these are asked for.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorProcess,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUNIX,
)


class IReactorTimeTCP(IReactorTime, IReactorTCP):
    """Timers and TCP: what a protocol endpoint with timeouts needs."""


class IReactorTimeProcess(IReactorTime, IReactorProcess):
    """Timers and child processes: what a container runtime needs."""


class INodeReactor(IReactorTimeTCP, IReactorTimeProcess, IReactorThreads, IReactorCore, IReactorUNIX):
    """Everything a daemon's roles use: timers, TCP, child processes (containers), threads, start and stop,
    and Unix sockets (functions' sandboxes talk to the node through one)."""
