"""How an IPC port refuses connections: a FATAL and close, and rate-limited, sanitised logs.

:class:`RefusedConnection` answers a connection over the port's caps with Hadoop's own
form of refusal (a FATAL ``RetriableException``) and closes it.

Refusals are counted and logged per interval by ``yarn.refusal_log.RefusalLog`` (re-exported
here with ``sanitised`` and ``PROTOCOL_ERRORS_SUPPRESSED``), whose reasons are ``ipc_limits``'
constants.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol

from cortex_rm.yarn.refusal_log import PROTOCOL_ERRORS_SUPPRESSED as PROTOCOL_ERRORS_SUPPRESSED
from cortex_rm.yarn.refusal_log import RefusalLog as RefusalLog
from cortex_rm.yarn.refusal_log import sanitised as sanitised
from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.ipc_wire import CALL_ID_AUTHORIZATION_FAILED, failure_frame

class RefusedConnection(Protocol):
    """A connection over a cap: one FATAL ``RetriableException`` frame, then close; input is ignored.

    Sent before the client's preamble arrives: Hadoop's Java client reads a FATAL header
    whenever it comes (in its SASL exchange or its response reader), closes the
    connection and fails its calls with the named exception, which YARN's retry
    policies retry after their back-off.
    """

    def __init__(self, message: str) -> None:
        self._reply = failure_frame(
            call_id=CALL_ID_AUTHORIZATION_FAILED,
            fatal=True,
            java_class=errors.RETRIABLE_EXCEPTION,
            message=message,
            error_detail=errors.FATAL_UNKNOWN,
        )

    def connectionMade(self) -> None:
        """Answer and close at once."""
        assert self.transport is not None
        self.transport.write(self._reply)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Ignored: the connection is closing."""
