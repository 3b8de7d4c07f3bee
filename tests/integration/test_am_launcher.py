"""The RM's AM launcher: the launch context it builds and the startContainers call it makes.

The node side is our real IPC server with a recording ContainerManagementProtocol
handler, so the call crosses a real socket in Hadoop's wire format.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.master_keys import RMKeys
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.yarn.ids import ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import AMRM_TOKEN_KIND, MasterKey
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.am_launcher import NM_PROTOCOL, AMLauncher, AMLaunchError, am_launch_context
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.proto import containermanagement_protocol_pb2
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext, RpcProtocol
from cortex_rm.yarn_api.sasl import SaslServer
from cortex_rm.yarn_api.tokens import parse_container_identifier, read_container_identifier, read_nm_token_identifier
from cortex_rm.yarn_api.writable import read_token_storage, read_vlong
from tests.support.reactor import reactor
from tests.support.rm_core import new_table, result_of

pytestmark = pytest.mark.integration


def _app_with_context() -> Any:
    table = new_table()
    app_id = result_of(table.new_application("alice"))
    ctx = yp.ApplicationSubmissionContextProto(application_name="am-test")
    records.app_id_to_proto(app_id, ctx.application_id)
    ctx.am_container_spec.command.append("{{JAVA_HOME}}/bin/java -version")
    ctx.am_container_spec.environment.add(key="SPARK_USER", value="alice")
    ctx.am_container_spec.tokens = b"HDTS\x00\x00\x00"
    submission = records.submission_from_proto(ctx, "alice")
    return result_of(table.submit(submission))


def _am_container(app: Any, port: int) -> RMContainer:
    attempt = app.current_attempt
    return RMContainer(ContainerId(attempt.attempt_id, 1), NodeId("127.0.0.1", port), Resource(1024, 1), 0, is_am=True)


def test_launch_context_adds_the_amrm_token_and_the_rms_environment() -> None:
    """The submitted CLC is kept; its credentials gain the AMRMToken for this attempt."""
    app = _app_with_context()
    keys = result_of(RMKeys.recover(MemoryStateStore()))
    clc = am_launch_context(app, _am_container(app, 1), keys, "127.0.0.1:8030")
    assert list(clc.command) == ["{{JAVA_HOME}}/bin/java -version"]
    env = {e.key: e.value for e in clc.environment}
    assert env["SPARK_USER"] == "alice"
    assert env["APPLICATION_WEB_PROXY_BASE"] == f"/proxy/{app.app_id}"
    assert env["APP_SUBMIT_TIME_ENV"] == str(app.submit_time_ms)
    tokens, _ = read_token_storage(clc.tokens)
    (raw,) = tokens.values()
    pos, fields = 0, []
    for _ in range(4):
        length, pos = read_vlong(raw, pos)
        fields.append(raw[pos : pos + length])
        pos += length
    identifier, password, kind, service = fields
    assert kind.decode() == AMRM_TOKEN_KIND and service == b"127.0.0.1:8030"
    assert keys.amrm.verify(identifier, password)
    assert yst.AMRMTokenIdentifierProto.FromString(identifier).appAttemptId.attemptId == 1


@pytest_twisted.ensureDeferred
async def test_launcher_calls_start_containers_with_a_valid_container_token() -> None:
    """startContainers reaches the node with the CLC and a token signed by the container key."""
    seen: list[tuple[CallContext, ys.StartContainersRequestProto]] = []
    refuse = {"on": False}

    def start(call: CallContext, request: ys.StartContainersRequestProto) -> ys.StartContainersResponseProto:
        seen.append((call, request))
        response = ys.StartContainersResponseProto()
        ident = parse_container_identifier(request.start_container_request[0].container_token.identifier)
        if refuse["on"]:
            failed = response.failed_requests.add()
            failed.container_id.CopyFrom(ident.containerId)
            failed.exception.class_name = "org.apache.hadoop.yarn.exceptions.YarnException"
            failed.exception.message = "no room"
        else:
            response.succeeded_requests.add().CopyFrom(ident.containerId)
        return response

    keys = result_of(RMKeys.recover(MemoryStateStore()))
    listening = _node_port(start, keys.container)
    try:
        app = _app_with_context()
        launcher = AMLauncher(reactor(), keys, "127.0.0.1:8030", 42, lambda: 1_700_000_000_000)
        container = _am_container(app, listening.getHost().port)
        await launcher.launch(app, container)
        call, request = seen[0]
        assert call.auth_method is AuthMethod.TOKEN  # proven with an NMToken, as a NodeManager wants
        assert call.token_identifier is not None
        proven = read_nm_token_identifier(call.token_identifier)
        assert (proven.attempt_id, proven.node_address) == (container.attempt_id, str(container.node_id))
        token = request.start_container_request[0].container_token
        assert keys.container.verify(token.identifier, token.password)
        ident = parse_container_identifier(token.identifier)
        assert ident.nmHostAddr == str(container.node_id) and ident.appSubmitter == "alice"
        assert ident.containerType == yp.APPLICATION_MASTER
        refuse["on"] = True
        with pytest.raises(AMLaunchError, match="no room"):
            await launcher.launch(app, container)
    finally:
        await defer.maybeDeferred(listening.stopListening)


def _node_port(start: Any, key: MasterKey) -> Any:
    """A NodeManager's IPC port on loopback: ``start`` as startContainers, an NMToken for this
    node under ``key`` required (SASL TOKEN only, as the NodeManager role serves it)."""
    verifier: list[ContainerTokenVerifier] = []  # made once the port is known: the node's id
    service = containermanagement_protocol_pb2.DESCRIPTOR.services_by_name["ContainerManagementProtocolService"]
    factory = IpcServerFactory(
        [RpcProtocol.from_service(NM_PROTOCOL, service, {"startContainers": start})],
        SaslServer(lambda identifier: verifier[0].nm_token_password(identifier), allow_simple=False),
    )
    listening = reactor().listenTCP(0, factory, interface="127.0.0.1")
    tokens = ContainerTokenVerifier(
        NodeId("127.0.0.1", listening.getHost().port), reactor(), read_container_identifier, read_nm_token_identifier
    )
    tokens.set_master_key(key)
    verifier.append(tokens)
    return listening


@pytest_twisted.ensureDeferred
async def test_a_node_that_does_not_know_the_key_refuses_the_launcher() -> None:
    """The launcher's NMToken is checked: a node holding another key refuses it (no call is made)."""
    seen: list[Any] = []
    listening = _node_port(lambda call, request: seen.append(request), MasterKey(99, b"another key".ljust(20)))
    try:
        app = _app_with_context()
        keys = result_of(RMKeys.recover(MemoryStateStore()))
        launcher = AMLauncher(reactor(), keys, "127.0.0.1:8030", 42, lambda: 0)
        with pytest.raises(AMLaunchError, match="InvalidToken|token"):
            await launcher.launch(app, _am_container(app, listening.getHost().port))
        assert seen == []
    finally:
        await defer.maybeDeferred(listening.stopListening)


@pytest_twisted.ensureDeferred
async def test_an_unreachable_node_is_a_launch_error() -> None:
    """No NodeManager at the address: AMLaunchError naming the node."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        app = _app_with_context()
        keys = result_of(RMKeys.recover(MemoryStateStore()))
        launcher = AMLauncher(reactor(), keys, "127.0.0.1:8030", 42, lambda: 0)
        with pytest.raises(AMLaunchError, match="could not reach"):
            await launcher.launch(app, _am_container(app, s.getsockname()[1]))
    finally:
        s.close()
