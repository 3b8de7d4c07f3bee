"""Errors on Hadoop's wire: the Java class names clients see, and how we raise them.

A Hadoop IPC reply that is not a success carries three things in its
``RpcResponseHeaderProto``: ``exceptionClassName`` (a fully qualified Java class
name), ``errorMsg`` and ``errorDetail`` (an ``RpcErrorCodeProto``).  The Java client
turns them into ``RemoteException(className, errorMsg)``; YARN's PB client stubs then
call ``RPCUtil.unwrapAndThrowException``, which loads the class by name and, when it
is a ``YarnException``/``IOException``/``RuntimeException`` with a public ``(String)``
constructor, throws an instance of it.  So the class *name* is the whole contract:
the constants below are facts of the wire, spelled exactly as the JVM spells them
(nested classes with ``$``).

Two kinds of error leave this package:

* :class:`RemoteError` -- an ``ERROR`` reply to one call; the connection stays open.
  Any RPC handler raises it to answer in Hadoop's form.
* :class:`FatalRpcError` -- a ``FATAL`` reply, after which the server closes the
  connection and the client fails every outstanding call.  Only the connection core
  raises it (bad frames, failed authentication, calls out of order).
"""

from __future__ import annotations

from typing import Final

from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcResponseHeaderProto

# --- YARN exceptions (hadoop-yarn-api: org.apache.hadoop.yarn.exceptions) ----------
YARN_EXCEPTION: Final = "org.apache.hadoop.yarn.exceptions.YarnException"
APPLICATION_NOT_FOUND: Final = "org.apache.hadoop.yarn.exceptions.ApplicationNotFoundException"
APPLICATION_ATTEMPT_NOT_FOUND: Final = (
    "org.apache.hadoop.yarn.exceptions.ApplicationAttemptNotFoundException"
)
CONTAINER_NOT_FOUND: Final = "org.apache.hadoop.yarn.exceptions.ContainerNotFoundException"
INVALID_APPLICATION_MASTER_REQUEST: Final = (
    "org.apache.hadoop.yarn.exceptions.InvalidApplicationMasterRequestException"
)
APPLICATION_MASTER_NOT_REGISTERED: Final = (
    "org.apache.hadoop.yarn.exceptions.ApplicationMasterNotRegisteredException"
)
INVALID_RESOURCE_REQUEST: Final = "org.apache.hadoop.yarn.exceptions.InvalidResourceRequestException"
INVALID_LABEL_RESOURCE_REQUEST: Final = "org.apache.hadoop.yarn.exceptions.InvalidLabelResourceRequestException"
INVALID_AUXSERVICE: Final = "org.apache.hadoop.yarn.exceptions.InvalidAuxServiceException"

# --- Hadoop common: IPC and security ------------------------------------------------
STANDBY_EXCEPTION: Final = "org.apache.hadoop.ipc.StandbyException"
RETRIABLE_EXCEPTION: Final = "org.apache.hadoop.ipc.RetriableException"
ACCESS_CONTROL_EXCEPTION: Final = "org.apache.hadoop.security.AccessControlException"
AUTHORIZATION_EXCEPTION: Final = "org.apache.hadoop.security.authorize.AuthorizationException"
INVALID_TOKEN: Final = "org.apache.hadoop.security.token.SecretManager$InvalidToken"
SASL_EXCEPTION: Final = "javax.security.sasl.SaslException"
RPC_NO_SUCH_METHOD: Final = "org.apache.hadoop.ipc.RpcNoSuchMethodException"
RPC_NO_SUCH_PROTOCOL: Final = "org.apache.hadoop.ipc.RpcNoSuchProtocolException"
RPC_VERSION_MISMATCH: Final = "org.apache.hadoop.ipc.RPC$VersionMismatch"
RPC_SERVER_EXCEPTION: Final = "org.apache.hadoop.ipc.RpcServerException"
IPC_EXCEPTION: Final = "org.apache.hadoop.ipc.IpcException"
REMOTE_EXCEPTION: Final = "org.apache.hadoop.ipc.RemoteException"
IO_EXCEPTION: Final = "java.io.IOException"

# --- RpcResponseHeaderProto.RpcErrorCodeProto (non-fatal < 10 <= fatal) -------------
ErrorCode = RpcResponseHeaderProto.RpcErrorCodeProto
"""An ``RpcErrorCodeProto`` value: the ``errorDetail`` of an ERROR or FATAL reply."""

ERROR_APPLICATION: Final = RpcResponseHeaderProto.ERROR_APPLICATION
ERROR_NO_SUCH_METHOD: Final = RpcResponseHeaderProto.ERROR_NO_SUCH_METHOD
ERROR_NO_SUCH_PROTOCOL: Final = RpcResponseHeaderProto.ERROR_NO_SUCH_PROTOCOL
ERROR_RPC_SERVER: Final = RpcResponseHeaderProto.ERROR_RPC_SERVER
ERROR_SERIALIZING_RESPONSE: Final = RpcResponseHeaderProto.ERROR_SERIALIZING_RESPONSE
ERROR_RPC_VERSION_MISMATCH: Final = RpcResponseHeaderProto.ERROR_RPC_VERSION_MISMATCH
FATAL_UNKNOWN: Final = RpcResponseHeaderProto.FATAL_UNKNOWN
FATAL_UNSUPPORTED_SERIALIZATION: Final = RpcResponseHeaderProto.FATAL_UNSUPPORTED_SERIALIZATION
FATAL_INVALID_RPC_HEADER: Final = RpcResponseHeaderProto.FATAL_INVALID_RPC_HEADER
FATAL_DESERIALIZING_REQUEST: Final = RpcResponseHeaderProto.FATAL_DESERIALIZING_REQUEST
FATAL_VERSION_MISMATCH: Final = RpcResponseHeaderProto.FATAL_VERSION_MISMATCH
FATAL_UNAUTHORIZED: Final = RpcResponseHeaderProto.FATAL_UNAUTHORIZED

_ERROR_CODES: Final = frozenset(RpcResponseHeaderProto.RpcErrorCodeProto.values())
_FIRST_FATAL_CODE: Final = FATAL_UNKNOWN


class YarnApiError(Exception):
    """Base of every error the ``yarn_api`` package raises on purpose."""


class RemoteError(YarnApiError):
    """An ``ERROR`` reply to one call, in Hadoop's form; the connection stays open.

    Raise it from an RPC handler (or fail its Deferred with it)::

        raise RemoteError(APPLICATION_NOT_FOUND, f"Application with id '{app_id}' doesn't exist in RM.")

    ``java_class`` is the fully qualified Java class the client will instantiate,
    ``message`` becomes ``errorMsg`` (Java's ``getMessage()``), and ``error_detail``
    is a non-fatal ``RpcErrorCodeProto`` (``ERROR_APPLICATION`` for anything a
    handler decides; the others are used by the IPC layer itself).
    """

    def __init__(self, java_class: str, message: str, error_detail: ErrorCode = ERROR_APPLICATION) -> None:
        if error_detail not in _ERROR_CODES or error_detail >= _FIRST_FATAL_CODE:
            raise ValueError(f"{error_detail!r} is not a non-fatal RpcErrorCodeProto value")
        if not java_class:
            raise ValueError("java_class must name a Java exception class")
        super().__init__(f"{java_class}: {message}")
        self.java_class = java_class
        self.message = message
        self.error_detail = error_detail


class FatalRpcError(YarnApiError):
    """A ``FATAL`` reply: the server answers it, then closes the connection.

    ``call_id`` is the call id the reply carries: the id of the frame that caused it
    when it was readable (-3 for the connection context, -33 for SASL), else -1
    (``RpcConstants.AUTHORIZATION_FAILED_CALL_ID``), as Hadoop's ``Server`` does.
    ``retry_count`` is echoed the same way (-1 when unknown).
    """

    def __init__(
        self,
        java_class: str,
        message: str,
        error_detail: ErrorCode,
        *,
        call_id: int = -1,
        retry_count: int = -1,
    ) -> None:
        if error_detail not in _ERROR_CODES or error_detail < _FIRST_FATAL_CODE:
            raise ValueError(f"{error_detail!r} is not a fatal RpcErrorCodeProto value")
        super().__init__(f"{java_class}: {message}")
        self.java_class = java_class
        self.message = message
        self.error_detail = error_detail
        self.call_id = call_id
        self.retry_count = retry_count

    def for_call(self, call_id: int, retry_count: int) -> FatalRpcError:
        """The same error, answered under another call id (once the header is known)."""
        return FatalRpcError(
            self.java_class, self.message, self.error_detail, call_id=call_id, retry_count=retry_count
        )


def unsupported_method(method: str) -> RemoteError:
    """The answer to a method that the protocol declares but Cortex does not implement."""
    return RemoteError(YARN_EXCEPTION, f"{method} is not supported by Cortex")


def internal_error(exc: BaseException, method: str) -> RemoteError:
    """What a client sees when a handler fails with an exception nobody meant to raise.

    The class is ``YarnException`` so that YARN's client stubs rethrow it as such (with
    our message) instead of retrying it as an I/O failure; the message names the
    method and the Python exception, which is all a user needs to report it.
    """
    return RemoteError(
        YARN_EXCEPTION,
        f"Cortex failed to serve {method}: {type(exc).__name__}: {exc}",
    )
