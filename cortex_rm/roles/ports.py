"""How a role asks the composition root for a listening port."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IProtocolFactory

from cortex_rm.yarn.addresses import HostPort

Listen = Callable[[str, HostPort, IProtocolFactory], HostPort]
"""``listen(name, configured address, factory)``: listen there and return the bound address.

The composition root implements it: it records every bound address under ``name``
(``ready.json``) and turns a port already in use into an error that says which key
of which configuration file to change."""
