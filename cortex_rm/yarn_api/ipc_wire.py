"""Hadoop IPC (RPC version 9) wire constants and encoders, as pure functions.

Framing, both directions (``Server.Connection.readAndProcess``, ``Client.Connection``)::

    preamble (client, once):  "hrpc" | version 0x09 | service class 0x00 | auth 0x00 or 0xDF
    every later frame:        uint32 big-endian length N | N bytes of varint-delimited messages

A request is ``delim(RpcRequestHeaderProto) | delim(RequestHeaderProto) | delim(request)``
(the connection context, SASL and ping frames carry something else, or nothing, after
the first header).  A reply is ``delim(RpcResponseHeaderProto)`` followed, on SUCCESS
only, by exactly one ``delim(response)`` -- an empty message is the single byte 0x00.

The request header's ``callId`` is a zigzag ``sint32``; the response header's is a plain
``uint32``, so -33 goes back as 4294967263.  The success header is encoded by hand
(it is on every reply's path); tests check it byte for byte against protobuf.
"""

from __future__ import annotations

from typing import Final

from cortex_rm.yarn_api.errors import ErrorCode
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcResponseHeaderProto

# --- connection preamble -------------------------------------------------------------
RPC_MAGIC: Final = b"hrpc"
CURRENT_VERSION: Final = 9
PREAMBLE_LENGTH: Final = 7
AUTH_PROTOCOL_NONE: Final = 0x00
AUTH_PROTOCOL_SASL: Final = 0xDF  # -33 as a signed byte, the SASL call id
HTTP_GET: Final = b"GET "

# --- special call ids (RpcConstants, Server.AuthProtocol) ---------------------------
CALL_ID_AUTHORIZATION_FAILED: Final = -1
CALL_ID_INVALID: Final = -2
CALL_ID_CONNECTION_CONTEXT: Final = -3
CALL_ID_PING: Final = -4
CALL_ID_SASL: Final = -33
INVALID_RETRY_COUNT: Final = -1

#: Hadoop's ``ipc.maximum.data.length`` default: the largest frame a server buffers.
DEFAULT_MAX_DATA_LENGTH: Final = 64 * 1024 * 1024

#: What Hadoop's IPC server sends to a browser that hits an IPC port (then it closes).
HTTP_NOT_FOUND_REPLY: Final = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"Content-type: text/plain\r\n\r\n"
    b"It looks like you are making an HTTP request to a Hadoop IPC port. "
    b"This is not the correct port for the web interface on this daemon.\r\n"
)

_STATUS_SUCCESS: Final = RpcResponseHeaderProto.SUCCESS
_UINT32: Final = 0xFFFFFFFF
# One-byte varints, prebuilt: nearly every length and call id on the hot path is one.
_ONE_BYTE_VARINTS: Final = tuple(bytes((i,)) for i in range(0x80))
# Fields 2 and 3 of RpcResponseHeaderProto: status=SUCCESS(0), serverIpcVersionNum=9.
_SUCCESS_AND_VERSION: Final = bytes((0x10, _STATUS_SUCCESS, 0x18, CURRENT_VERSION))


class WireFormatError(ValueError):
    """Bytes that are not a well-formed varint or delimited message."""


def encode_varint(value: int) -> bytes:
    """Base-128 varint of a non-negative integer (protobuf's encoding)."""
    if value < 0x80:
        if value < 0:
            raise ValueError(f"varint of negative {value}")
        return _ONE_BYTE_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode a varint in ``buf[pos:end]``: ``(value, position after it)``.

    Accepts non-minimal encodings (as protobuf parsers do) up to 10 bytes.
    """
    if pos >= end:
        raise WireFormatError("truncated varint")
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    shift = 7
    pos += 1
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireFormatError("varint longer than 10 bytes")
    raise WireFormatError("truncated varint")


def delimited_bounds(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """``(start, stop)`` of the varint-delimited message at ``buf[pos:end]``."""
    length, start = decode_varint(buf, pos, end)
    stop = start + length
    if stop > end:
        raise WireFormatError(f"delimited message of {length} bytes overruns its frame by {stop - end}")
    return start, stop


def zigzag32(value: int) -> int:
    """The ``sint32`` zigzag mapping: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ..."""
    return ((value << 1) ^ (value >> 31)) & _UINT32


def success_header(call_id: int, client_id: bytes, retry_count: int) -> bytes:
    """``RpcResponseHeaderProto{callId, SUCCESS, serverIpcVersionNum=9, clientId, retryCount}``.

    Byte for byte what protobuf would serialize (fields in number order), without
    building a message object.
    """
    return b"".join(
        (
            b"\x08",
            encode_varint(call_id & _UINT32),
            _SUCCESS_AND_VERSION,
            b"\x3a",
            encode_varint(len(client_id)),
            client_id,
            b"\x40",
            encode_varint(zigzag32(retry_count)),
        )
    )


def success_frame(call_id: int, client_id: bytes, retry_count: int, body: bytes) -> bytes:
    """A whole SUCCESS reply frame: length, delimited header, delimited body."""
    header = success_header(call_id, client_id, retry_count)
    header_len = encode_varint(len(header))
    body_len = encode_varint(len(body))
    total = len(header_len) + len(header) + len(body_len) + len(body)
    return b"".join((total.to_bytes(4, "big"), header_len, header, body_len, body))


def failure_frame(
    *,
    call_id: int,
    fatal: bool,
    java_class: str,
    message: str,
    error_detail: ErrorCode,
    client_id: bytes = b"",
    retry_count: int = INVALID_RETRY_COUNT,
) -> bytes:
    """An ERROR (or FATAL) reply frame: the header alone, naming the Java exception."""
    header: bytes = RpcResponseHeaderProto(
        callId=call_id & _UINT32,
        status=RpcResponseHeaderProto.FATAL if fatal else RpcResponseHeaderProto.ERROR,
        serverIpcVersionNum=CURRENT_VERSION,
        exceptionClassName=java_class,
        errorMsg=message,
        errorDetail=error_detail,
        clientId=client_id,
        retryCount=retry_count,
    ).SerializeToString()
    payload = encode_varint(len(header)) + header
    return len(payload).to_bytes(4, "big") + payload
