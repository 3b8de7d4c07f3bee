"""How a role asks the composition root for a listening port."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.policies import WrappingFactory

from cortex_rm.yarn.addresses import HostPort

Listen = Callable[[str, HostPort, IProtocolFactory], HostPort]
"""``listen(name, configured address, factory)``: listen there and return the bound address.

The composition root implements it: it records every bound address under ``name``
(``ready.json``) and turns a port already in use into an error that says which key
of which configuration file to change."""


class TrackedConnections(WrappingFactory):
    """A factory whose accepted connections can all be cut at once (a role that stops serving while the
    daemon runs: closing a listening port leaves the connections it accepted open)."""

    def __init__(self, wrapped: IProtocolFactory) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]  # twisted's is untyped

    def abort_all(self) -> None:
        for wrapper in list(self.protocols):
            if wrapper.transport is not None:
                wrapper.transport.abortConnection()
