"""The IPC client's token authentication (how the RM's AM launcher proves an NMToken), its
sans-IO core against the server's own SASL policy: every SASL message the client writes is
read back from its frames and answered by a ``SaslServer`` negotiation, as on the wire."""

from __future__ import annotations

import struct

import pytest

from cortex_rm.yarn.tokens import Token
from cortex_rm.yarn_api.ipc_client import IpcClientConnection, IpcClientError
from cortex_rm.yarn_api.ipc_wire import AUTH_PROTOCOL_SASL, CALL_ID_SASL, delimited_bounds
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcRequestHeaderProto, RpcResponseHeaderProto, RpcSaslProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod
from cortex_rm.yarn_api.sasl import SaslNegotiation, SaslServer

IDENTIFIER, PASSWORD = b"an NMToken identifier", b"its password"
TOKEN = Token(IDENTIFIER, PASSWORD, "NMToken", "127.0.0.1:45454")
PROTOCOL = "org.apache.hadoop.yarn.api.ContainerManagementProtocolPB"


def frames(data: bytes) -> list[tuple[RpcRequestHeaderProto, list[bytes]]]:
    """Each frame's request header and the delimited parts after it."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        body, pos = data[pos + 4 : pos + 4 + length], pos + 4 + length
        start, end = delimited_bounds(body, 0, len(body))
        header, parts = RpcRequestHeaderProto.FromString(body[start:end]), []
        while end < len(body):
            start, end = delimited_bounds(body, end, len(body))
            parts.append(body[start:end])
        out.append((header, parts))
    return out


def sasl_reply(message: RpcSaslProto) -> bytes:
    """The server's SUCCESS frame carrying ``message`` under call id -33."""
    header = RpcResponseHeaderProto(callId=CALL_ID_SASL & 0xFFFFFFFF, status=RpcResponseHeaderProto.SUCCESS)
    body = b""
    for part in (header.SerializeToString(), message.SerializeToString()):
        body += _varint(len(part)) + part
    return struct.pack(">I", len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes((value,))


def client_sasl(data: bytes) -> RpcSaslProto:
    ((header, (message,)),) = frames(data)
    assert header.callId == CALL_ID_SASL
    return RpcSaslProto.FromString(message)


def negotiate(server: SaslNegotiation, client: IpcClientConnection) -> RpcSaslProto:
    """Preamble and NEGOTIATE from the client; the server's answer fed back; the client's INITIATE."""
    opening = client.opening_bytes()
    assert opening[:4] == b"hrpc" and opening[6] == AUTH_PROTOCOL_SASL
    step = server.receive(client_sasl(opening[7:]))
    assert step.reply is not None
    assert client.receive(sasl_reply(step.reply)) == []
    return client_sasl(client.outgoing())


def test_a_token_client_authenticates_then_sends_the_context_and_the_calls_it_held() -> None:
    server = SaslServer(lambda identifier: PASSWORD if identifier == IDENTIFIER else None, allow_simple=False).start()
    client = IpcClientConnection(PROTOCOL, "appattempt_1700000000000_0001_000001", token=TOKEN)
    call_id, frame = client.call_bytes("getContainerStatuses", ys.GetContainerStatusesRequestProto())
    assert frame == b"" and not client.authenticated  # held until SASL is done
    initiate = negotiate(server, client)
    assert initiate.state == RpcSaslProto.INITIATE
    assert [(a.method, a.mechanism) for a in initiate.auths] == [("TOKEN", "DIGEST-MD5")]
    step = server.receive(initiate)
    assert step.outcome is not None and step.outcome.auth_method is AuthMethod.TOKEN
    assert step.outcome.token_identifier == IDENTIFIER
    assert step.reply is not None
    client.receive(sasl_reply(step.reply))  # SUCCESS with rspauth: checked
    assert client.authenticated
    (context_header, (context,)), (call_header, _) = frames(client.outgoing())
    assert context_header.callId == -3 and call_header.callId == call_id
    parsed = IpcConnectionContextProto.FromString(context)
    assert parsed.protocol == PROTOCOL and not parsed.HasField("userInfo")  # the token names the caller
    assert client.call_bytes("stopContainers", ys.StopContainersRequestProto())[1] != b""  # later calls go at once


def test_a_server_that_offers_no_token_authentication_is_left() -> None:
    server = SaslServer.simple_only().start()  # answers NEGOTIATE with SUCCESS: "use SIMPLE"
    client = IpcClientConnection(PROTOCOL, "appattempt_1700000000000_0001_000001", token=TOKEN)
    step = server.receive(client_sasl(client.opening_bytes()[7:]))
    assert step.reply is not None
    with pytest.raises(IpcClientError, match="unexpected SASL SUCCESS"):
        client.receive(sasl_reply(step.reply))
    assert not client.authenticated


def test_a_server_that_cannot_prove_the_password_is_left() -> None:
    """A server's SUCCESS whose rspauth was not made with the token's password (an impostor
    that accepts anything) does not authenticate the connection: no call goes to it."""
    server = SaslServer(lambda identifier: b"another password", allow_simple=False).start()
    client = IpcClientConnection(PROTOCOL, "appattempt_1700000000000_0001_000001", token=TOKEN)
    client.call_bytes("stopContainers", ys.StopContainersRequestProto())
    negotiate(server, client)
    impostor = RpcSaslProto(state=RpcSaslProto.SUCCESS, token=b"rspauth=" + b"0" * 32)
    with pytest.raises(IpcClientError, match="rspauth"):
        client.receive(sasl_reply(impostor))
    assert not client.authenticated and client.outgoing() == b""


@pytest.mark.parametrize("status", ["SUCCESS", "ERROR"])
def test_no_answer_to_a_call_is_taken_before_the_server_has_authenticated(status: str) -> None:
    """A server that answers the held call (or errs) instead of finishing SASL is left: the call
    is never taken as answered by a server that has not proved the token's password."""
    server = SaslServer(lambda identifier: PASSWORD, allow_simple=False).start()
    client = IpcClientConnection(PROTOCOL, "appattempt_1700000000000_0001_000001", token=TOKEN)
    call_id, _ = client.call_bytes("startContainers", ys.StartContainersRequestProto())
    negotiate(server, client)
    header = RpcResponseHeaderProto(callId=call_id, status=getattr(RpcResponseHeaderProto, status))
    body = _varint(header.ByteSize()) + header.SerializeToString()
    if status == "SUCCESS":
        reply = ys.StartContainersResponseProto().SerializeToString()
        body += _varint(len(reply)) + reply
    with pytest.raises(IpcClientError, match="before authenticating"):
        client.receive(struct.pack(">I", len(body)) + body)
    assert not client.authenticated
