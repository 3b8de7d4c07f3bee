"""ContainerManagementProtocol on the NodeManager's port: start, stop, and report containers.

The wire face of ``container.container_manager.ContainerManager``.  Each call
carries a list of containers and is answered as YARN's ``ContainerManagerImpl``
answers it: the call itself succeeds, and every container is either in
``succeeded_requests`` (or ``status``) or in ``failed_requests`` as a
``ContainerExceptionMapProto`` whose ``SerializedExceptionProto`` names the Java
exception (``class_name``), its message and a trace.  Hadoop's ``NMClientImpl``
looks its container up in ``failed_requests`` and throws that exception
(``SerializedExceptionPBImpl.deSerialize`` instantiates the class by name):

* a ContainerToken that does not verify -> ``SecretManager$InvalidToken``, filed
  under the container id the token names (YARN files it under none when the
  token is bad, which NMClient then takes for a success; naming the container
  makes the AM see the refusal);
* anything else refused -> ``YarnException`` with the reason.

Who may do what, as YARN's ``ContainerManagerImpl`` has it: every caller proves an
application attempt with an NMToken (SASL TOKEN, DIGEST-MD5, checked against the RM's
container key: ``ContainerTokenVerifier.nm_token_password``): an ApplicationMaster's
NMClient with the one the RM gave it with its containers, the RM's AM launcher with one
it signs; the NodeManager's port refuses SIMPLE.  ``stopContainers`` and
``getContainerStatuses`` act on containers of the token's application only ("Invalid
NMToken" without a token, should a port ever allow that; "Unauthorized request" for
another application's).  ``startContainers`` is authorized by each container's
ContainerToken, which only the RM can sign, and the caller's attempt must be of that
container's application.

Spark 4.3 only calls ``startContainers``; ``stopContainers`` and
``getContainerStatuses`` serve other YARN clients.  Hadoop's other
ContainerManagementProtocol methods are answered "not supported by Cortex".
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from cortex_rm.container.container_manager import ContainerManager
from cortex_rm.container.local_resources import RequestedResource, ResourceType, ResourceUrl, Visibility
from cortex_rm.container.nm_container import NMContainer
from cortex_rm.container.start_request import ContainerRefused, LaunchContext, Refusal, StartRequest
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ContainerId
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.errors import INVALID_TOKEN, YARN_EXCEPTION, RemoteError
from cortex_rm.yarn_api.proto import containermanagement_protocol_pb2
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import CallContext, Handler, RpcProtocol
from cortex_rm.yarn_api.tokens import read_nm_token_identifier, token_from_proto

NM_PROTOCOL = "org.apache.hadoop.yarn.api.ContainerManagementProtocolPB"

#: Hadoop 3.5's other ContainerManagementProtocol methods: known by name, not served.
UNSUPPORTED_NM_METHODS = frozenset(
    {
        "increaseContainersResource",
        "updateContainer",
        "signalToContainer",
        "localize",
        "getLocalizationStatuses",
        "reInitializeContainer",
        "restartContainer",
        "rollbackLastReInitialization",
        "commitLastReInitialization",
    }
)

_WIRE_STATE = {
    ContainerState.NEW: yp.C_NEW,
    ContainerState.RUNNING: yp.C_RUNNING,
    ContainerState.COMPLETE: yp.C_COMPLETE,
}


#: The Java exception NMClient throws for each kind of refusal.
_JAVA_CLASS = {Refusal.INVALID_TOKEN: INVALID_TOKEN, Refusal.REFUSED: YARN_EXCEPTION}


# An AM's text as Java reads it: proto2 does not check UTF-8 (Python's protobuf then gives bytes).
_text = records.text_from_proto


def requested_resource(entry: yp.StringLocalResourceMapProto) -> RequestedResource:
    """One ``local_resources`` entry as it arrived (the ContainerManager checks it)."""
    value = entry.value
    url = None
    if value.HasField("resource"):
        proto = value.resource
        url = ResourceUrl(
            scheme=_text(proto.scheme).lower(),
            file=_text(proto.file),
            host=_text(proto.host),
            port=proto.port if proto.HasField("port") else -1,
            user_info=_text(proto.userInfo),
        )
    return RequestedResource(
        link_name=_text(entry.key),
        url=url,
        type=ResourceType(yp.LocalResourceTypeProto.Name(value.type)) if value.HasField("type") else ResourceType.FILE,
        timestamp_ms=value.timestamp if value.HasField("timestamp") else None,
        size=value.size if value.HasField("size") else -1,
        visibility=(
            Visibility(yp.LocalResourceVisibilityProto.Name(value.visibility))
            if value.HasField("visibility")
            else Visibility.APPLICATION
        ),
    )


def start_request_from_proto(request: ys.StartContainerRequestProto) -> StartRequest:
    """A ``StartContainerRequestProto`` in the NodeManager's own types."""
    clc = request.container_launch_context
    return StartRequest(
        token=token_from_proto(request.container_token) if request.HasField("container_token") else None,
        launch_context=LaunchContext(
            local_resources=tuple(requested_resource(e) for e in clc.localResources),
            environment=tuple((_text(e.key), _text(e.value)) for e in clc.environment),
            commands=tuple(_text(c) for c in clc.command),
            tokens=clc.tokens,
        ),
    )


def caller_of(call: CallContext) -> str | None:
    """Who is calling: the attempt an NMToken names (TOKEN), else the connection's user."""
    if call.token_identifier is not None:
        return token_attempt(call)
    return call.effective_user


def token_attempt(call: CallContext) -> str | None:
    """The application attempt whose NMToken the caller proved (SASL TOKEN); None without one."""
    if call.token_identifier is None:
        return None
    try:
        return str(read_nm_token_identifier(call.token_identifier).attempt_id)
    except ValueError:  # MalformedId too: an unreadable identifier names nobody
        return None


def require_nm_token(call: CallContext, method: str) -> str:
    """The attempt of the caller's NMToken; YARN's ``Invalid NMToken`` for a caller without one
    (a SIMPLE user name proves nothing: anyone can claim to be an application attempt)."""
    attempt = token_attempt(call)
    if attempt is None:
        raise RemoteError(
            YARN_EXCEPTION,
            f"Invalid NMToken: {method} needs the NMToken of the container's application, which the RM "
            "gives its ApplicationMaster with the containers it allocates on this node",
        )
    return attempt


def serialized_exception(java_class: str, message: str, out: yp.SerializedExceptionProto) -> None:
    """A SerializedExceptionProto as ``SerializedException.newInstance`` fills it."""
    out.class_name = java_class
    out.message = message
    out.trace = f"{java_class}: {message}\n\tat org.apache.hadoop.yarn.server.nodemanager.ContainerManager(Cortex)\n"


#: Where a response lists the containers it refuses (``failed_requests``).
FailedRequests = RepeatedCompositeFieldContainer[ys.ContainerExceptionMapProto]


def _fail(refusal: ContainerRefused, container_id: ContainerId | None, out: FailedRequests) -> None:
    entry = out.add()
    cid = refusal.container_id or container_id
    if cid is not None:
        records.container_id_to_proto(cid, entry.container_id)
    serialized_exception(_JAVA_CLASS[refusal.kind], refusal.message, entry.exception)


def container_status(c: NMContainer, out: yp.ContainerStatusProto) -> None:
    """A container's ContainerStatusProto."""
    report = c.report()
    records.container_id_to_proto(c.container_id, out.container_id)
    out.state = _WIRE_STATE[report.state]
    out.exit_status = report.exit_status
    out.diagnostics = report.diagnostics
    records.resource_to_proto(c.resource, out.capability)
    out.executionType = yp.GUARANTEED


class ContainerManagementService:
    """The three calls of ContainerManagementProtocol over a ContainerManager."""

    def __init__(self, manager: ContainerManager) -> None:
        self.manager = manager

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler, for the IPC registry."""
        return {
            "startContainers": self.start_containers,
            "stopContainers": self.stop_containers,
            "getContainerStatuses": self.get_container_statuses,
        }

    def _ids(self, protos: Iterable[yp.ContainerIdProto], failed: FailedRequests) -> list[ContainerId]:
        ids = []
        for p in protos:
            try:
                ids.append(records.container_id_from_proto(p))
            except MalformedId as e:
                _fail(ContainerRefused(Refusal.REFUSED, str(e)), None, failed)
        return ids

    def start_containers(self, call: CallContext, request: ys.StartContainersRequestProto) -> ys.StartContainersResponseProto:
        response = ys.StartContainersResponseProto()
        caller = caller_of(call)
        for start in request.start_container_request:
            try:
                cid = self.manager.start(start_request_from_proto(start), caller)
            except ContainerRefused as refusal:
                _fail(refusal, None, response.failed_requests)
                continue
            records.container_id_to_proto(cid, response.succeeded_requests.add())
        return response

    def stop_containers(self, call: CallContext, request: ys.StopContainersRequestProto) -> ys.StopContainersResponseProto:
        response = ys.StopContainersResponseProto()
        caller = require_nm_token(call, "stopContainers")
        for cid in self._ids(request.container_id, response.failed_requests):
            try:
                self.manager.stop(cid, caller)
            except ContainerRefused as refusal:
                _fail(refusal, cid, response.failed_requests)
                continue
            records.container_id_to_proto(cid, response.succeeded_requests.add())
        return response

    def get_container_statuses(
        self, call: CallContext, request: ys.GetContainerStatusesRequestProto
    ) -> ys.GetContainerStatusesResponseProto:
        response = ys.GetContainerStatusesResponseProto()
        caller = require_nm_token(call, "getContainerStatuses")
        for cid in self._ids(request.container_id, response.failed_requests):
            try:
                container = self.manager.status(cid, caller)
            except ContainerRefused as refusal:
                _fail(refusal, cid, response.failed_requests)
                continue
            container_status(container, response.status.add())
        return response


def nm_protocol(service: ContainerManagementService) -> RpcProtocol:
    """ContainerManagementProtocol with our handlers; Hadoop's other methods answered by name."""
    return RpcProtocol.from_service(
        NM_PROTOCOL,
        containermanagement_protocol_pb2.DESCRIPTOR.services_by_name["ContainerManagementProtocolService"],
        service.handlers(),
        unsupported=UNSUPPORTED_NM_METHODS,
    )

