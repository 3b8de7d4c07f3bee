"""The load generator's prebuilt frames and reply parsing (bench/ipc_load.py), no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.ipc_load import CallTemplate, _header_fields, handshake_bytes, padded_call_id, require_loopback, run_load
from cortex_rm.yarn_api.ipc_connection import IpcConnection
from cortex_rm.yarn_api.ipc_events import IncomingCall
from cortex_rm.yarn_api.ipc_wire import failure_frame, success_frame
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcRequestHeaderProto
from cortex_rm.yarn_api.rpc_protocol import RpcProtocol
from cortex_rm.yarn_api.sasl import SaslServer
from tests.support.ipc_frames import TEST_PROTOCOL, TEST_SERVICE

CLIENT_ID = b"\x42" * 16
REQUEST = UserInformationProto(effectiveUser="bench")


@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_padded_call_id_is_a_valid_sint32_varint(call_id: int) -> None:
    """Five padded bytes decode, in protobuf, to the same callId as the minimal varint."""
    header = RpcRequestHeaderProto.FromString(b"\x18" + padded_call_id(call_id) + b"\x22\x00")
    assert header.callId == call_id


def test_prebuilt_frames_are_served_by_our_server_with_their_call_ids() -> None:
    """Handshake + patched frames decode in the server core as the intended calls."""
    protocol = RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": lambda call, request: request})
    connection = IpcConnection({TEST_PROTOCOL: protocol}, SaslServer.simple_only(), peer="bench")
    template = CallTemplate.build(TEST_PROTOCOL, "echoUser", REQUEST.SerializeToString(), CLIENT_ID)
    frames = [template.frame(i) for i in (0, 1, 127, 128, 300_000, 2**31 - 1)]
    assert len({len(f) for f in frames}) == 1  # patching never changes the frame length
    events = connection.receive(handshake_bytes(TEST_PROTOCOL, "bench-user") + b"".join(frames))
    calls = [e for e in events if isinstance(e, IncomingCall)]
    assert [c.context.call_id for c in calls] == [0, 1, 127, 128, 300_000, 2**31 - 1]
    assert all(c.request == REQUEST and c.context.client_id == CLIENT_ID for c in calls)
    assert calls[0].context.effective_user == "bench-user"


def test_reply_headers_are_read_without_decoding_bodies() -> None:
    """callId, status and exception class come out of SUCCESS and ERROR headers."""
    ok = bytearray(success_frame(300, CLIENT_ID, 0, b"\x0a\x03abc"))
    assert _header_fields(ok, 5, 5 + ok[4]) == (300, 0, "")
    error = bytearray(
        failure_frame(call_id=7, fatal=False, java_class="org.example.Boom", message="m", error_detail=1)
    )
    assert _header_fields(error, 5, 5 + error[4]) == (7, 1, "org.example.Boom")


def test_only_loopback_targets_are_allowed() -> None:
    """The generator refuses to flood anything but loopback."""
    require_loopback("127.0.0.1")
    require_loopback("::1")
    with pytest.raises(ValueError, match="loopback"):
        require_loopback("192.0.2.10")


@pytest.mark.parametrize(
    "options",
    [dict(calls=10, seconds=1.0), dict(), dict(calls=10, processes=3, connections=2), dict(calls=10, depth=0)],
    ids=["both-bounds", "no-bound", "more-processes-than-connections", "zero-depth"],
)
def test_run_load_checks_its_parameters(options: dict[str, object]) -> None:
    """Bad bounds and shapes are refused before any process starts."""
    with pytest.raises(ValueError):
        run_load("127.0.0.1", 1, TEST_PROTOCOL, "echoUser", **options)  # type: ignore[arg-type]
