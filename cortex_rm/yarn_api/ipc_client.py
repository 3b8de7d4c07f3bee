"""A Hadoop IPC (RPC v9) client: how the RM calls a NodeManager (``startContainers``
for an ApplicationMaster, ``stopContainers``), as YARN's AMLauncher does.

``IpcClientConnection`` is the sans-IO core: it produces the preamble, the connection
context and call frames, and turns received bytes into replies.  ``IpcClient`` is the
Twisted edge: one TCP connection, calls multiplexed on it, a Deferred per call that
fires with the decoded response or fails with ``RemoteError`` (an ERROR reply),
``FatalRpcError`` (a FATAL reply, after which the connection is closed) or
``IpcClientError`` (the connection broke).

Without a token the connection's auth is NONE and it names its user.  With one it
authenticates as Hadoop's ``SaslRpcClient`` does with a token: the SASL preamble,
NEGOTIATE, then the server's TOKEN/DIGEST-MD5 challenge answered in INITIATE and its
``rspauth`` checked in SUCCESS (``digest_md5.DigestMd5Client``); calls made meanwhile
wait, and go after the connection context (which names no user: the token does).
A server that offers no TOKEN, or cannot prove it knows the token's password, ends the
connection with ``IpcClientError``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP, ITransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from cortex_rm.yarn.tokens import Token
from cortex_rm.yarn_api.digest_md5 import DigestMd5Client, DigestMd5Failure
from cortex_rm.yarn_api.errors import (
    ERROR_APPLICATION,
    FATAL_UNKNOWN,
    REMOTE_EXCEPTION,
    FatalRpcError,
    RemoteError,
)
from cortex_rm.yarn_api.ipc_wire import (
    AUTH_PROTOCOL_NONE,
    AUTH_PROTOCOL_SASL,
    CALL_ID_CONNECTION_CONTEXT,
    CALL_ID_SASL,
    CURRENT_VERSION,
    DEFAULT_MAX_DATA_LENGTH,
    INVALID_RETRY_COUNT,
    RPC_MAGIC,
    WireFormatError,
    delimited_bounds,
    encode_varint,
)
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto
from cortex_rm.yarn_api.proto.ProtobufRpcEngine2_pb2 import RequestHeaderProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import (
    RpcKindProto,
    RpcRequestHeaderProto,
    RpcResponseHeaderProto,
    RpcSaslProto,
)
from cortex_rm.yarn_api.rpc_protocol import AuthMethod
from cortex_rm.yarn_api.sasl import MECHANISM_DIGEST_MD5

M = TypeVar("M", bound=Message)


class IpcClientError(Exception):
    """The connection failed or the server's bytes made no sense."""


def _delimited(raw: bytes) -> bytes:
    return encode_varint(len(raw)) + raw


def _frame(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", len(body)) + body


@dataclass(frozen=True)
class Reply:
    """One reply: its call id, the header, and (on SUCCESS) the response bytes."""

    call_id: int
    header: RpcResponseHeaderProto
    body: bytes


class IpcClientConnection:
    """The client side of one IPC connection, without I/O."""

    def __init__(
        self,
        protocol: str,
        user: str,
        *,
        token: Token | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        max_data_length: int = DEFAULT_MAX_DATA_LENGTH,
    ) -> None:
        self.protocol = protocol
        self.user = user
        self.client_id = random_bytes(16)
        self.max_data_length = max_data_length
        self._next_call_id = 0
        self._buffer = bytearray()
        self._digest = (
            None if token is None else DigestMd5Client(token.identifier, token.password, random_bytes=random_bytes)
        )
        #: Calls may go out: no token, or SASL has succeeded.
        self.authenticated = token is None
        self._held: list[bytes] = []  # call frames made before that
        self._outbox = bytearray()
        self._initiated = False

    def _header(self, call_id: int, retry_count: int = 0) -> bytes:
        header = RpcRequestHeaderProto(
            rpcKind=RpcKindProto.RPC_PROTOCOL_BUFFER,
            rpcOp=RpcRequestHeaderProto.RPC_FINAL_PACKET,
            callId=call_id,
            clientId=self.client_id,
            retryCount=retry_count,
        )
        return _delimited(header.SerializeToString())

    def opening_bytes(self) -> bytes:
        """Without a token: the preamble (auth NONE) and the connection context naming the
        protocol and user.  With one: the SASL preamble and NEGOTIATE."""
        if self._digest is None:
            preamble = RPC_MAGIC + bytes((CURRENT_VERSION, 0, AUTH_PROTOCOL_NONE))
            return preamble + self._context_frame(self.user)
        preamble = RPC_MAGIC + bytes((CURRENT_VERSION, 0, AUTH_PROTOCOL_SASL))
        return preamble + self._sasl_frame(RpcSaslProto(state=RpcSaslProto.NEGOTIATE))

    def _context_frame(self, user: str | None) -> bytes:
        context = IpcConnectionContextProto(protocol=self.protocol)
        if user is not None:
            context.userInfo.effectiveUser = user
        return _frame(self._header(CALL_ID_CONNECTION_CONTEXT, INVALID_RETRY_COUNT), _delimited(context.SerializeToString()))

    def _sasl_frame(self, message: RpcSaslProto) -> bytes:
        return _frame(self._header(CALL_ID_SASL, INVALID_RETRY_COUNT), _delimited(message.SerializeToString()))

    def call_bytes(self, method: str, request: Message) -> tuple[int, bytes]:
        """A new call id and the frame that carries ``method(request)`` (empty while SASL is
        still going on: the frame waits and comes out of :meth:`outgoing` after it)."""
        call_id = self._next_call_id
        self._next_call_id += 1
        rpc = RequestHeaderProto(methodName=method, declaringClassProtocolName=self.protocol, clientProtocolVersion=1)
        frame = _frame(self._header(call_id), _delimited(rpc.SerializeToString()), _delimited(request.SerializeToString()))
        if not self.authenticated:
            self._held.append(frame)
            return call_id, b""
        return call_id, frame

    def outgoing(self) -> bytes:
        """What :meth:`receive` decided to send (SASL's answers, then the held calls)."""
        out, self._outbox = bytes(self._outbox), bytearray()
        return out

    def _sasl(self, reply: Reply) -> None:
        """One SASL message from the server (a SUCCESS reply under call id -33)."""
        assert self._digest is not None
        try:
            message = RpcSaslProto.FromString(reply.body)
        except DecodeError as e:
            raise IpcClientError(f"malformed SASL message from the server: {e}") from None
        if message.state == RpcSaslProto.NEGOTIATE and not self._initiated:
            offered = [a for a in message.auths if a.method == AuthMethod.TOKEN.value and a.mechanism == MECHANISM_DIGEST_MD5]
            if not offered or not offered[0].HasField("challenge"):
                methods = ", ".join(a.method for a in message.auths) or "none"
                raise IpcClientError(f"the server does not offer TOKEN (DIGEST-MD5) authentication (it offers {methods})")
            chosen = RpcSaslProto.SaslAuth()
            chosen.CopyFrom(offered[0])
            chosen.ClearField("challenge")
            try:
                answer = self._digest.respond(offered[0].challenge, f"{chosen.protocol}/{chosen.serverId}")
            except DigestMd5Failure as e:
                raise IpcClientError(str(e)) from None
            self._initiated = True
            self._outbox += self._sasl_frame(RpcSaslProto(state=RpcSaslProto.INITIATE, auths=[chosen], token=answer))
            return
        if message.state == RpcSaslProto.SUCCESS and self._initiated and not self.authenticated:
            try:
                self._digest.check(message.token)
            except DigestMd5Failure as e:
                raise IpcClientError(str(e)) from None
            self.authenticated = True
            self._outbox += self._context_frame(None)  # the token names the caller
            for frame in self._held:
                self._outbox += frame
            self._held = []
            return
        state = RpcSaslProto.SaslState.Name(message.state)
        raise IpcClientError(f"unexpected SASL {state} from the server (a token was to be used)")

    def receive(self, data: bytes) -> list[Reply]:
        """Every complete reply in ``data`` plus what was buffered before."""
        self._buffer += data
        replies = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if length > self.max_data_length:
                raise IpcClientError(f"reply of {length} bytes exceeds the {self.max_data_length}-byte limit")
            if len(self._buffer) < 4 + length:
                break
            frame = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            try:
                start, end = delimited_bounds(frame, 0, len(frame))
                header = RpcResponseHeaderProto.FromString(frame[start:end])
                body = b""
                if header.status == RpcResponseHeaderProto.SUCCESS:
                    b_start, b_end = delimited_bounds(frame, end, len(frame))
                    body = frame[b_start:b_end]
            except (WireFormatError, DecodeError) as e:
                raise IpcClientError(f"malformed reply from the server: {e}") from None
            call_id = header.callId - (1 << 32) if header.callId >= 1 << 31 else header.callId
            if not self.authenticated and header.status != RpcResponseHeaderProto.FATAL:
                # only SASL may come before the server has proved it knows the token (a FATAL
                # refusal is delivered as one, failing every call)
                if call_id != CALL_ID_SASL or header.status != RpcResponseHeaderProto.SUCCESS:
                    raise IpcClientError(
                        f"the server answered call {call_id} before authenticating "
                        f"({RpcResponseHeaderProto.RpcStatusProto.Name(header.status)}: "
                        f"{header.exceptionClassName} {header.errorMsg})".rstrip()
                    )
                self._sasl(Reply(call_id, header, body))
                continue
            replies.append(Reply(call_id, header, body))
        return replies


def _text(value: str | bytes) -> str:
    # proto2 does not check UTF-8: Python's protobuf gives such a field as bytes
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def server_error(header: RpcResponseHeaderProto) -> RemoteError | FatalRpcError:
    """The error an ERROR or FATAL reply reports, as Hadoop's client reads it: whatever error code
    the server put (one of the other kind included) and a ``RemoteException`` if it named no class."""
    java_class = _text(header.exceptionClassName) or REMOTE_EXCEPTION
    message, detail = _text(header.errorMsg), header.errorDetail
    if header.status == RpcResponseHeaderProto.FATAL:
        return FatalRpcError(java_class, message, detail if detail >= FATAL_UNKNOWN else FATAL_UNKNOWN)
    return RemoteError(java_class, message, detail if detail < FATAL_UNKNOWN else ERROR_APPLICATION)


class _ClientProtocol(Protocol):
    def __init__(self, core: IpcClientConnection) -> None:
        self.core = core
        self.pending: dict[int, tuple[defer.Deferred[Any], type[Message]]] = {}
        self.closed: Failure | None = None

    @property
    def connected_transport(self) -> ITransport:
        """The transport, which a protocol has from connectionMade until connectionLost."""
        assert self.transport is not None
        return self.transport

    def connectionMade(self) -> None:
        self.connected_transport.write(self.core.opening_bytes())

    def call(self, method: str, request: Message, response_type: type[M]) -> defer.Deferred[M]:
        if self.closed is not None:
            return defer.fail(IpcClientError(f"connection closed: {self.closed.getErrorMessage()}"))
        call_id, frame = self.core.call_bytes(method, request)
        d: defer.Deferred[M] = defer.Deferred()
        self.pending[call_id] = (d, response_type)
        if frame:
            self.connected_transport.write(frame)
        return d

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self.core.receive(data)
        except IpcClientError as e:
            self.connected_transport.loseConnection()
            self._fail_all(Failure(e))
            return
        out = self.core.outgoing()
        if out:
            self.connected_transport.write(out)
        for reply in replies:
            self._deliver(reply)

    def _deliver(self, reply: Reply) -> None:
        header = reply.header
        if header.status == RpcResponseHeaderProto.FATAL:
            error = server_error(header)
            self.connected_transport.loseConnection()
            self._fail_all(Failure(error))
            return
        entry = self.pending.pop(reply.call_id, None)
        if entry is None:
            return  # a reply to a call we gave up on
        d, response_type = entry
        if header.status == RpcResponseHeaderProto.ERROR:
            d.errback(server_error(header))
            return
        try:
            d.callback(response_type.FromString(reply.body))
        except DecodeError as e:
            d.errback(IpcClientError(f"undecodable {response_type.DESCRIPTOR.name}: {e}"))

    def _fail_all(self, failure: Failure) -> None:
        self.closed = failure
        pending, self.pending = self.pending, {}
        for d, _ in pending.values():
            d.errback(failure)

    def connectionLost(self, reason: Failure = Failure(ConnectionError("connection lost"))) -> None:
        if self.closed is None:
            self._fail_all(Failure(IpcClientError(f"connection lost: {reason.getErrorMessage()}")))


class IpcClient:
    """One connection to a Hadoop IPC server for one protocol."""

    def __init__(self, protocol: _ClientProtocol) -> None:
        self._protocol = protocol

    @classmethod
    def connect(
        cls,
        reactor: IReactorTCP,
        host: str,
        port: int,
        protocol: str,
        user: str,
        timeout: float = 10,
        token: Token | None = None,
    ) -> defer.Deferred[IpcClient]:
        """Fires with a connected ``IpcClient`` (or fails with the connection error); with a
        ``token`` its calls go once SASL has authenticated it (see the module docstring)."""
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        core = IpcClientConnection(protocol, user, token=token)
        d: defer.Deferred[_ClientProtocol] = connectProtocol(endpoint, _ClientProtocol(core))
        return d.addCallback(cls)

    def call(self, method: str, request: Message, response_type: type[M]) -> defer.Deferred[M]:
        """Fires with the decoded response; fails with RemoteError (ERROR) or FatalRpcError (FATAL)."""
        return self._protocol.call(method, request, response_type)

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.loseConnection()
