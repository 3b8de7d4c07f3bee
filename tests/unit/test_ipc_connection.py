"""The sans-IO IPC connection core: framing, call order, dispatch and every FATAL path.

Input is built with ``tests/support/ipc_frames`` the way Hadoop's Java client builds
it; output is parsed the way the Java client parses it (strict lengths).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.ipc_connection import IpcConnection
from cortex_rm.yarn_api.ipc_events import (
    TRANSITIONS,
    CloseConnection,
    ConnectionState,
    IncomingCall,
    IpcEvent,
    SendBytes,
    StateChanged,
)
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto, UserInformationProto
from cortex_rm.yarn_api.proto.ProtobufRpcEngine2_pb2 import RequestHeaderProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcKindProto, RpcRequestHeaderProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext, RpcProtocol
from cortex_rm.yarn_api.sasl import SaslServer
from tests.support.ipc_frames import (
    CLIENT_ID,
    ERROR,
    FATAL,
    SUCCESS,
    TEST_PROTOCOL,
    TEST_SERVICE,
    ParsedResponse,
    call_frame,
    context_frame,
    delimited,
    frame,
    parse_responses,
    ping_frame,
    preamble,
    request_header,
)

BOB = UserInformationProto(effectiveUser="bob", realUser="carol")


def echo_user(call: CallContext, request: UserInformationProto) -> UserInformationProto:
    """Answer with the request itself."""
    return request


def who_am_i(call: CallContext, request: IpcConnectionContextProto) -> UserInformationProto:
    """Answer with the connection's user as the server saw it."""
    return UserInformationProto(effectiveUser=call.effective_user or "")


PROTOCOL = RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": echo_user, "whoAmI": who_am_i})
HANDSHAKE = preamble() + context_frame(TEST_PROTOCOL)


def new_connection(max_data_length: int = 1 << 20) -> IpcConnection:
    """A connection of a simple-only port serving the test protocol."""
    return IpcConnection({PROTOCOL.name: PROTOCOL}, SaslServer.simple_only(), peer="10.0.0.7:4711", max_data_length=max_data_length)


@dataclass
class Outcome:
    """What a stream of input produced, with every call answered in order."""

    events: list[IpcEvent] = field(default_factory=list)
    output: bytes = b""
    calls: list[IncomingCall] = field(default_factory=list)
    close: CloseConnection | None = None

    @property
    def replies(self) -> list[ParsedResponse]:
        """The output parsed as reply frames (must end on a frame boundary)."""
        return parse_responses(self.output)


def drive(connection: IpcConnection, *chunks: bytes, answer: bool = True) -> Outcome:
    """Feed ``chunks`` one at a time; answer each call with its handler when ``answer``."""
    outcome = Outcome()
    for chunk in chunks:
        for event in connection.receive(chunk):
            outcome.events.append(event)
            if isinstance(event, SendBytes):
                outcome.output += event.data
            elif isinstance(event, IncomingCall):
                outcome.calls.append(event)
                if answer:
                    response = event.method.handler(event.context, event.request)
                    outcome.output += connection.success_reply(event.context, response.SerializeToString())
            elif isinstance(event, CloseConnection):
                assert outcome.close is None, "two CloseConnection events"
                outcome.close = event
    return outcome


def single_fatal(outcome: Outcome) -> ParsedResponse:
    """The one FATAL reply that ended the connection."""
    assert outcome.close is not None
    fatal = outcome.replies[-1]
    assert fatal.status == FATAL
    assert fatal.header.serverIpcVersionNum == 9
    assert fatal.header.clientId == b""  # Hadoop's FATAL replies carry the dummy client id
    assert isinstance(outcome.events[-1], CloseConnection)
    return fatal


# --- normal calls ---------------------------------------------------------------------------


def test_a_call_is_answered_with_its_ids_echoed() -> None:
    """SUCCESS echoes callId, clientId and retryCount, and carries exactly one body."""
    connection = new_connection()
    outcome = drive(connection, HANDSHAKE + call_frame(5, "echoUser", TEST_PROTOCOL, BOB, retry_count=2))
    [reply] = outcome.replies
    assert (reply.call_id, reply.status) == (5, SUCCESS)
    assert reply.header.clientId == CLIENT_ID
    assert reply.header.retryCount == 2
    assert reply.header.serverIpcVersionNum == 9
    assert reply.parse_body(UserInformationProto) == BOB
    assert connection.state is ConnectionState.READY
    assert connection.outstanding == 0


def test_call_context_carries_connection_and_call_identity() -> None:
    """Handlers see peer, protocol, method, ids, SIMPLE user and no token."""
    connection = new_connection()
    outcome = drive(
        connection,
        preamble() + context_frame(TEST_PROTOCOL, user="root", real_user="yarn") + call_frame(9, "whoAmI", TEST_PROTOCOL),
        answer=False,
    )
    [call] = outcome.calls
    assert call.context == CallContext(
        peer="10.0.0.7:4711",
        protocol=TEST_PROTOCOL,
        method="whoAmI",
        call_id=9,
        client_id=CLIENT_ID,
        retry_count=0,
        effective_user="root",
        real_user="yarn",
        auth_method=AuthMethod.SIMPLE,
        token_identifier=None,
    )
    assert call.request == IpcConnectionContextProto()
    assert connection.outstanding == 1


def test_empty_response_is_the_single_byte_zero() -> None:
    """An empty response message travels as one 0x00 byte after the header."""
    connection = new_connection()
    outcome = drive(connection, HANDSHAKE + call_frame(0, "echoUser", TEST_PROTOCOL, UserInformationProto()))
    [reply] = outcome.replies
    assert reply.body == b""
    assert reply.raw.endswith(b"\x00")


def test_state_changes_are_reported_in_order() -> None:
    """PREAMBLE -> AWAIT_CONTEXT -> READY, each reported once as it happens."""
    outcome = drive(new_connection(), HANDSHAKE)
    assert [e for e in outcome.events if isinstance(e, StateChanged)] == [
        StateChanged(ConnectionState.AWAIT_PREAMBLE, ConnectionState.AWAIT_CONTEXT),
        StateChanged(ConnectionState.AWAIT_CONTEXT, ConnectionState.READY),
    ]


def test_frames_split_byte_by_byte_are_reassembled() -> None:
    """Delivering the stream one byte per read gives the same replies as one read."""
    stream = HANDSHAKE + b"".join(call_frame(i, "echoUser", TEST_PROTOCOL, BOB) for i in range(3))
    whole = drive(new_connection(), stream)
    split = drive(new_connection(), *(stream[i : i + 1] for i in range(len(stream))))
    assert split.output == whole.output
    assert [r.call_id for r in split.replies] == [0, 1, 2]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_of_the_stream_gives_the_same_replies(cuts: list[int]) -> None:
    """Property: wherever TCP cuts the byte stream, the replies are identical."""
    stream = HANDSHAKE + ping_frame() + b"".join(call_frame(i, "echoUser", TEST_PROTOCOL, BOB) for i in range(4))
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert drive(new_connection(), *pieces).output == drive(new_connection(), stream).output


def test_pipelined_calls_may_be_answered_out_of_order() -> None:
    """Many calls in one read come out as calls in order; replies may go in any order."""
    connection = new_connection()
    outcome = drive(
        connection, HANDSHAKE + b"".join(call_frame(i, "echoUser", TEST_PROTOCOL, BOB) for i in range(50)), answer=False
    )
    assert [c.context.call_id for c in outcome.calls] == list(range(50))
    assert connection.outstanding == 50
    output = b"".join(connection.success_reply(c.context, BOB.SerializeToString()) for c in reversed(outcome.calls))
    assert [r.call_id for r in parse_responses(output)] == list(range(49, -1, -1))
    assert connection.outstanding == 0


def test_pings_are_ignored_before_and_after_the_context() -> None:
    """callId -4 frames produce no reply and change nothing, in any established state."""
    connection = new_connection()
    outcome = drive(connection, preamble() + ping_frame() + context_frame(TEST_PROTOCOL) + ping_frame() + ping_frame())
    assert outcome.output == b""
    assert connection.state is ConnectionState.READY


def test_large_frame_arriving_in_many_reads_is_joined_once() -> None:
    """A 1 MiB request split into 4 KiB reads is decoded correctly."""
    big = UserInformationProto(effectiveUser="x" * (1 << 20))
    stream = call_frame(1, "echoUser", TEST_PROTOCOL, big)
    connection = new_connection(max_data_length=2 << 20)
    drive(connection, HANDSHAKE)
    outcome = drive(connection, *(stream[i : i + 4096] for i in range(0, len(stream), 4096)))
    [reply] = outcome.replies
    assert reply.parse_body(UserInformationProto) == big


# --- errors that keep the connection open ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "protocol", "version", "java_class", "detail", "message"),
    [
        ("nope", TEST_PROTOCOL, 1, errors.RPC_NO_SUCH_METHOD, errors.ERROR_NO_SUCH_METHOD,
         f"Unknown method nope called on {TEST_PROTOCOL} protocol."),
        ("renewDelegationToken", TEST_PROTOCOL, 1, errors.YARN_EXCEPTION, errors.ERROR_APPLICATION,
         "renewDelegationToken is not supported by Cortex"),
        ("echoUser", "org.example.OtherProtocolPB", 1, errors.RPC_NO_SUCH_PROTOCOL, errors.ERROR_NO_SUCH_PROTOCOL,
         "Unknown protocol: org.example.OtherProtocolPB"),
        ("echoUser", TEST_PROTOCOL, 2, errors.RPC_VERSION_MISMATCH, errors.ERROR_RPC_VERSION_MISMATCH,
         f"Protocol {TEST_PROTOCOL} version mismatch. (client = 2, server = 1)"),
    ],
    ids=["unknown-method", "unsupported-method", "unknown-protocol", "protocol-version"],
)
def test_undispatchable_calls_get_an_error_and_the_connection_goes_on(
    method: str, protocol: str, version: int, java_class: str, detail: int, message: str
) -> None:
    """ERROR with Hadoop's class and code, ids echoed; a later call still works."""
    connection = new_connection()
    outcome = drive(
        connection,
        HANDSHAKE
        + call_frame(3, method, protocol, BOB, version=version, retry_count=1)
        + call_frame(4, "echoUser", TEST_PROTOCOL, BOB),
    )
    error, ok = outcome.replies
    assert (error.call_id, error.status, error.body) == (3, ERROR, None)
    assert error.header.exceptionClassName == java_class
    assert error.header.errorDetail == detail
    assert error.header.errorMsg == message
    assert error.header.clientId == CLIENT_ID and error.header.retryCount == 1
    assert (ok.call_id, ok.status) == (4, SUCCESS)
    assert outcome.close is None


# --- FATAL paths ---------------------------------------------------------------------------------


def test_wrong_magic_is_a_version_mismatch() -> None:
    """A stream not starting with 'hrpc' gets FATAL_VERSION_MISMATCH under callId -1, then close."""
    connection = new_connection()
    outcome = drive(connection, b"xrpc\x09\x00\x00")
    fatal = single_fatal(outcome)
    assert fatal.call_id == -1
    assert fatal.header.errorDetail == errors.FATAL_VERSION_MISMATCH
    assert fatal.exception_class == "org.apache.hadoop.ipc.RPC$VersionMismatch"
    assert connection.state is ConnectionState.CLOSED


def test_old_ipc_version_is_refused_naming_both_versions() -> None:
    """hrpc version 7 is answered 'Server IPC version 9 cannot communicate with client version 7'."""
    fatal = single_fatal(drive(new_connection(), preamble(version=7)))
    assert fatal.header.errorDetail == errors.FATAL_VERSION_MISMATCH
    assert fatal.header.errorMsg == "Server IPC version 9 cannot communicate with client version 7"


def test_http_get_gets_a_plain_404_and_close() -> None:
    """A browser on the IPC port gets HTTP/1.1 404 text, not a protobuf frame."""
    outcome = drive(new_connection(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert outcome.output.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Hadoop IPC port" in outcome.output
    assert outcome.close is not None and outcome.close.error is None


def test_context_before_preamble_is_a_version_mismatch() -> None:
    """Frames sent without the preamble are read as a bad connection header."""
    fatal = single_fatal(drive(new_connection(), context_frame(TEST_PROTOCOL)))
    assert fatal.header.errorDetail == errors.FATAL_VERSION_MISMATCH


def test_unknown_auth_protocol_byte_is_unauthorized() -> None:
    """Auth byte 0x42 is neither NONE nor SASL: FATAL_UNAUTHORIZED IpcException, callId -1."""
    fatal = single_fatal(drive(new_connection(), preamble(auth=0x42)))
    assert fatal.call_id == -1
    assert fatal.exception_class == errors.IPC_EXCEPTION
    assert fatal.header.errorDetail == errors.FATAL_UNAUTHORIZED
    assert fatal.header.errorMsg == "Unknown auth protocol:66"


def test_call_before_context_is_fatal() -> None:
    """A normal call before the context: FATAL 'Connection context not established' for that call."""
    outcome = drive(new_connection(), preamble() + call_frame(0, "echoUser", TEST_PROTOCOL, BOB, retry_count=0))
    fatal = single_fatal(outcome)
    assert fatal.call_id == 0
    assert fatal.header.errorDetail == errors.FATAL_INVALID_RPC_HEADER
    assert fatal.header.errorMsg == "Connection context not established"
    assert outcome.calls == []


def test_second_context_is_fatal() -> None:
    """Only one connection context per connection."""
    fatal = single_fatal(drive(new_connection(), HANDSHAKE + context_frame(TEST_PROTOCOL)))
    assert fatal.call_id == -3
    assert fatal.header.errorMsg == "Connection context already processed"


@pytest.mark.parametrize(
    ("protocol", "message"),
    [("org.example.NotServedPB", "Unknown protocol: org.example.NotServedPB"), (None, "Null protocol not authorized")],
    ids=["unknown", "absent"],
)
def test_context_for_a_protocol_not_served_is_unauthorized(protocol: str | None, message: str) -> None:
    """As Hadoop with service authorization: FATAL_UNAUTHORIZED AuthorizationException, callId -3."""
    connection = new_connection()
    fatal = single_fatal(drive(connection, preamble() + context_frame(protocol)))
    assert fatal.call_id == -3
    assert fatal.exception_class == errors.AUTHORIZATION_EXCEPTION
    assert fatal.header.errorDetail == errors.FATAL_UNAUTHORIZED
    assert fatal.header.errorMsg == message


def test_length_prefix_over_the_limit_is_refused_before_the_body_arrives() -> None:
    """The 4-byte length alone triggers the FATAL; no body byte is awaited or kept."""
    connection = new_connection(max_data_length=1000)
    drive(connection, HANDSHAKE)
    outcome = drive(connection, struct.pack(">I", 1001))
    fatal = single_fatal(outcome)
    assert fatal.header.errorDetail == errors.FATAL_INVALID_RPC_HEADER
    assert "Requested data length 1001 is longer than maximum configured RPC length 1000" in fatal.header.errorMsg
    assert drive(connection, b"\x00" * 5000).events == []  # the rest is ignored, not buffered


def test_length_prefix_at_the_limit_is_accepted() -> None:
    """A frame of exactly max_data_length bytes is served."""
    request = UserInformationProto(effectiveUser="y" * 900)
    body = call_frame(0, "echoUser", TEST_PROTOCOL, request)
    connection = new_connection(max_data_length=len(body) - 4)
    [reply] = drive(connection, HANDSHAKE + body).replies
    assert reply.status == SUCCESS


def test_negative_java_length_is_refused() -> None:
    """0x80000000 and up are negative to Java; they exceed any limit."""
    fatal = single_fatal(drive(new_connection(max_data_length=0x7FFFFFFF), HANDSHAKE + b"\xff\xff\xff\xf0"))
    assert fatal.header.errorDetail == errors.FATAL_INVALID_RPC_HEADER


def test_zero_length_frame_cannot_be_decoded() -> None:
    """An empty frame lacks even the RpcRequestHeaderProto."""
    fatal = single_fatal(drive(new_connection(), HANDSHAKE + b"\x00\x00\x00\x00"))
    assert fatal.call_id == -1
    assert fatal.header.errorDetail == errors.FATAL_DESERIALIZING_REQUEST


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff",  # a varint that never ends
        b"\x05\x08",  # header longer than the frame
        delimited(b"\x08\x02\x1a\x05hello"),  # field 3 (callId, varint) sent as bytes: wire type mismatch
        delimited(request_header(1).SerializeToString()[:-3]),  # truncated inside a field
        delimited(RpcRequestHeaderProto(rpcKind=2, rpcOp=0, callId=1).SerializePartialToString()),  # no clientId
    ],
    ids=["endless-varint", "overrun", "wire-type", "truncated", "missing-required"],
)
def test_undecodable_request_header_is_fatal(payload: bytes) -> None:
    """Garbage where the RpcRequestHeaderProto should be: FATAL_DESERIALIZING_REQUEST, callId -1."""
    fatal = single_fatal(drive(new_connection(), HANDSHAKE + frame(payload)))
    assert fatal.call_id == -1
    assert fatal.header.errorDetail == errors.FATAL_DESERIALIZING_REQUEST
    assert fatal.header.errorMsg.startswith("Error decoding RpcRequestHeaderProto")


@pytest.mark.parametrize(
    ("kind", "op", "message"),
    [
        (None, RpcRequestHeaderProto.RPC_FINAL_PACKET, "No rpc kind"),
        (RpcKindProto.RPC_WRITABLE, RpcRequestHeaderProto.RPC_FINAL_PACKET, "Unknown rpc kind"),
        (RpcKindProto.RPC_PROTOCOL_BUFFER, None, "No rpc op"),
        (RpcKindProto.RPC_PROTOCOL_BUFFER, RpcRequestHeaderProto.RPC_CONTINUATION_PACKET, "does not implement"),
    ],
    ids=["no-kind", "writable", "no-op", "continuation"],
)
def test_rpc_kind_and_op_must_be_protobuf_and_final(kind: object, op: object, message: str) -> None:
    """Headers without FINAL rpcOp and PROTOCOL_BUFFER rpcKind: FATAL_INVALID_RPC_HEADER."""
    header = request_header(2, rpc_kind=kind, rpc_op=op, retry_count=3)
    rpc = RequestHeaderProto(methodName="echoUser", declaringClassProtocolName=TEST_PROTOCOL, clientProtocolVersion=1)
    fatal = single_fatal(drive(new_connection(), HANDSHAKE + frame(delimited(header), delimited(rpc), delimited(BOB))))
    assert (fatal.call_id, fatal.header.retryCount) == (2, 3)
    assert fatal.header.errorDetail == errors.FATAL_INVALID_RPC_HEADER
    assert message in fatal.header.errorMsg


@pytest.mark.parametrize(
    "after_header",
    [
        b"",  # no RequestHeaderProto at all
        delimited(b"\x0a\x03abc"),  # RequestHeaderProto without its required fields
        delimited(RequestHeaderProto(methodName="echoUser", declaringClassProtocolName=TEST_PROTOCOL, clientProtocolVersion=1))
        + b"\x09\x0a",  # request body claims 9 bytes, has 1
        delimited(RequestHeaderProto(methodName="echoUser", declaringClassProtocolName=TEST_PROTOCOL, clientProtocolVersion=1))
        + delimited(b"\x0a\x05ab"),  # request body: a string field overrunning the message
        delimited(RequestHeaderProto(methodName="echoUser", declaringClassProtocolName=TEST_PROTOCOL, clientProtocolVersion=1))
        + delimited(BOB)
        + b"\x00",  # a stray byte after the request
    ],
    ids=["no-request-header", "incomplete-request-header", "short-body", "garbage-body", "trailing-byte"],
)
def test_undecodable_call_is_fatal_for_that_call(after_header: bytes) -> None:
    """Broken RequestHeaderProto or request body: FATAL_DESERIALIZING_REQUEST echoing the call id."""
    outcome = drive(new_connection(), HANDSHAKE + frame(delimited(request_header(8)), after_header))
    fatal = single_fatal(outcome)
    assert fatal.call_id == 8
    assert fatal.header.errorDetail == errors.FATAL_DESERIALIZING_REQUEST
    assert outcome.calls == []


@pytest.mark.parametrize("call_id", [-2, -5, -34])
def test_unknown_out_of_band_call_ids_are_fatal(call_id: int) -> None:
    """Negative call ids other than -3, -4 and -33 are refused."""
    fatal = single_fatal(drive(new_connection(), HANDSHAKE + frame(delimited(request_header(call_id)))))
    assert fatal.call_id == call_id
    assert fatal.header.errorMsg == f"Unknown out of band call #{call_id}"


def test_sasl_frame_on_a_connection_without_sasl_is_fatal() -> None:
    """After auth byte NONE, a callId -33 frame is 'SASL protocol not requested by client'."""
    fatal = single_fatal(drive(new_connection(), HANDSHAKE + frame(delimited(request_header(-33)), b"\x02\x10\x01")))
    assert fatal.call_id == -33
    assert fatal.header.errorDetail == errors.FATAL_INVALID_RPC_HEADER
    assert fatal.header.errorMsg == "SASL protocol not requested by client"


# --- after the end ---------------------------------------------------------------------------------


def test_frames_after_a_fatal_in_the_same_read_are_not_processed() -> None:
    """Frames behind a FATAL one are never decoded; the FATAL reply is the last output."""
    outcome = drive(
        new_connection(),
        HANDSHAKE + call_frame(0, "echoUser", TEST_PROTOCOL, BOB) + b"\x00\x00\x00\x00"
        + call_frame(1, "echoUser", TEST_PROTOCOL, BOB),
    )
    assert [c.context.call_id for c in outcome.calls] == [0]
    # The reply to call 0 comes after the close, so it is dropped like any late reply.
    assert [(r.call_id, r.status) for r in outcome.replies] == [(-1, FATAL)]


def test_input_and_replies_after_close_are_dropped() -> None:
    """Once CLOSED, receive() returns nothing and replies encode to b''."""
    connection = new_connection()
    outcome = drive(connection, HANDSHAKE + call_frame(0, "echoUser", TEST_PROTOCOL, BOB), answer=False)
    connection.connection_lost()
    assert connection.state is ConnectionState.CLOSED
    assert connection.receive(call_frame(1, "echoUser", TEST_PROTOCOL, BOB)) == []
    assert connection.success_reply(outcome.calls[0].context, b"") == b""
    assert connection.outstanding == 0


def test_max_data_length_must_fit_a_java_int() -> None:
    """The limit is between 1 and 2**31-1, like Hadoop's int setting."""
    for bad in (0, 1 << 31):
        with pytest.raises(ValueError):
            new_connection(max_data_length=bad)


def test_transition_table_covers_every_state_and_always_allows_closing() -> None:
    """Each state has an entry; every open state may close; CLOSED is final."""
    assert set(TRANSITIONS) == set(ConnectionState)
    for state, targets in TRANSITIONS.items():
        assert (ConnectionState.CLOSED in targets) == (state is not ConnectionState.CLOSED)
    assert TRANSITIONS[ConnectionState.CLOSED] == frozenset()


def test_an_illegal_transition_is_a_bug_that_raises() -> None:
    """The core refuses to move along an edge the table lacks (READY straight from the preamble)."""
    connection = new_connection()
    with pytest.raises(RuntimeError, match="AWAIT_PREAMBLE -> READY"):
        connection._move(ConnectionState.READY)
