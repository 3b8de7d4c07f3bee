"""Reading the parts of an IPC request frame, each failure as the FATAL reply Hadoop's server gives.

A request frame is ``delim(RpcRequestHeaderProto) | [delim(part) ...]``; every part
after the header (the call's ``RequestHeaderProto`` and request message, the
connection context, a SASL message) is read by ``read_part``, which turns a
broken length or an undecodable message into ``FATAL_DESERIALIZING_REQUEST``
naming what could not be read — the connection state machine
(``ipc_connection.py``) only decides which part a frame carries.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import ErrorCode, FatalRpcError
from cortex_rm.yarn_api.ipc_wire import WireFormatError, delimited_bounds
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcKindProto, RpcRequestHeaderProto

M = TypeVar("M", bound=Message)

FINAL = RpcRequestHeaderProto.RPC_FINAL_PACKET
PROTOBUF = RpcKindProto.RPC_PROTOCOL_BUFFER


def fatal(java_class: str, message: str, detail: ErrorCode, header: RpcRequestHeaderProto | None = None) -> FatalRpcError:
    """A FATAL reply, answering ``header``'s call id and retry count when the header could be read."""
    if header is None:
        return FatalRpcError(java_class, message, detail)
    return FatalRpcError(java_class, message, detail, call_id=header.callId, retry_count=header.retryCount)


def decode(message_type: type[M], mv: memoryview, start: int, stop: int) -> M:
    """Parse ``mv[start:stop]``; raises ``DecodeError`` when undecodable or incomplete."""
    message = message_type.FromString(mv[start:stop])  # type: ignore[arg-type]  # protobuf parses any buffer; a view spares copying the body
    if not message.IsInitialized():
        missing = message.FindInitializationErrors()  # type: ignore[attr-defined]  # every generated message has it; the base stub omits it
        raise DecodeError("missing required fields: " + ", ".join(missing))
    return message


def read_header(buf: bytes, mv: memoryview, start: int, stop: int) -> tuple[RpcRequestHeaderProto, int]:
    """The frame's RpcRequestHeaderProto and where it ends; FATAL if unreadable or not a FINAL protobuf call."""
    try:
        hstart, hstop = delimited_bounds(buf, start, stop)
        header = decode(RpcRequestHeaderProto, mv, hstart, hstop)
    except (WireFormatError, DecodeError) as exc:
        raise FatalRpcError(
            errors.RPC_SERVER_EXCEPTION,
            f"Error decoding RpcRequestHeaderProto: {exc}",
            errors.FATAL_DESERIALIZING_REQUEST,
        ) from exc
    # Hadoop's checkRpcHeaders: rpcOp present and FINAL, rpcKind present (and,
    # since only the protobuf engine is registered, PROTOCOL_BUFFER).
    if header.rpcOp != FINAL or header.rpcKind != PROTOBUF or not (
        header.HasField("rpcOp") and header.HasField("rpcKind")
    ):
        raise bad_header(header)
    return header, hstop


def bad_header(header: RpcRequestHeaderProto) -> FatalRpcError:
    """FATAL_INVALID_RPC_HEADER saying which of rpcOp and rpcKind is missing or unsupported."""
    if not header.HasField("rpcOp"):
        problem = "IPC Server: No rpc op in rpcRequestHeader"
    elif header.rpcOp != FINAL:
        problem = f"IPC Server does not implement rpc header operation {header.rpcOp}"
    elif not header.HasField("rpcKind"):
        problem = "IPC Server: No rpc kind in rpcRequestHeader"
    else:
        problem = f"Unknown rpc kind in rpc header {RpcKindProto.Name(header.rpcKind)}"
    return fatal(errors.RPC_SERVER_EXCEPTION, problem, errors.FATAL_INVALID_RPC_HEADER, header)


def read_part(
    message_type: type[M],
    buf: bytes,
    mv: memoryview,
    pos: int,
    stop: int,
    header: RpcRequestHeaderProto,
    what: str,
    *,
    last: bool = False,
) -> tuple[M, int]:
    """The delimited message at ``pos`` and where it ends (``last``: nothing may follow it in the frame).

    Unreadable: FATAL_DESERIALIZING_REQUEST whose message starts with ``what``.
    """
    try:
        start, end = delimited_bounds(buf, pos, stop)
        if last and end != stop:
            raise WireFormatError(f"{stop - end} bytes follow the request message")
        return decode(message_type, mv, start, end), end
    except (WireFormatError, DecodeError) as exc:
        raise fatal(errors.RPC_SERVER_EXCEPTION, f"{what}: {exc}", errors.FATAL_DESERIALIZING_REQUEST, header) from exc


def proto_text(value: str | bytes) -> str:
    """A proto2 string field as text (Python's protobuf gives bytes when it is not UTF-8; Java
    reads those with U+FFFD, and so does this)."""
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")
