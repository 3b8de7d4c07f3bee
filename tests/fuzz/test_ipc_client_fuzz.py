"""Fuzzing the IPC client (how the RM calls NodeManagers) with what a broken or hostile server sends.

A client connection over a ``StringTransport`` makes two calls, then reads random
bytes or mutations of valid replies (SUCCESS, ERROR and FATAL frames, SASL messages
for a token connection), cut anywhere:

* nothing escapes ``dataReceived`` (an exception there would leave the calls hanging);
* each call's Deferred fires with its response, ``RemoteError``, ``FatalRpcError`` or
  ``IpcClientError``, or is still waiting on an open connection: once the client
  closes the connection, none is left waiting;
* the core (``IpcClientConnection.receive``) raises only ``IpcClientError``, and never
  buffers more than one reply of its maximum length.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from cortex_rm.yarn.tokens import Token
from cortex_rm.yarn_api.errors import FatalRpcError, RemoteError
from cortex_rm.yarn_api.ipc_client import IpcClientConnection, IpcClientError, _ClientProtocol
from cortex_rm.yarn_api.ipc_wire import encode_varint, failure_frame, success_frame
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcResponseHeaderProto, RpcSaslProto
from tests.fuzz.fuzzing import chunked, fuzz_settings, mutated
from tests.fuzz.messages import protobuf_messages

MAX_REPLY = 1024
R = RpcResponseHeaderProto
ERROR_CODES = [v.number for v in R.RpcErrorCodeProto.DESCRIPTOR.values]


def _raw_frame(header: RpcResponseHeaderProto, body: bytes | None) -> bytes:
    """A reply frame with any header (required fields or not) and an optional delimited body."""
    raw = header.SerializePartialToString()
    payload = encode_varint(len(raw)) + raw + (b"" if body is None else encode_varint(len(body)) + body)
    return len(payload).to_bytes(4, "big") + payload


replies = st.one_of(
    st.builds(
        lambda call_id, user: success_frame(call_id, b"c" * 16, 0, user.SerializeToString()),
        st.sampled_from([0, 1, 2, -33, 7]),
        st.builds(UserInformationProto, effectiveUser=st.text(max_size=8)),
    ),
    st.builds(
        lambda call_id, fatal, detail, java_class: failure_frame(
            call_id=call_id,
            fatal=fatal,
            java_class=java_class,
            message="m",
            error_detail=detail,  # type: ignore[arg-type]
        ),
        st.sampled_from([0, 1, -1, -33]),
        st.booleans(),
        st.sampled_from(ERROR_CODES),
        st.sampled_from(["java.io.IOException", ""]),
    ),
    st.builds(_raw_frame, protobuf_messages(RpcResponseHeaderProto), st.none() | st.binary(max_size=12)),
    st.binary(max_size=16),
)
streams = st.lists(st.one_of(replies, mutated(replies, max_mutations=2)), min_size=1, max_size=4).map(b"".join)


def _outcomes(deferreds: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for d in deferreds:
        box: list[Any] = []
        d.addBoth(box.append)
        seen.append(box[0] if box else None)
        if box and isinstance(box[0], Failure):
            box[0].trap(RemoteError, FatalRpcError, IpcClientError)  # anything else is re-raised here
    return seen


def _client(token: Token | None = None) -> tuple[_ClientProtocol, StringTransport, list[Any]]:
    core = IpcClientConnection("org.apache.hadoop.yarn.api.ContainerManagementProtocolPB", "yarn", token=token,
                               random_bytes=lambda n: b"\x01" * n, max_data_length=MAX_REPLY)  # fmt: skip
    protocol = _ClientProtocol(core)
    transport = StringTransport()
    protocol.makeConnection(transport)
    calls = [protocol.call("echo", UserInformationProto(effectiveUser="a"), UserInformationProto) for _ in range(2)]
    return protocol, transport, calls


@fuzz_settings(180)
@given(stream=streams, cuts=st.lists(st.integers(0, 1 << 10), max_size=4))
@example(
    stream=_raw_frame(R(callId=0, status=R.ERROR, exceptionClassName="x", errorDetail=R.ERROR_APPLICATION), None),
    cuts=[],
).via("a well-formed ERROR reply")
@example(
    stream=_raw_frame(R(callId=0, status=R.FATAL, exceptionClassName="x", errorDetail=R.ERROR_APPLICATION), None),
    cuts=[],
).via("a FATAL reply with a non-fatal error code")
@example(
    stream=_raw_frame(R(callId=0, status=R.ERROR, exceptionClassName="x", errorDetail=R.FATAL_UNAUTHORIZED), None),
    cuts=[],
).via("an ERROR reply with a fatal error code")
@example(
    stream=_raw_frame(R(callId=1, status=R.ERROR, exceptionClassName="", errorDetail=R.ERROR_APPLICATION), None),
    cuts=[],
).via("an ERROR reply naming no exception class")
def test_any_server_bytes_settle_or_leave_the_calls_waiting(stream: bytes, cuts: list[int]) -> None:
    """Whatever the server sends: no exception out of dataReceived; each call answered or failed in the
    client's terms, or still waiting on an open connection."""
    protocol, transport, calls = _client()
    for chunk in chunked(stream, cuts):
        if transport.disconnecting:
            break  # Twisted reads no more once the protocol has closed the connection
        protocol.dataReceived(chunk)
        if not transport.disconnecting:
            assert len(protocol.core._buffer) <= MAX_REPLY + 4, "more than one reply buffered"
    outcomes = _outcomes(calls)
    if transport.disconnecting:
        assert None not in outcomes, "the connection is closed but a call still waits"


sasl_replies = st.one_of(
    st.builds(lambda m: success_frame(-33, b"", -1, m.SerializePartialToString()), protobuf_messages(RpcSaslProto)),
    replies,
)


@fuzz_settings(100)
@given(
    stream=st.lists(st.one_of(sasl_replies, mutated(sasl_replies, max_mutations=2)), min_size=1, max_size=3).map(
        b"".join
    )
)
def test_a_token_connection_authenticates_or_fails_its_calls(stream: bytes) -> None:
    """A token connection reading anything before authentication: calls wait, or fail with the client's
    errors once it closes; no exception out of dataReceived."""
    protocol, transport, calls = _client(Token(b"id", b"pw", "kind", "service"))
    protocol.dataReceived(stream)
    outcomes = _outcomes(calls)
    if transport.disconnecting:
        assert None not in outcomes


@fuzz_settings(140)
@given(stream=streams)
def test_the_core_raises_only_client_errors(stream: bytes) -> None:
    """IpcClientConnection.receive over any bytes: replies, or IpcClientError."""
    core = IpcClientConnection("p", "yarn", random_bytes=lambda n: b"\x01" * n, max_data_length=MAX_REPLY)
    try:
        core.receive(stream)
    except IpcClientError:
        pass
