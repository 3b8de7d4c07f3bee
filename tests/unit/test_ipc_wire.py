"""Hadoop IPC wire encoders: varints, zigzag, and reply frames, byte for byte."""

from __future__ import annotations

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.ipc_wire import (
    WireFormatError,
    decode_varint,
    delimited_bounds,
    encode_varint,
    failure_frame,
    success_frame,
    success_header,
    zigzag32,
)
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcResponseHeaderProto
from tests.support.ipc_frames import parse_response

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_matches_protobuf_and_round_trips(value: int) -> None:
    """encode_varint agrees with protobuf's encoder and decode_varint inverts it."""
    encoded = encode_varint(value)
    assert encoded == _VarintBytes(value)
    assert decode_varint(b"\xaa" + encoded + b"\xbb", 1, len(encoded) + 2) == (value, len(encoded) + 1)


def test_decode_varint_accepts_non_minimal_encodings() -> None:
    """A padded varint (as the load generator sends call ids) decodes like protobuf does."""
    assert decode_varint(b"\x85\x80\x80\x80\x00", 0, 5) == (5, 5)


@pytest.mark.parametrize(
    ("data", "end"),
    [(b"", 0), (b"\x80", 1), (b"\xff\xff", 2), (b"\x80\x01", 1), (b"\xff" * 11, 11)],
    ids=["empty", "continuation-at-end", "all-continuations", "past-end", "eleven-bytes"],
)
def test_decode_varint_rejects_truncated_or_overlong(data: bytes, end: int) -> None:
    """A varint cut by the frame end, or longer than 10 bytes, is a WireFormatError."""
    with pytest.raises(WireFormatError):
        decode_varint(data, 0, end)


def test_delimited_bounds_rejects_a_length_beyond_the_frame() -> None:
    """A delimited message may not claim more bytes than its frame has left."""
    assert delimited_bounds(b"\x02ab", 0, 3) == (1, 3)
    with pytest.raises(WireFormatError, match="overruns"):
        delimited_bounds(b"\x03ab", 0, 3)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (-1, 1), (1, 2), (-2, 3), (2**31 - 1, 2**32 - 2), (-(2**31), 2**32 - 1)])
def test_zigzag32_table(value: int, expected: int) -> None:
    """sint32 zigzag: 0, -1, 1, -2 ... map to 0, 1, 2, 3 ..."""
    assert zigzag32(value) == expected


@given(call_id=INT32, client_id=st.binary(max_size=40), retry_count=INT32)
def test_success_header_is_what_protobuf_serializes(call_id: int, client_id: bytes, retry_count: int) -> None:
    """The hand-made SUCCESS header equals protobuf's serialization of the same fields."""
    expected = RpcResponseHeaderProto(
        callId=call_id & 0xFFFFFFFF,
        status=RpcResponseHeaderProto.SUCCESS,
        serverIpcVersionNum=9,
        clientId=client_id,
        retryCount=retry_count,
    ).SerializeToString()
    assert success_header(call_id, client_id, retry_count) == expected


def test_success_frame_matches_the_captured_get_new_application_reply() -> None:
    """The frame layout equals the reply the Java client accepted (yarn-wire-facts 1.3)."""
    client_id = bytes(range(16))
    # GetNewApplicationResponseProto{application_id{id 1, ts 1700000000000}, maximumCapability{8192 MB, 4}}
    body = bytes.fromhex("0a09080110 80d095ffbc31 1205 08804010 04".replace(" ", ""))
    frame = success_frame(0, client_id, 0, body)
    assert frame == (
        bytes.fromhex("0000002e 1a 0800 1000 1809 3a10".replace(" ", ""))
        + client_id
        + bytes.fromhex("4000 12".replace(" ", ""))
        + body
    )


def test_sasl_reply_call_id_is_uint32() -> None:
    """callId -33 goes out as varint df ff ff ff 0f (uint32, not zigzag)."""
    assert success_header(-33, b"", -1).startswith(b"\x08\xdf\xff\xff\xff\x0f")


def test_empty_body_is_one_zero_byte() -> None:
    """A SUCCESS reply with an empty message ends in the single byte 0x00."""
    frame = success_frame(7, b"", 0, b"")
    assert frame.endswith(b"\x00")
    assert parse_response(frame[4:]).body == b""


def test_failure_frame_is_header_only() -> None:
    """ERROR/FATAL frames carry the exception fields and nothing after the header."""
    frame = failure_frame(
        call_id=-3,
        fatal=True,
        java_class=errors.AUTHORIZATION_EXCEPTION,
        message="Unknown protocol: x",
        error_detail=errors.FATAL_UNAUTHORIZED,
    )
    reply = parse_response(frame[4:])
    assert reply.call_id == -3
    assert reply.status == RpcResponseHeaderProto.FATAL
    assert reply.body is None
    assert reply.header.exceptionClassName == errors.AUTHORIZATION_EXCEPTION
    assert reply.header.errorDetail == errors.FATAL_UNAUTHORIZED
    assert reply.header.serverIpcVersionNum == 9
    assert reply.header.clientId == b""
    assert reply.header.retryCount == -1
