"""Fuzzing the Hadoop IPC server: preamble, frame lengths, RpcRequestHeaderProto, SASL and
call bodies, through the Twisted protocol over a ``StringTransport``.

Whatever the bytes and however they are cut, a connection:

* logs no failure (an exception in the core or a handler would be logged, then the
  connection aborted);
* writes only well-formed reply frames (parsed as strictly as Hadoop's client does),
  or, to an HTTP GET, Hadoop's 404 text;
* closes exactly when it has sent a FATAL reply (its last), or after the 404;
* never buffers more than one frame of the configured maximum (plus its 4-byte length).

Inputs: random bytes after each preamble; structured frames (random headers with the
special call ids, random parts); and valid sessions (SIMPLE, SASL falling back to
SIMPLE, SASL with a DIGEST-MD5 token) with byte mutations.  The decoding helpers of
``ipc_wire`` and ``ipc_decoding`` are fuzzed on their own too.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from cortex_rm.yarn_api.digest_md5 import DigestMd5Server
from cortex_rm.yarn_api.errors import FatalRpcError
from cortex_rm.yarn_api.ipc_decoding import read_header, read_part
from cortex_rm.yarn_api.ipc_server import IpcServerFactory, IpcServerProtocol
from cortex_rm.yarn_api.ipc_wire import HTTP_NOT_FOUND_REPLY, WireFormatError, decode_varint, delimited_bounds
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto, UserInformationProto
from cortex_rm.yarn_api.proto.ProtobufRpcEngine2_pb2 import RequestHeaderProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcRequestHeaderProto, RpcResponseHeaderProto, RpcSaslProto
from cortex_rm.yarn_api.rpc_protocol import CallContext, RpcProtocol
from cortex_rm.yarn_api.sasl import MECHANISM_DIGEST_MD5, SaslServer
from tests.fuzz.fuzzing import chunked, fuzz_settings, mutated
from tests.fuzz.messages import protobuf_messages, texts, with_text_not_utf8
from tests.support.ipc_frames import (
    AUTH_NONE,
    AUTH_SASL,
    FATAL,
    TEST_PROTOCOL,
    TEST_SERVICE,
    call_frame,
    context_frame,
    delimited,
    digest_md5_response,
    frame,
    parse_responses,
    ping_frame,
    preamble,
    request_header,
    sasl_frame,
)

MAX_FRAME = 512  # small, so that mutated lengths cross it often
IDENTIFIER = b"fuzz-token-identifier"
PASSWORD = b"fuzz-token-password"


def _nonce_bytes(n: int) -> bytes:
    return bytes(range(1, n + 1))


def echo_user(call: CallContext, request: UserInformationProto) -> UserInformationProto:
    """Answer with the request itself."""
    return request


def who_am_i(call: CallContext, request: IpcConnectionContextProto) -> UserInformationProto:
    """Answer with the connection's user."""
    return UserInformationProto(effectiveUser=call.effective_user or "")


PROTOCOL = RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": echo_user, "whoAmI": who_am_i})


def token_server() -> SaslServer:
    """A port offering TOKEN (one known identifier) and SIMPLE."""
    return SaslServer(lambda ident: PASSWORD if ident == IDENTIFIER else None, random_bytes=_nonce_bytes)


def serve(data: bytes, cuts: list[int], sasl_server: SaslServer) -> tuple[IpcServerProtocol, StringTransport]:
    """Feed ``data``, cut at ``cuts``, to a fresh connection; check the bounds after every chunk
    and the output at the end (see the module docstring)."""
    events: list[dict[str, Any]] = []
    factory = IpcServerFactory(
        [PROTOCOL], sasl_server, max_data_length=MAX_FRAME, log=Logger(namespace="fuzz", observer=events.append)
    )
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 50000))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    for chunk in chunked(data, cuts):
        protocol.dataReceived(chunk)
        held = sum(len(c) for c in protocol.core._chunks)  # the core's unparsed input
        assert held <= MAX_FRAME + 4, f"{held} bytes buffered, over one {MAX_FRAME}-byte frame"
    failures = [e for e in events if e.get("log_failure") is not None]
    assert not failures, failures[0]["log_failure"].getTraceback()
    check_output(transport)
    return protocol, transport


def check_output(transport: StringTransport) -> None:
    """Well-formed replies; FATAL last and only when closing; the 404 alone to HTTP."""
    output = transport.value()
    if output.startswith(b"HTTP/"):
        assert output == HTTP_NOT_FOUND_REPLY
        assert transport.disconnecting
        return
    replies = parse_responses(output)  # strict: exact lengths, one body on SUCCESS only
    fatal = [i for i, reply in enumerate(replies) if reply.status == FATAL]
    assert fatal in ([], [len(replies) - 1]), "a reply after a FATAL one"
    assert transport.disconnecting == bool(fatal), "closed without a FATAL reply, or FATAL without closing"
    for reply in replies:
        assert reply.header.serverIpcVersionNum == 9
        if reply.status != RpcResponseHeaderProto.SUCCESS:
            assert reply.exception_class and reply.header.HasField("errorDetail")


# --- valid sessions ---------------------------------------------------------------------------

users = st.builds(UserInformationProto, effectiveUser=texts(), realUser=texts())
calls = st.one_of(
    st.builds(lambda i, u: call_frame(i, "echoUser", TEST_PROTOCOL, u), st.integers(0, 2**31 - 1), users),
    st.builds(lambda i: call_frame(i, "whoAmI", TEST_PROTOCOL, IpcConnectionContextProto()), st.integers(0, 2**31 - 1)),
    st.builds(
        lambda i: call_frame(i, "renewDelegationToken", TEST_PROTOCOL, UserInformationProto()), st.integers(0, 9)
    ),
    st.builds(lambda i: call_frame(i, "echoUser", TEST_PROTOCOL, version=2), st.integers(0, 9)),
    st.just(call_frame(3, "echoUser", "org.example.NoSuchProtocolPB")),
    st.just(ping_frame()),
)


def _sasl_message(state: int, *auths: RpcSaslProto.SaslAuth, token: bytes | None = None) -> bytes:
    message = RpcSaslProto(state=state)  # type: ignore[arg-type]
    message.auths.extend(auths)
    if token is not None:
        message.token = token
    return sasl_frame(message)


def _token_handshake() -> bytes:
    """NEGOTIATE, then INITIATE with the DIGEST-MD5 response to the (deterministic) challenge."""
    challenge = DigestMd5Server(password_for=lambda _: None, random_bytes=_nonce_bytes).challenge()
    response, _ = digest_md5_response(challenge, identifier=IDENTIFIER, password=PASSWORD)
    chosen = RpcSaslProto.SaslAuth(method="TOKEN", mechanism=MECHANISM_DIGEST_MD5, protocol="", serverId="default")
    return _sasl_message(RpcSaslProto.NEGOTIATE) + _sasl_message(RpcSaslProto.INITIATE, chosen, token=response)


HANDSHAKES = [
    preamble(AUTH_NONE) + context_frame(TEST_PROTOCOL),
    preamble(AUTH_SASL)
    + _sasl_message(RpcSaslProto.NEGOTIATE)
    + _sasl_message(RpcSaslProto.INITIATE, RpcSaslProto.SaslAuth(method="SIMPLE", mechanism=""))
    + context_frame(TEST_PROTOCOL),
    preamble(AUTH_SASL) + _token_handshake() + context_frame(TEST_PROTOCOL),
]
sessions = st.builds(lambda h, cs: h + b"".join(cs), st.sampled_from(HANDSHAKES), st.lists(calls, max_size=4))
cuts = st.lists(st.integers(0, 1 << 12), max_size=6)


def test_the_valid_sessions_are_served() -> None:
    """The sessions the fuzzers mutate are valid: each call answered, no FATAL, no close."""
    for handshake in HANDSHAKES:
        session = handshake + call_frame(7, "echoUser", TEST_PROTOCOL, UserInformationProto(effectiveUser="x"))
        _, transport = serve(session, [], token_server())
        replies = parse_responses(transport.value())
        assert [(r.status, r.call_id) for r in replies][-1] == (RpcResponseHeaderProto.SUCCESS, 7)
        assert all(r.status != FATAL for r in replies)
        assert not transport.disconnecting


@fuzz_settings(280)
@given(data=mutated(sessions), cuts=cuts, token_port=st.booleans())
@example(data=HANDSHAKES[0] + b"\x7f\xff\xff\xff", cuts=[], token_port=False).via("a frame length over the maximum")
@example(data=b"GET / HTTP/1.1\r\n\r\n", cuts=[2], token_port=False).via("HTTP on the IPC port, cut")
@example(data=HANDSHAKES[0] + b"\x00\x00\x01\xff" + b"\x00" * 100, cuts=[0, 50], token_port=True).via(
    "a frame that never completes"
)
def test_mutated_sessions_get_replies_or_a_fatal_close(data: bytes, cuts: list[int], token_port: bool) -> None:
    """A valid session with byte mutations, delivered in pieces: well-formed replies, FATAL-and-close
    or nothing, no logged failure, at most one frame buffered."""
    serve(data, cuts, token_server() if token_port else SaslServer.simple_only())


@fuzz_settings(100)
@given(
    head=st.sampled_from([b"", preamble(AUTH_NONE), preamble(AUTH_SASL), HANDSHAKES[0], HANDSHAKES[1]]),
    noise=st.binary(max_size=200),
    cuts=cuts,
)
def test_random_bytes_after_any_handshake_step(head: bytes, noise: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes at any point of the handshake are answered FATAL (or wait for more), never crash."""
    serve(head + noise, cuts, token_server())


# --- structured frames -----------------------------------------------------------------------

CALL_IDS = st.sampled_from([-33, -4, -3, -2, -1, 0, 1, 2**31 - 1, -(2**31)])
request_headers = st.builds(
    lambda base, call_id, keep_kind, keep_op: _header(base, call_id, keep_kind, keep_op),
    protobuf_messages(RpcRequestHeaderProto),
    CALL_IDS,
    st.booleans(),
    st.booleans(),
)


def _header(base: Any, call_id: int, keep_kind: bool, keep_op: bool) -> bytes:
    header = request_header(call_id)
    header.MergeFrom(base)
    header.callId = call_id
    if not keep_kind:
        header.rpcKind = request_header(0).rpcKind
    if not keep_op:
        header.rpcOp = request_header(0).rpcOp
    return delimited(header.SerializePartialToString())  # a required field may be missing: FATAL


def _partial(message: Any) -> bytes:
    """Delimited, even when a required field is missing (the server must refuse it)."""
    return delimited(message.SerializePartialToString())


rpc_headers = st.builds(
    RequestHeaderProto,
    methodName=st.sampled_from(["echoUser", "whoAmI", "renewDelegationToken", "", "nope"]),
    declaringClassProtocolName=st.sampled_from([TEST_PROTOCOL, "", "x"]),
    clientProtocolVersion=st.sampled_from([1, 0, 2, 2**64 - 1]),
)
parts = st.one_of(
    st.binary(max_size=24).map(delimited),
    st.binary(max_size=8),
    rpc_headers.map(delimited),
    with_text_not_utf8(rpc_headers).map(delimited),
    protobuf_messages(UserInformationProto).map(_partial),
    protobuf_messages(IpcConnectionContextProto).map(_partial),
    protobuf_messages(RpcSaslProto).map(_partial),
    with_text_not_utf8(protobuf_messages(RpcSaslProto, initialized=True)).map(_partial),
)
# (A connection context whose user is not UTF-8: see the test at the end.)
frames = st.builds(lambda header, rest: frame(header, *rest), request_headers, st.lists(parts, max_size=3))


@fuzz_settings(140)
@given(
    head=st.sampled_from([preamble(AUTH_NONE), preamble(AUTH_SASL), HANDSHAKES[0], HANDSHAKES[1]]),
    body=st.lists(frames, min_size=1, max_size=4),
    cuts=cuts,
    token_port=st.booleans(),
)
def test_random_frames_in_any_state(head: bytes, body: list[bytes], cuts: list[int], token_port: bool) -> None:
    """Frames with random headers (every special call id, rpcKind/rpcOp present or not) and random
    parts, in each connection state: replies or a FATAL close, nothing else."""
    serve(head + b"".join(body), cuts, token_server() if token_port else SaslServer.simple_only())


# --- the decoding helpers on their own ----------------------------------------------------------


@fuzz_settings(210)
@given(data=st.binary(max_size=40), pos=st.integers(0, 45), end=st.integers(0, 45))
def test_varints_and_delimited_bounds_raise_only_wire_format_errors(data: bytes, pos: int, end: int) -> None:
    """Any bytes and window: a value and a position inside the window, or WireFormatError."""
    end = min(end, len(data))
    try:
        value, after = decode_varint(data, pos, end)
    except WireFormatError:
        pass
    else:
        assert value >= 0 and pos < after <= end
    try:
        start, stop = delimited_bounds(data, pos, end)
    except WireFormatError:
        pass
    else:
        assert pos < start <= stop <= end


@fuzz_settings(210)
@given(data=mutated(st.builds(lambda h, p: h + p, request_headers, st.lists(parts, max_size=2).map(b"".join))))
def test_header_and_parts_decode_or_are_fatal(data: bytes) -> None:
    """read_header / read_part over any frame payload: a message within the frame, or FatalRpcError."""
    mv = memoryview(data)
    try:
        header, pos = read_header(data, mv, 0, len(data))
    except FatalRpcError as fatal:
        assert fatal.error_detail >= RpcResponseHeaderProto.FATAL_UNKNOWN
        return
    assert pos <= len(data)
    for message_type in (RequestHeaderProto, RpcSaslProto, IpcConnectionContextProto):
        try:
            _, stop = read_part(message_type, data, mv, pos, len(data), header, "part", last=True)
        except FatalRpcError as fatal:
            assert fatal.call_id == header.callId
        else:
            assert stop == len(data)


def _context_not_utf8(field: str) -> bytes:
    """A connection context frame whose user field ``field`` holds bytes that are not UTF-8."""
    marked = context_frame(TEST_PROTOCOL, **{field: "~~~~"})
    return marked.replace(b"~~~~", b"\xff\xfe\x80\xc3")


@pytest.mark.parametrize("field", ["user", "real_user"])
def test_a_context_user_that_is_not_utf8_reaches_handlers_as_text(field: str) -> None:
    """A found input: the user of a context that is not UTF-8 reaches a handler as text (or is refused)."""
    data = (
        preamble(AUTH_NONE)
        + _context_not_utf8(field)
        + call_frame(1, "whoAmI", TEST_PROTOCOL, IpcConnectionContextProto())
    )
    protocol, _ = serve(data, [], SaslServer.simple_only())
    for user in (protocol.core.effective_user, protocol.core.real_user):
        assert user is None or isinstance(user, str)
