"""One Hadoop IPC server connection as a sans-IO state machine: bytes in, events out.

States and transitions (``Server.Connection`` in Hadoop is the reference)::

    AWAIT_PREAMBLE --"hrpc" 09 00 00 (NONE)--------------------------> AWAIT_CONTEXT
    AWAIT_PREAMBLE --"hrpc" 09 00 DF (SASL)--------------------------> SASL_NEGOTIATION
    SASL_NEGOTIATION --SIMPLE chosen / TOKEN authenticated-----------> AWAIT_CONTEXT
    AWAIT_CONTEXT --callId -3 IpcConnectionContextProto (served)-----> READY
    any --FATAL reply sent, HTTP GET answered, or transport lost-----> CLOSED

Frames by state (callId of the RpcRequestHeaderProto; "FATAL" = reply FATAL, close)::

                        call (>= 0)         context (-3)          SASL (-33)          ping (-4)
    SASL_NEGOTIATION    FATAL no context    FATAL during SASL     negotiate           ignored
    AWAIT_CONTEXT       FATAL no context    accept -> READY       FATAL (SASL over)   ignored
    READY               dispatch            FATAL already read    FATAL (SASL over)   ignored
    (any other negative callId is FATAL "Unknown out of band call"; CLOSED ignores all input)

Every frame is ``uint32 length | delim(RpcRequestHeaderProto) | ...``; the length is
checked against ``max_data_length`` as soon as its four bytes arrive, before any of
the body is kept.  A frame is kept only as far as it has arrived, charged to the port's
:class:`~cortex_rm.yarn_api.ipc_limits.BufferBudget`; one it cannot hold is refused FATAL
``RetriableException`` when declared or as its bytes arrive (frames arriving whole in
one read are never charged).  Undecodable headers and bodies are FATAL_DESERIALIZING_REQUEST;
headers whose ``rpcOp``/``rpcKind`` is missing or not FINAL/PROTOCOL_BUFFER are
FATAL_INVALID_RPC_HEADER.  A call naming an unknown protocol, protocol version or
method gets an ERROR reply and the connection goes on, as in Hadoop.

:meth:`IpcConnection.receive` returns, in order: :class:`SendBytes` (write these),
:class:`IncomingCall` (run the handler, then send :meth:`IpcConnection.success_reply`
or :meth:`IpcConnection.error_reply`, in any order), :class:`StateChanged` (one per
transition, for logs) and at most one final :class:`CloseConnection` (flush what was
written, then close).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import FatalRpcError, RemoteError
from cortex_rm.yarn_api.ipc_decoding import fatal, proto_text, read_header, read_part
from cortex_rm.yarn_api.ipc_events import (
    TRANSITIONS,
    CloseConnection,
    ConnectionState,
    IncomingCall,
    IpcEvent,
    SendBytes,
    StateChanged,
)
from cortex_rm.yarn_api.ipc_limits import BUFFER_BUDGET_EXHAUSTED, BufferAccount, OverBudget, over_budget
from cortex_rm.yarn_api.ipc_wire import (
    AUTH_PROTOCOL_NONE,
    AUTH_PROTOCOL_SASL,
    CALL_ID_CONNECTION_CONTEXT,
    CALL_ID_PING,
    CALL_ID_SASL,
    CURRENT_VERSION,
    DEFAULT_MAX_DATA_LENGTH,
    HTTP_GET,
    HTTP_NOT_FOUND_REPLY,
    INVALID_RETRY_COUNT,
    PREAMBLE_LENGTH,
    RPC_MAGIC,
    failure_frame,
    success_frame,
)
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto
from cortex_rm.yarn_api.proto.ProtobufRpcEngine2_pb2 import RequestHeaderProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcRequestHeaderProto, RpcSaslProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext, RpcProtocol, refusal
from cortex_rm.yarn_api.sasl import NegotiationState, SaslNegotiation, SaslRejected, SaslServer

_MAX_FRAME_LIMIT = 0x7FFFFFFF  # Java reads the length as a signed int


# An action of the frame table: (connection, header, buf, view, payload start, frame stop, events).
_FrameAction = Callable[["IpcConnection", RpcRequestHeaderProto, bytes, memoryview, int, int, "list[IpcEvent]"], None]


class IpcConnection:
    """The server side of one IPC connection (see the module docstring).

    ``protocols`` maps ``...PB`` protocol names to what this port serves; ``peer`` is
    only used in messages and in every :class:`CallContext`.
    """

    def __init__(
        self,
        protocols: Mapping[str, RpcProtocol],
        sasl_server: SaslServer,
        *,
        peer: str,
        max_data_length: int = DEFAULT_MAX_DATA_LENGTH,
        account: BufferAccount | None = None,
    ) -> None:
        if not 0 < max_data_length <= _MAX_FRAME_LIMIT:
            raise ValueError(f"max_data_length must be in 1..{_MAX_FRAME_LIMIT}, not {max_data_length}")
        self.protocols = protocols
        self.sasl_server = sasl_server
        self.peer = peer
        self.max_data_length = max_data_length
        self.state = ConnectionState.AWAIT_PREAMBLE
        #: Calls handed out as IncomingCall and not yet answered.
        self.outstanding = 0
        #: SIMPLE until a TOKEN (DIGEST-MD5) authentication succeeds.
        self.auth_method = AuthMethod.SIMPLE
        self.token_identifier: bytes | None = None
        self.protocol_name: str | None = None
        self.effective_user: str | None = None
        self.real_user: str | None = None
        self._negotiation: SaslNegotiation | None = None
        # Unconsumed input: chunks, their total size, and how many bytes are needed
        # before parsing can make progress (so a large frame is joined only once).
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = PREAMBLE_LENGTH
        self._events: list[IpcEvent] | None = None  # the list receive() is filling
        #: The port's buffer budget, charged with what this connection keeps (None: unbounded).
        self.account = account
        #: Whole frames read so far (the edge's frame timeout watches it move).
        self.frames_read = 0

    # --- input ------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[IpcEvent]:
        """Consume bytes from the peer; return what to do, in order."""
        events: list[IpcEvent] = []
        if self.state is ConnectionState.CLOSED or not data:
            return events
        if self._chunks or len(data) < self._needed:
            kept = self._buffered + len(data)
            if kept < self._needed:
                # Still short of a whole frame: hold the bytes, within the port's budget.
                if self.account is not None and not self.account.claim(kept, self._needed):
                    self._events = events
                    try:
                        self._close_with(over_budget(self.account, self._needed), events, BUFFER_BUDGET_EXHAUSTED)
                    finally:
                        self._events = None
                    return events
                self._chunks.append(data)
                self._buffered = kept
                self._hold(kept)
                return events
            self._chunks.append(data)
            buf = b"".join(self._chunks)
            self._chunks = []
            self._buffered = 0
        else:
            buf = data
        end = len(buf)
        pos = 0
        needed = 4
        self._events = events
        try:
            if self.state is ConnectionState.AWAIT_PREAMBLE:
                pos = self._read_preamble(buf, events)
                if pos == 0:
                    needed = PREAMBLE_LENGTH
            if self.state is not ConnectionState.AWAIT_PREAMBLE:
                mv = memoryview(buf)
                limit = self.max_data_length
                while not self.closed:
                    if end - pos < 4:
                        break
                    length = int.from_bytes(buf[pos : pos + 4], "big")
                    if length > limit:
                        raise FatalRpcError(
                            errors.RPC_SERVER_EXCEPTION,
                            f"Requested data length {length} is longer than maximum configured RPC length "
                            f"{limit}.  RPC came from {self.peer}",
                            errors.FATAL_INVALID_RPC_HEADER,
                        )
                    stop = pos + 4 + length
                    if stop > end:
                        # A frame declared but not all here: refused now if the port's
                        # budget could never hold it; its bytes are counted as they come.
                        needed = stop - pos
                        if self.account is not None and not self.account.claim(needed, needed):
                            raise over_budget(self.account, needed)
                        break
                    self._on_frame(buf, mv, pos + 4, stop, events)
                    self.frames_read += 1
                    pos = stop
        except FatalRpcError as fatal:
            self._close_with(fatal, events, BUFFER_BUDGET_EXHAUSTED if isinstance(fatal, OverBudget) else None)
        finally:
            self._events = None
        if not self.closed and pos < end:
            rest = buf[pos:]
            self._chunks.append(rest)
            self._buffered = len(rest)
            self._hold(len(rest))
        else:
            self._hold(0)
        self._needed = needed
        return events

    @property
    def pending_bytes(self) -> int:
        """Bytes received and kept, waiting for the rest of their frame (or preamble)."""
        return self._buffered

    def refuse(self, java_class: str, message: str, reason: str) -> list[IpcEvent]:
        """Close the connection from outside its input (a limit, a timeout): FATAL ``java_class``, then close.

        ``reason`` is the refusal's name for the rate-limited log; nothing if already closed.
        """
        events: list[IpcEvent] = []
        if self.closed:
            return events
        self._events = events
        try:
            self._close_with(FatalRpcError(java_class, message, errors.FATAL_UNKNOWN), events, reason)
        finally:
            self._events = None
        return events

    def _hold(self, amount: int) -> None:
        if self.account is not None:
            self.account.hold(amount)

    @property
    def closed(self) -> bool:
        """True once the connection is CLOSED (input ignored, replies dropped)."""
        return self.state is ConnectionState.CLOSED

    def connection_lost(self) -> None:
        """The transport is gone: later replies are dropped."""
        if self.state is not ConnectionState.CLOSED:
            self._move(ConnectionState.CLOSED)
        self._chunks = []
        self._buffered = 0
        self._hold(0)

    def _read_preamble(self, buf: bytes, events: list[IpcEvent]) -> int:
        """Handle ``hrpc | version | service class | auth``; 0 if more bytes are needed."""
        if buf[:4] == HTTP_GET:
            events.append(SendBytes(HTTP_NOT_FOUND_REPLY))
            self._move(ConnectionState.CLOSED)
            events.append(CloseConnection(None, "HTTP request on an IPC port"))
            return len(buf)
        if len(buf) < PREAMBLE_LENGTH:
            return 0
        version, auth = buf[4], buf[6]
        if buf[:4] != RPC_MAGIC or version != CURRENT_VERSION:
            raise FatalRpcError(
                errors.RPC_VERSION_MISMATCH,
                f"Server IPC version {CURRENT_VERSION} cannot communicate with client version {version}",
                errors.FATAL_VERSION_MISMATCH,
            )
        if auth == AUTH_PROTOCOL_NONE:
            if not self.sasl_server.simple_allowed:
                raise FatalRpcError(
                    errors.ACCESS_CONTROL_EXCEPTION,
                    f"SIMPLE authentication is not enabled.  Available:{self.sasl_server.describe_methods()}",
                    errors.FATAL_UNAUTHORIZED,
                )
            self._move(ConnectionState.AWAIT_CONTEXT)
        elif auth == AUTH_PROTOCOL_SASL:
            self._negotiation = self.sasl_server.start()
            self._move(ConnectionState.SASL_NEGOTIATION)
        else:
            signed = auth - 256 if auth > 127 else auth
            raise FatalRpcError(errors.IPC_EXCEPTION, f"Unknown auth protocol:{signed}", errors.FATAL_UNAUTHORIZED)
        return PREAMBLE_LENGTH

    def _on_frame(self, buf: bytes, mv: memoryview, start: int, stop: int, events: list[IpcEvent]) -> None:
        header, hstop = read_header(buf, mv, start, stop)
        call_id = header.callId
        on_call, on_context, on_sasl = _FRAME_ACTIONS[self.state]
        if call_id >= 0:
            on_call(self, header, buf, mv, hstop, stop, events)
        elif call_id == CALL_ID_CONNECTION_CONTEXT:
            on_context(self, header, buf, mv, hstop, stop, events)
        elif call_id == CALL_ID_SASL:
            on_sasl(self, header, buf, mv, hstop, stop, events)
        elif call_id != CALL_ID_PING:  # pings keep the connection alive; no reply
            raise fatal(
                errors.RPC_SERVER_EXCEPTION,
                f"Unknown out of band call #{call_id}",
                errors.FATAL_INVALID_RPC_HEADER,
                header,
            )

    # --- frames by kind -----------------------------------------------------------------

    def _on_call(
        self, header: RpcRequestHeaderProto, buf: bytes, mv: memoryview, pos: int, stop: int, events: list[IpcEvent]
    ) -> None:
        unreadable = "IPC server unable to read call parameters: Error decoding"
        rpc, rstop = read_part(RequestHeaderProto, buf, mv, pos, stop, header, f"{unreadable} RequestHeaderProto")
        protocol = self.protocols.get(rpc.declaringClassProtocolName)
        method = protocol.methods.get(rpc.methodName) if protocol is not None else None
        if protocol is None or method is None or rpc.clientProtocolVersion != protocol.version:
            error = refusal(
                protocol, rpc.declaringClassProtocolName, rpc.methodName, rpc.clientProtocolVersion, self.protocol_name
            )
            events.append(SendBytes(self._error_frame(header.callId, header.clientId, header.retryCount, error)))
            return
        what = f"{unreadable} {method.request_type.DESCRIPTOR.name} for {rpc.methodName}"
        request, _ = read_part(method.request_type, buf, mv, rstop, stop, header, what, last=True)
        context = CallContext(
            self.peer,
            protocol.name,
            method.name,
            header.callId,
            header.clientId,
            header.retryCount,
            self.effective_user,
            self.real_user,
            self.auth_method,
            self.token_identifier,
        )
        self.outstanding += 1
        events.append(IncomingCall(context, method, request))

    def _on_context(
        self, header: RpcRequestHeaderProto, buf: bytes, mv: memoryview, pos: int, stop: int, events: list[IpcEvent]
    ) -> None:
        context, _ = read_part(
            IpcConnectionContextProto, buf, mv, pos, stop, header, "Error decoding IpcConnectionContextProto"
        )
        # Hadoop checks the context's protocol only under service-level authorization
        # (``Server.authorize``), answering FATAL_UNAUTHORIZED with AuthorizationException;
        # a port of ours serves a fixed set of protocols, so it always checks.
        if not context.HasField("protocol"):
            raise fatal(
                errors.AUTHORIZATION_EXCEPTION, "Null protocol not authorized", errors.FATAL_UNAUTHORIZED, header
            )
        if context.protocol not in self.protocols:
            raise fatal(
                errors.AUTHORIZATION_EXCEPTION,
                f"Unknown protocol: {context.protocol}",
                errors.FATAL_UNAUTHORIZED,
                header,
            )
        self.protocol_name = context.protocol
        user = context.userInfo
        self.effective_user = proto_text(user.effectiveUser) if user.HasField("effectiveUser") else None
        self.real_user = proto_text(user.realUser) if user.HasField("realUser") else None
        self._move(ConnectionState.READY)

    def _on_sasl(
        self, header: RpcRequestHeaderProto, buf: bytes, mv: memoryview, pos: int, stop: int, events: list[IpcEvent]
    ) -> None:
        negotiation = self._negotiation
        if negotiation is None or negotiation.state is NegotiationState.SIMPLE_CHOSEN:
            raise fatal(
                errors.RPC_SERVER_EXCEPTION,
                "SASL protocol not requested by client",
                errors.FATAL_INVALID_RPC_HEADER,
                header,
            )
        message, _ = read_part(RpcSaslProto, buf, mv, pos, stop, header, "Error decoding RpcSaslProto")
        try:
            step = negotiation.receive(message)
        except SaslRejected as exc:
            raise exc.for_call(header.callId, header.retryCount) from exc
        if step.reply is not None:
            events.append(SendBytes(success_frame(CALL_ID_SASL, b"", INVALID_RETRY_COUNT, step.reply.SerializeToString())))
        if step.outcome is not None:
            self.auth_method = step.outcome.auth_method
            self.token_identifier = step.outcome.token_identifier
            self._move(ConnectionState.AWAIT_CONTEXT)

    # --- output ---------------------------------------------------------------------------

    def success_reply(self, call: CallContext, body: bytes) -> bytes:
        """The SUCCESS frame answering ``call`` with serialized ``body`` (b"" once closed)."""
        self.outstanding -= 1
        if self.state is ConnectionState.CLOSED:
            return b""
        return success_frame(call.call_id, call.client_id, call.retry_count, body)

    def error_reply(self, call: CallContext, error: RemoteError) -> bytes:
        """The ERROR frame answering ``call`` with ``error`` (b"" once closed)."""
        self.outstanding -= 1
        if self.state is ConnectionState.CLOSED:
            return b""
        return self._error_frame(call.call_id, call.client_id, call.retry_count, error)

    @staticmethod
    def _error_frame(call_id: int, client_id: bytes, retry_count: int, error: RemoteError) -> bytes:
        return failure_frame(
            call_id=call_id,
            fatal=False,
            java_class=error.java_class,
            message=error.message,
            error_detail=error.error_detail,
            client_id=client_id,
            retry_count=retry_count,
        )

    def _close_with(self, fatal: FatalRpcError, events: list[IpcEvent], refusal: str | None = None) -> None:
        # Hadoop answers a FATAL with a dummy (empty) client id and the header's retry count.
        events.append(
            SendBytes(
                failure_frame(
                    call_id=fatal.call_id,
                    fatal=True,
                    java_class=fatal.java_class,
                    message=fatal.message,
                    error_detail=fatal.error_detail,
                    retry_count=fatal.retry_count,
                )
            )
        )
        self._move(ConnectionState.CLOSED)
        events.append(CloseConnection(fatal, fatal.message, refusal))
        self._chunks = []
        self._buffered = 0
        self._hold(0)

    def _move(self, new: ConnectionState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal IPC connection transition {self.state.name} -> {new.name}")
        if self._events is not None:
            self._events.append(StateChanged(self.state, new))
        self.state = new


def _refusing(message: str) -> _FrameAction:
    """The action for a frame its state does not accept: FATAL ``message``, then close."""

    def refuse(connection: IpcConnection, header: RpcRequestHeaderProto, *_: object) -> None:
        raise fatal(errors.RPC_SERVER_EXCEPTION, message, errors.FATAL_INVALID_RPC_HEADER, header)

    return refuse


_NO_CONTEXT = _refusing("Connection context not established")

#: The frame table of the module docstring: state -> (call, context, SASL) actions.
#: Pings are ignored in every state; other negative call ids are always FATAL.
_FRAME_ACTIONS: Mapping[ConnectionState, tuple[_FrameAction, _FrameAction, _FrameAction]] = {
    ConnectionState.SASL_NEGOTIATION: (
        _NO_CONTEXT,
        _refusing("Connection header sent during SASL negotiation"),
        IpcConnection._on_sasl,
    ),
    ConnectionState.AWAIT_CONTEXT: (_NO_CONTEXT, IpcConnection._on_context, IpcConnection._on_sasl),
    ConnectionState.READY: (
        IpcConnection._on_call,
        _refusing("Connection context already processed"),
        IpcConnection._on_sasl,
    ),
}
