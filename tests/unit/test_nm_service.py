"""ContainerManagementProtocol handlers with real protobuf requests, over a ContainerManager
with the FakeRuntime on a Clock: per-container answers in succeeded/failed_requests, as YARN's NM."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.container.container_manager import ContainerManager
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.container.fake_runtime import FakeRuntime
from cortex_rm.container.launch import NodeFacts
from cortex_rm.container.runtime_spec import ContainerSettings
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.errors import INVALID_TOKEN, YARN_EXCEPTION, RemoteError
from cortex_rm.yarn_api.nm_service import NM_PROTOCOL, ContainerManagementService, caller_of, nm_protocol
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext, refusal
from cortex_rm.yarn_api.tokens import read_container_identifier, read_nm_token_identifier
from tests.support.nm_requests import (
    ATTEMPT,
    KEY,
    NODE,
    cid,
    container_ids_proto,
    container_token,
    nm_token,
    start_containers,
    start_request,
)

#: What the connection proved under SASL TOKEN: the identifier of the AM's NMToken.
AM_PROOF = nm_token(ATTEMPT).identifier

NOW_S = 1_700_000_000.0


def call(method: str, user: str | None = str(ATTEMPT), token_identifier: bytes | None = None) -> CallContext:
    return CallContext(
        peer="127.0.0.1:50000",
        protocol=NM_PROTOCOL,
        method=method,
        call_id=0,
        client_id=b"\x00" * 16,
        retry_count=0,
        effective_user=user,
        real_user=None,
        auth_method=AuthMethod.TOKEN if token_identifier else AuthMethod.SIMPLE,
        token_identifier=token_identifier,
    )


class Node:
    def __init__(self, tmp: Path) -> None:
        self.clock = Clock()
        self.clock.advance(NOW_S)
        self.runtime = FakeRuntime(self.clock)
        tokens = ContainerTokenVerifier(NODE, self.clock, read_container_identifier, read_nm_token_identifier)
        tokens.set_master_key(KEY)
        run: Callable[[Callable[[], Any]], defer.Deferred[Any]] = lambda fn: defer.maybeDeferred(fn)
        self.manager = ContainerManager(
            clock=self.clock,
            runtime=self.runtime,
            run=run,
            tokens=tokens,
            node=NodeFacts("127.0.0.1", 45454, 8042, "/usr/lib/jvm/java-17-openjdk-amd64"),
            settings=ContainerSettings(local_dirs=(tmp / "local",), log_dirs=(tmp / "logs",)),
        )
        self.service = ContainerManagementService(self.manager)

    def start(self, *requests: ys.StartContainerRequestProto, **kw: Any) -> ys.StartContainersResponseProto:
        response = self.service.start_containers(call("startContainers", **kw), start_containers(*requests))
        self.clock.advance(0)
        return response

    def statuses(self, *seqs: int) -> ys.GetContainerStatusesResponseProto:
        request = ys.GetContainerStatusesRequestProto()
        request.container_id.extend(container_ids_proto(*(cid(s) for s in seqs)))
        return self.service.get_container_statuses(call("getContainerStatuses", None, AM_PROOF), request)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def failures(response: Any) -> dict[str, tuple[str, str]]:
    return {
        str(records.container_id_from_proto(f.container_id)): (f.exception.class_name, f.exception.message)
        for f in response.failed_requests
    }


def test_valid_token_is_a_succeeded_request(node: Node) -> None:
    """startContainers with a valid ContainerToken: the container id is in succeeded_requests and it runs."""
    response = node.start(start_request(container_token(cid(1))))
    assert [records.container_id_from_proto(p) for p in response.succeeded_requests] == [cid(1)]
    assert len(response.failed_requests) == 0
    assert str(cid(1)) in node.runtime.running


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"sign_with": MasterKey(KEY.key_id, b"forged-secret-bytes!")}, "seems to have an illegally generated token"),
        ({"expiry_ms": 1_000}, "This token is expired"),
        ({"node": "10.9.9.9:45454"}, "is not valid for current Node manager"),
    ],
)
def test_bad_tokens_are_failed_requests_with_invalid_token(node: Node, token: dict[str, Any], message: str) -> None:
    """Forged, expired and other-node tokens: failed_requests under the container id, SecretManager$InvalidToken."""
    response = node.start(start_request(container_token(cid(1), **token)))
    assert len(response.succeeded_requests) == 0
    (failed,) = response.failed_requests
    assert records.container_id_from_proto(failed.container_id) == cid(1)
    assert failed.exception.class_name == INVALID_TOKEN == "org.apache.hadoop.security.token.SecretManager$InvalidToken"
    assert message in failed.exception.message
    assert failed.exception.trace.startswith(INVALID_TOKEN + ": ")
    assert node.runtime.specs == []


def test_each_container_of_a_call_is_answered_on_its_own(node: Node) -> None:
    """One good and one forged container in one call: one succeeded, one failed; a duplicate is refused."""
    good = start_request(container_token(cid(1)))
    forged = start_request(container_token(cid(2), sign_with=MasterKey(KEY.key_id, b"x" * 20)))
    response = node.start(good, forged)
    assert [records.container_id_from_proto(p) for p in response.succeeded_requests] == [cid(1)]
    assert failures(response)[str(cid(2))][0] == INVALID_TOKEN
    again = node.start(start_request(container_token(cid(1))))
    assert failures(again) == {str(cid(1)): (YARN_EXCEPTION, f"Container {cid(1)} already is running on this node!!")}


def test_a_request_without_a_token_is_invalid_token(node: Node) -> None:
    """No container_token: InvalidToken (no container id to file it under)."""
    response = node.start(ys.StartContainerRequestProto(container_launch_context=yp.ContainerLaunchContextProto()))
    (failed,) = response.failed_requests
    assert failed.exception.class_name == INVALID_TOKEN and not failed.HasField("container_id")


def test_stop_reports_killed_by_appmaster(node: Node) -> None:
    """stopContainers: succeeded; the container ends with -105; an unknown one is a failed request."""
    node.start(start_request(container_token(cid(1))))
    request = ys.StopContainersRequestProto()
    request.container_id.extend(container_ids_proto(cid(1), cid(5)))
    response = node.service.stop_containers(call("stopContainers", None, AM_PROOF), request)
    node.clock.advance(0)
    assert [records.container_id_from_proto(p) for p in response.succeeded_requests] == [cid(1)]
    assert failures(response) == {
        str(cid(5)): (YARN_EXCEPTION, f"Container {cid(5)} is not handled by this NodeManager")
    }
    (status,) = node.statuses(1).status
    assert (status.state, status.exit_status) == (yp.C_COMPLETE, -105)
    assert "Container killed by the ApplicationMaster." in status.diagnostics


def test_statuses_of_running_and_unknown_containers(node: Node) -> None:
    """getContainerStatuses: C_RUNNING with its capability and -1000; unknown ids are failed requests."""
    node.start(start_request(container_token(cid(1), memory_mb=2048)))
    response = node.statuses(1, 3)
    (status,) = response.status
    assert records.container_id_from_proto(status.container_id) == cid(1)
    assert (status.state, status.exit_status) == (yp.C_RUNNING, -1000)
    assert records.resource_from_proto(status.capability).memory_mb == 2048
    assert list(failures(response)) == [str(cid(3))]
    node.runtime.finish(str(cid(1)), 0)
    (done,) = node.statuses(1).status
    assert (done.state, done.exit_status) == (yp.C_COMPLETE, 0)


def test_another_applications_attempt_is_refused(node: Node) -> None:
    """A caller connected as another application's attempt cannot start this application's container."""
    other = str(ApplicationAttemptId(ApplicationId(1700000000000, 42), 1))
    response = node.start(start_request(container_token(cid(1))), user=other)
    assert failures(response)[str(cid(1))][0] == YARN_EXCEPTION
    assert "Unauthorized request to start container" in failures(response)[str(cid(1))][1]


@pytest.mark.parametrize("method", ["stopContainers", "getContainerStatuses"])
def test_stop_and_status_need_an_nmtoken_a_simple_user_name_proves_nothing(node: Node, method: str) -> None:
    """YARN's rule: without an NMToken the whole call is refused, even for a caller that names
    the container's own attempt as its SIMPLE user (anyone can); the container is untouched."""
    node.start(start_request(container_token(cid(1))))
    stop = ys.StopContainersRequestProto()
    stop.container_id.extend(container_ids_proto(cid(1)))
    status = ys.GetContainerStatusesRequestProto()
    status.container_id.extend(container_ids_proto(cid(1)))
    with pytest.raises(RemoteError, match="Invalid NMToken") as refused:
        if method == "stopContainers":
            node.service.stop_containers(call(method, str(ATTEMPT)), stop)
        else:
            node.service.get_container_statuses(call(method, str(ATTEMPT)), status)
    assert refused.value.java_class == YARN_EXCEPTION
    node.clock.advance(0)
    (running,) = node.statuses(1).status
    assert running.state == yp.C_RUNNING


def test_another_applications_nmtoken_cannot_stop_or_inspect_a_container(node: Node) -> None:
    """An NMToken proves its own application only: another application's container is a failed request."""
    node.start(start_request(container_token(cid(1))))
    other = nm_token(ApplicationAttemptId(ApplicationId(1700000000000, 42), 1)).identifier
    stop = ys.StopContainersRequestProto()
    stop.container_id.extend(container_ids_proto(cid(1)))
    stopped = node.service.stop_containers(call("stopContainers", None, other), stop)
    status = ys.GetContainerStatusesRequestProto()
    status.container_id.extend(container_ids_proto(cid(1)))
    seen = node.service.get_container_statuses(call("getContainerStatuses", None, other), status)
    assert not stopped.succeeded_requests and not seen.status
    for response, verb in ((stopped, "stop"), (seen, "get")):
        assert failures(response)[str(cid(1))][1].startswith(f"Unauthorized request to {verb} container")
    node.clock.advance(0)
    (running,) = node.statuses(1).status
    assert running.state == yp.C_RUNNING


def test_caller_is_the_nmtoken_attempt_under_token_auth() -> None:
    """Under DIGEST-MD5 the caller is the attempt of the NMToken; under SIMPLE the connection's user."""
    assert caller_of(call("x", None, AM_PROOF)) == str(ATTEMPT)
    assert caller_of(call("x", "appattempt_1_0001_000001")) == "appattempt_1_0001_000001"
    assert caller_of(call("x", None, b"\xff\xff")) is None


def test_protocol_serves_three_methods_and_names_the_others(node: Node) -> None:
    """The protocol serves start/stop/status; Hadoop's other methods are answered 'not supported by Cortex'."""
    protocol = nm_protocol(node.service)
    assert protocol.name == "org.apache.hadoop.yarn.api.ContainerManagementProtocolPB"
    assert set(protocol.methods) == {"startContainers", "stopContainers", "getContainerStatuses"}
    error = refusal(protocol, NM_PROTOCOL, "signalToContainer", 1, NM_PROTOCOL)
    assert error.java_class == YARN_EXCEPTION
    assert error.message == "signalToContainer is not supported by Cortex"
    assert protocol.methods["startContainers"].response_type is ys.StartContainersResponseProto
