"""Hadoop IPC frames for tests, built and parsed the way the Java client does it.

Independent of ``cortex_rm.yarn_api``'s own encoders (only the shared ``*_pb2``
schemas are used), so a test that builds its input here checks our server against
a second implementation of the wire rules, not against itself::

    data = preamble() + context_frame(PROTOCOL) + call_frame(0, "echo", PROTOCOL, request)
    [reply] = ResponseReader().feed(server_output)
    assert reply.status == SUCCESS and reply.call_id == 0

It also holds a small test service (a protobuf ``ServiceDescriptor`` built at import
time over the common messages), so registry and server tests need no YARN protos.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import struct
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from cortex_rm.yarn_api.proto import IpcConnectionContext_pb2
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto, UserInformationProto
from cortex_rm.yarn_api.proto.ProtobufRpcEngine2_pb2 import RequestHeaderProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import (
    RpcKindProto,
    RpcRequestHeaderProto,
    RpcResponseHeaderProto,
    RpcSaslProto,
)

#: A 16-byte client id, as ``ClientId.getClientId()`` makes one per JVM.
CLIENT_ID = bytes(range(0x10, 0x20))
DUMMY_CLIENT_ID = b""
SUCCESS = RpcResponseHeaderProto.SUCCESS
ERROR = RpcResponseHeaderProto.ERROR
FATAL = RpcResponseHeaderProto.FATAL

CONTEXT_CALL_ID = -3
PING_CALL_ID = -4
SASL_CALL_ID = -33
AUTH_NONE = 0x00
AUTH_SASL = 0xDF

def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def delimited(message: Message | bytes) -> bytes:
    """``writeDelimitedTo``: varint length, then the message bytes."""
    raw = message if isinstance(message, (bytes, bytearray)) else message.SerializeToString()
    return varint(len(raw)) + bytes(raw)


def frame(*parts: bytes) -> bytes:
    """A frame: big-endian uint32 length of the concatenated parts, then the parts."""
    body = b"".join(parts)
    return struct.pack(">I", len(body)) + body


def preamble(auth: int = AUTH_NONE, *, version: int = 9, magic: bytes = b"hrpc", service_class: int = 0) -> bytes:
    """The 7-byte connection header ``hrpc | version | service class | auth``."""
    return magic + bytes((version, service_class, auth))


def request_header(
    call_id: int,
    *,
    client_id: bytes = CLIENT_ID,
    retry_count: int = 0,
    rpc_kind: object = RpcKindProto.RPC_PROTOCOL_BUFFER,
    rpc_op: object = RpcRequestHeaderProto.RPC_FINAL_PACKET,
) -> RpcRequestHeaderProto:
    """An ``RpcRequestHeaderProto``; pass ``rpc_kind=None``/``rpc_op=None`` to omit them."""
    header = RpcRequestHeaderProto(callId=call_id, clientId=client_id, retryCount=retry_count)
    if rpc_kind is not None:
        header.rpcKind = rpc_kind  # type: ignore[assignment]
    if rpc_op is not None:
        header.rpcOp = rpc_op  # type: ignore[assignment]
    return header


def context_frame(protocol: str | None, user: str | None = "alice", real_user: str | None = None) -> bytes:
    """The callId -3 connection context naming ``protocol`` and the SIMPLE user."""
    context = IpcConnectionContextProto()
    if protocol is not None:
        context.protocol = protocol
    if user is not None:
        context.userInfo.effectiveUser = user
    if real_user is not None:
        context.userInfo.realUser = real_user
    return frame(
        delimited(request_header(CONTEXT_CALL_ID, client_id=DUMMY_CLIENT_ID, retry_count=-1)), delimited(context)
    )


def call_frame(
    call_id: int,
    method: str,
    protocol: str,
    request: Message | bytes = b"",
    *,
    client_id: bytes = CLIENT_ID,
    retry_count: int = 0,
    version: int = 1,
) -> bytes:
    """A call: ``delim(RpcRequestHeaderProto) | delim(RequestHeaderProto) | delim(request)``."""
    rpc = RequestHeaderProto(methodName=method, declaringClassProtocolName=protocol, clientProtocolVersion=version)
    return frame(
        delimited(request_header(call_id, client_id=client_id, retry_count=retry_count)),
        delimited(rpc),
        delimited(request),
    )


def ping_frame() -> bytes:
    """The callId -4 keep-alive: a header and nothing else."""
    return frame(delimited(request_header(PING_CALL_ID, client_id=DUMMY_CLIENT_ID, retry_count=-1)))


def sasl_frame(message: RpcSaslProto) -> bytes:
    """A callId -33 SASL message."""
    return frame(delimited(request_header(SASL_CALL_ID, client_id=DUMMY_CLIENT_ID, retry_count=-1)), delimited(message))


# --- responses ------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


@dataclass
class ParsedResponse:
    """One reply frame: its header and, on SUCCESS, the raw response message bytes."""

    header: RpcResponseHeaderProto
    body: bytes | None
    raw: bytes = field(repr=False)

    @property
    def call_id(self) -> int:
        """The call id as the Java client reads it (the uint32 cast back to int)."""
        value = self.header.callId
        return value - (1 << 32) if value >= 1 << 31 else value

    @property
    def status(self) -> int:
        """SUCCESS, ERROR or FATAL."""
        return self.header.status

    @property
    def exception_class(self) -> str:
        """``exceptionClassName`` of an ERROR/FATAL reply."""
        return self.header.exceptionClassName

    def parse_body(self, message_type: type[Message]) -> Message:
        """Decode the SUCCESS body as ``message_type``."""
        assert self.body is not None, "no body: not a SUCCESS reply"
        return message_type.FromString(self.body)


class ResponseReader:
    """Reassembles reply frames from arbitrary chunks, checking their layout strictly.

    Like ``Client.receiveRpcResponse``: a SUCCESS frame holds exactly one delimited
    body after the header; ERROR and FATAL frames hold the header only.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[ParsedResponse]:
        """Add bytes; return every reply completed by them."""
        self._buffer += data
        replies = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack(">I", self._buffer[:4])
            if len(self._buffer) < 4 + length:
                break
            raw = self._buffer[4 : 4 + length]
            self._buffer = self._buffer[4 + length :]
            replies.append(parse_response(raw))
        return replies

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete frame still held."""
        return self._buffer


def parse_response(raw: bytes) -> ParsedResponse:
    """Parse one reply frame's payload (without its 4-byte length)."""
    hlen, pos = _read_varint(raw, 0)
    header = RpcResponseHeaderProto.FromString(raw[pos : pos + hlen])
    assert header.IsInitialized(), "response header lacks required fields"
    pos += hlen
    body = None
    if header.status == SUCCESS:
        blen, pos = _read_varint(raw, pos)
        body = raw[pos : pos + blen]
        assert len(body) == blen, "truncated response body"
        pos += blen
    assert pos == len(raw), f"RPC response length mismatch: {len(raw) - pos} bytes left over"
    return ParsedResponse(header, body, raw)


def parse_responses(data: bytes) -> list[ParsedResponse]:
    """Every reply in ``data``, which must end on a frame boundary."""
    reader = ResponseReader()
    replies = reader.feed(data)
    assert reader.pending == b"", f"{len(reader.pending)} bytes of an incomplete frame"
    return replies


# --- the client side of DIGEST-MD5 (RFC 2831), as Hadoop's SaslRpcClient drives it ---------------


def parse_challenge(challenge: bytes) -> dict[str, str]:
    """``name=value`` / ``name="value"`` pairs of a DIGEST-MD5 challenge (no escapes needed)."""
    return {m[0]: m[1] or m[2] for m in re.findall(r'([A-Za-z-]+)=(?:"([^"]*)"|([^,]*))', challenge.decode())}


def digest_md5_response(
    challenge: bytes,
    *,
    identifier: bytes,
    password: bytes,
    cnonce: str = "OA6MHXh6VqTrRk",
    digest_uri: str = "/default",
    nc: str = "00000001",
    authzid: str | None = None,
) -> tuple[bytes, bytes]:
    """The client's response to ``challenge`` and the ``rspauth=`` token it expects back.

    Written from RFC 2831 section 2.1.2.1 (md5-sess, qop=auth), with Hadoop's token
    convention: username = Base64(identifier), password = Base64(token password).
    The layout of the response is what the JDK client sends (yarn-wire-facts 2.3).
    """
    fields = parse_challenge(challenge)
    realm, nonce = fields["realm"], fields["nonce"]
    username = base64.b64encode(identifier).decode()
    secret = base64.b64encode(password).decode()

    def md5_hex(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()

    a1 = hashlib.md5(f"{username}:{realm}:{secret}".encode()).digest() + f":{nonce}:{cnonce}".encode()
    if authzid is not None:
        a1 += f":{authzid}".encode()
    ha1 = md5_hex(a1)
    response = md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{md5_hex(f'AUTHENTICATE:{digest_uri}'.encode())}".encode())
    rspauth = md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{md5_hex(f':{digest_uri}'.encode())}".encode())
    token = (
        f'charset=utf-8,username="{username}",realm="{realm}",nonce="{nonce}",nc={nc},'
        f'cnonce="{cnonce}",digest-uri="{digest_uri}",maxbuf=65536,response={response},qop=auth'
    )
    if authzid is not None:
        token += f',authzid="{authzid}"'
    return token.encode(), f"rspauth={rspauth}".encode()


def token_handshake(sock: socket.socket, protocol: str, identifier: bytes, password: bytes) -> None:
    """Authenticate a blocking socket as Hadoop's SaslRpcClient does with a token (NEGOTIATE,
    INITIATE with the DIGEST-MD5 response, SUCCESS), then send the connection context for
    ``protocol``; AssertionError if the server refuses."""
    reader = ResponseReader()

    def reply() -> RpcSaslProto:
        while True:
            replies = reader.feed(sock.recv(65536) or b"")
            if replies:
                [only] = replies
                assert only.body is not None, f"SASL refused: {only.header}"
                message = RpcSaslProto()
                message.ParseFromString(only.body)
                return message

    sock.sendall(preamble(AUTH_SASL) + sasl_frame(RpcSaslProto(state=RpcSaslProto.NEGOTIATE)))
    [token_auth] = [a for a in reply().auths if a.method == "TOKEN"]
    response, _ = digest_md5_response(token_auth.challenge, identifier=identifier, password=password)
    chosen = RpcSaslProto(state=RpcSaslProto.INITIATE, token=response)
    picked = chosen.auths.add()
    picked.CopyFrom(token_auth)
    picked.ClearField("challenge")
    sock.sendall(sasl_frame(chosen))
    assert reply().state == RpcSaslProto.SUCCESS
    sock.sendall(context_frame(protocol, user=None))


# --- a test service over the common messages ---------------------------------------------------

TEST_PROTOCOL = "org.apache.hadoop.cortex.test.EchoProtocolPB"


def _build_test_service() -> ServiceDescriptor:
    """``service EchoProtocolService`` with methods over IpcConnectionContext's messages.

    * ``whoAmI(IpcConnectionContextProto) -> UserInformationProto``
    * ``echoUser(UserInformationProto) -> UserInformationProto``
    * ``renewDelegationToken(UserInformationProto) -> UserInformationProto`` (for "unsupported")

    It is added to the default descriptor pool, so the message classes of its methods
    are the generated ``IpcConnectionContext_pb2`` classes.
    """
    pool = descriptor_pool.Default()
    name = "cortex_test/echo_protocol.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        service_file = descriptor_pb2.FileDescriptorProto(
            name=name,
            package="hadoop.cortex.test",
            dependency=[IpcConnectionContext_pb2.DESCRIPTOR.name],
            syntax="proto2",
        )
        service = service_file.service.add(name="EchoProtocolService")
        for method, request, response in (
            ("whoAmI", "IpcConnectionContextProto", "UserInformationProto"),
            ("echoUser", "UserInformationProto", "UserInformationProto"),
            ("renewDelegationToken", "UserInformationProto", "UserInformationProto"),
        ):
            service.method.add(
                name=method, input_type=f".hadoop.common.{request}", output_type=f".hadoop.common.{response}"
            )
        pool.AddSerializedFile(service_file.SerializeToString())
    return pool.FindServiceByName("hadoop.cortex.test.EchoProtocolService")


#: The test service (in the default pool, beside the generated messages).
TEST_SERVICE = _build_test_service()

__all__ = [
    "AUTH_NONE",
    "AUTH_SASL",
    "CLIENT_ID",
    "CONTEXT_CALL_ID",
    "DUMMY_CLIENT_ID",
    "ERROR",
    "FATAL",
    "PING_CALL_ID",
    "SASL_CALL_ID",
    "SUCCESS",
    "TEST_PROTOCOL",
    "TEST_SERVICE",
    "IpcConnectionContextProto",
    "ParsedResponse",
    "ResponseReader",
    "UserInformationProto",
    "call_frame",
    "context_frame",
    "delimited",
    "digest_md5_response",
    "frame",
    "parse_challenge",
    "parse_response",
    "parse_responses",
    "ping_frame",
    "preamble",
    "request_header",
    "sasl_frame",
    "varint",
]
