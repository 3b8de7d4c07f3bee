"""Our IPC client against our IPC server over loopback (the RM calls NodeManagers with it).

The server side is the same code the real Java clients were proven against, so this
checks the client's framing, call multiplexing and error mapping end to end.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from cortex_rm.yarn_api.errors import FatalRpcError, RemoteError
from cortex_rm.yarn_api.ipc_client import IpcClient, IpcClientError
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
from cortex_rm.yarn_api.rpc_protocol import CallContext, RpcProtocol
from tests.support.ipc_frames import TEST_PROTOCOL, TEST_SERVICE
from tests.support.reactor import reactor

pytestmark = pytest.mark.integration


@pytest.fixture
def port() -> Any:
    """A server whose echoUser answers with the caller's name, refuses 'nobody', and can stall."""
    stalled: list[defer.Deferred] = []

    def echo_user(call: CallContext, request: UserInformationProto) -> Any:
        if request.effectiveUser == "nobody":
            raise RemoteError("org.apache.hadoop.yarn.exceptions.YarnException", "nobody may call")
        if request.effectiveUser == "later":
            d: defer.Deferred = defer.Deferred()
            stalled.append(d)
            reactor().callLater(0, d.callback, UserInformationProto(effectiveUser=f"later:{call.effective_user}"))
            return d
        return UserInformationProto(effectiveUser=f"{request.effectiveUser}:{call.effective_user}")

    factory = IpcServerFactory([RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": echo_user})])
    listening = reactor().listenTCP(0, factory, interface="127.0.0.1")
    yield listening.getHost().port
    pytest_twisted.blockon(defer.maybeDeferred(listening.stopListening))


@pytest_twisted.ensureDeferred
async def test_calls_are_multiplexed_and_answered_in_any_order(port: int) -> None:
    """Several calls in flight on one connection each get their own answer; the context names the user."""
    client = await IpcClient.connect(reactor(), "127.0.0.1", port, TEST_PROTOCOL, "rm")
    answers = await defer.gatherResults(
        [
            client.call("echoUser", UserInformationProto(effectiveUser=name), UserInformationProto)
            for name in ("later", "a", "b")
        ]
    )
    assert [a.effectiveUser for a in answers] == ["later:rm", "a:rm", "b:rm"]
    client.close()


@pytest_twisted.ensureDeferred
async def test_error_replies_become_remote_errors_and_the_connection_stays_usable(port: int) -> None:
    """ERROR replies fail only their call with the Java class name; unknown methods too."""
    client = await IpcClient.connect(reactor(), "127.0.0.1", port, TEST_PROTOCOL, "rm")
    with pytest.raises(RemoteError) as refused:
        await client.call("echoUser", UserInformationProto(effectiveUser="nobody"), UserInformationProto)
    assert refused.value.java_class == "org.apache.hadoop.yarn.exceptions.YarnException"
    with pytest.raises(RemoteError) as unknown:
        await client.call("noSuchMethod", UserInformationProto(), UserInformationProto)
    assert unknown.value.java_class == "org.apache.hadoop.ipc.RpcNoSuchMethodException"
    ok = await client.call("echoUser", UserInformationProto(effectiveUser="x"), UserInformationProto)
    assert ok.effectiveUser == "x:rm"
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_server_that_refuses_the_protocol_fails_every_call(port: int) -> None:
    """A FATAL reply (unknown protocol in the context) fails the pending call and later ones."""
    client = await IpcClient.connect(reactor(), "127.0.0.1", port, "org.example.NotServedPB", "rm")
    with pytest.raises(FatalRpcError) as fatal:
        await client.call("echoUser", UserInformationProto(), UserInformationProto)
    assert "NotServedPB" in str(fatal.value)
    with pytest.raises(IpcClientError):
        await client.call("echoUser", UserInformationProto(), UserInformationProto)


@pytest_twisted.ensureDeferred
async def test_connecting_to_a_closed_port_fails_cleanly() -> None:
    """No server: the connect Deferred fails with the connection error."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        with pytest.raises(Exception) as failed:
            await IpcClient.connect(reactor(), "127.0.0.1", s.getsockname()[1], TEST_PROTOCOL, "rm")
        assert "refused" in str(failed.value).lower()
    finally:
        s.close()
