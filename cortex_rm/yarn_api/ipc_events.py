"""What the IPC connection core reports: its states and the events it returns.

:meth:`~cortex_rm.yarn_api.ipc_connection.IpcConnection.receive` returns a list of
:data:`IpcEvent`, in the order the edge must act on them:

* :class:`SendBytes` -- write these bytes;
* :class:`IncomingCall` -- run ``method.handler(context, request)`` and send its reply;
* :class:`StateChanged` -- one per lifecycle transition, for the logs;
* :class:`CloseConnection` -- at most one, last: flush what was written, then close.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

from google.protobuf.message import Message

from cortex_rm.yarn_api.errors import FatalRpcError
from cortex_rm.yarn_api.rpc_protocol import CallContext, RpcMethod


class ConnectionState(enum.Enum):
    """Where a connection is in its lifecycle (see ``ipc_connection``'s docstring)."""

    AWAIT_PREAMBLE = "AWAIT_PREAMBLE"
    SASL_NEGOTIATION = "SASL_NEGOTIATION"
    AWAIT_CONTEXT = "AWAIT_CONTEXT"
    READY = "READY"
    CLOSED = "CLOSED"


#: Every legal transition; anything else is a bug in the core and raises.
TRANSITIONS: Mapping[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.AWAIT_PREAMBLE: frozenset(
        {ConnectionState.SASL_NEGOTIATION, ConnectionState.AWAIT_CONTEXT, ConnectionState.CLOSED}
    ),
    ConnectionState.SASL_NEGOTIATION: frozenset({ConnectionState.AWAIT_CONTEXT, ConnectionState.CLOSED}),
    ConnectionState.AWAIT_CONTEXT: frozenset({ConnectionState.READY, ConnectionState.CLOSED}),
    ConnectionState.READY: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class SendBytes:
    """Write ``data`` to the peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A decoded call to run: ``method.handler(context, request)``."""

    context: CallContext
    method: RpcMethod
    request: Message


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The connection moved from ``old`` to ``new`` (for the edge to log)."""

    old: ConnectionState
    new: ConnectionState


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close after flushing; ``error`` is the FATAL reply already queued (None for HTTP).

    ``refusal`` names the port limit that closed it (an ``ipc_limits`` reason), for the
    rate-limited refusal log; None for a protocol error.
    """

    error: FatalRpcError | None
    reason: str
    refusal: str | None = None


IpcEvent = Union[SendBytes, IncomingCall, StateChanged, CloseConnection]
