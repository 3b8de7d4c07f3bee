"""ApplicationMasterProtocol on the RM's scheduler port: register, allocate, finish.

The requests carry no application id: the AM is identified by the AMRMToken it
authenticated with (DIGEST-MD5 over SASL; the port accepts nothing else), so the
CallContext's token identifier names the attempt.  ``allocate`` follows YARN's
``ApplicationMasterService``:

* ``response_id`` must equal the last response's id; a request that repeats the one
  before (``response_id + 1 == last``) gets the last response again (the AM did not
  see it); anything else is ``InvalidApplicationMasterRequestException``;
* an attempt this RM does not know as registered (e.g. after an RM restart) gets
  ``ApplicationMasterNotRegisteredException``, on which Hadoop's AMRMClient
  re-registers and re-sends all its asks;
* allocated containers carry the ask's priority and a ContainerToken; every node
  handed out for the first time to this attempt comes with an NMToken.

Decisions are made by an ``AMScheduling`` (the RM's scheduling glue); this module
only translates between it and the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from twisted.internet import defer

from cortex_rm.allocator.app_states import FinalStatus
from cortex_rm.allocator.asks import ResourceAsk
from cortex_rm.allocator.cluster_scheduling import AllocationResult
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.node_updates import NodeUpdates
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import CONTAINER_TOKEN_KIND, MasterKey
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.allocator_errors import translating_allocator_errors
from cortex_rm.yarn_api.errors import (
    ACCESS_CONTROL_EXCEPTION,
    APPLICATION_MASTER_NOT_REGISTERED,
    INVALID_APPLICATION_MASTER_REQUEST,
    RemoteError,
)
from cortex_rm.yarn_api.proto import applicationmaster_protocol_pb2
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext, Handler, RpcProtocol
from cortex_rm.yarn_api.tokens import make_token, nm_token, parse_amrm_identifier

SCHEDULER_PROTOCOL = "org.apache.hadoop.yarn.api.ApplicationMasterProtocolPB"
CONTAINER_TOKEN_LIFETIME_MS = 10 * 60 * 1000  # yarn.resourcemanager.rm.container-allocation.expiry-interval-ms

_Request = TypeVar("_Request")
_Result = TypeVar("_Result")


class AMScheduling(Protocol):
    """What the AM service needs from the RM's scheduling glue."""

    maximum_allocation: Resource

    def register(
        self, attempt_id: ApplicationAttemptId, host: str, rpc_port: int, tracking_url: str
    ) -> defer.Deferred[None]:
        """The AM registered; fires when recorded."""

    def is_registered(self, attempt_id: ApplicationAttemptId) -> bool:
        """Whether this RM knows the attempt as registered and live."""

    def allocate(
        self,
        attempt_id: ApplicationAttemptId,
        asks: list[ResourceAsk],
        releases: list[ContainerId],
        blacklist_add: list[str],
        blacklist_remove: list[str],
        progress: float,
    ) -> AllocationResult:
        """Apply the AM's heartbeat and hand out what is ready for it."""

    def unregister(
        self, attempt_id: ApplicationAttemptId, final_status: FinalStatus, diagnostics: str, tracking_url: str
    ) -> defer.Deferred[bool]:
        """Fires True once the outcome is stored."""

    def application_info(self, attempt_id: ApplicationAttemptId) -> tuple[str, str, bytes]:
        """(queue, submitting user, submission context bytes) of the attempt's application."""

    def node_http_address(self, node_id: NodeId) -> str:
        """The web address of a node."""


@dataclass
class _Session:
    """What the service remembers per registered attempt."""

    last_response_id: int = 0
    last_response: ys.AllocateResponseProto | None = None
    nodes_with_nm_token: set[NodeId] = field(default_factory=set)
    node_cursor: int = 0  # the last NodeUpdates change this AM was told of


class ApplicationMasterService:
    """The handlers of ApplicationMasterProtocol."""

    def __init__(
        self,
        scheduling: AMScheduling,
        container_key: MasterKey,
        rm_identifier: int,
        now_ms: Callable[[], int],
        node_updates: NodeUpdates | None = None,
    ) -> None:
        self.scheduling = scheduling
        self.node_updates = node_updates  # updated_nodes (node_updates.py); None: never any
        self.container_key = container_key
        self.rm_identifier = rm_identifier
        self.now_ms = now_ms
        self._sessions: dict[ApplicationAttemptId, _Session] = {}

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler, for the IPC registry."""
        return {
            "registerApplicationMaster": self._guarded(self.register_application_master),
            "allocate": self._guarded(self.allocate),
            "finishApplicationMaster": self._guarded(self.finish_application_master),
        }

    def _guarded(
        self, handler: Callable[[ApplicationAttemptId, _Request], _Result]
    ) -> Callable[[CallContext, _Request], _Result]:
        """Identify the attempt from the token; map allocator errors to YARN's exceptions."""

        translated = translating_allocator_errors(handler)

        def run(call: CallContext, request: _Request) -> _Result:
            return translated(self._attempt_of(call), request)

        run.__name__ = handler.__name__
        return run

    @staticmethod
    def _attempt_of(call: CallContext) -> ApplicationAttemptId:
        if call.auth_method is not AuthMethod.TOKEN or call.token_identifier is None:
            raise RemoteError(ACCESS_CONTROL_EXCEPTION, "the scheduler port needs an AMRMToken (TOKEN authentication)")
        try:
            return records.attempt_id_from_proto(parse_amrm_identifier(call.token_identifier).appAttemptId)
        except ValueError as e:  # MalformedId too: an attempt id without all its parts
            raise RemoteError(ACCESS_CONTROL_EXCEPTION, str(e)) from None

    def _new_session(self, attempt_id: ApplicationAttemptId) -> None:
        """A registered AM's session; sessions of attempts that are no longer registered go.

        Every call checks that its attempt is still registered before it reads the
        session, so a session outliving its attempt is never used; dropping them here
        keeps the table as small as the number of live AMs.
        """
        self._sessions = {a: s for a, s in self._sessions.items() if self.scheduling.is_registered(a)}
        cursor = self.node_updates.cursor() if self.node_updates is not None else 0
        self._sessions[attempt_id] = _Session(node_cursor=cursor)

    # -- register / finish ---------------------------------------------------------------

    def register_application_master(
        self, attempt_id: ApplicationAttemptId, request: ys.RegisterApplicationMasterRequestProto
    ) -> defer.Deferred[ys.RegisterApplicationMasterResponseProto]:
        if self.scheduling.is_registered(attempt_id) and attempt_id in self._sessions:
            raise RemoteError(
                INVALID_APPLICATION_MASTER_REQUEST,
                f"Application Master is already registered : {attempt_id.app_id}",
            )
        queue, user, context = self.scheduling.application_info(attempt_id)
        text = records.text_from_proto
        d = self.scheduling.register(attempt_id, text(request.host), request.rpc_port, text(request.tracking_url))

        def respond(_: None) -> ys.RegisterApplicationMasterResponseProto:
            self._new_session(attempt_id)
            response = ys.RegisterApplicationMasterResponseProto(queue=queue)
            records.resource_to_proto(self.scheduling.maximum_allocation, response.maximumCapability)
            submission = yp.ApplicationSubmissionContextProto.FromString(context)
            response.application_ACLs.extend(submission.am_container_spec.application_ACLs)
            response.scheduler_resource_types.extend([ys.MEMORY, ys.CPU])
            return response

        return d.addCallback(respond)

    def finish_application_master(
        self, attempt_id: ApplicationAttemptId, request: ys.FinishApplicationMasterRequestProto
    ) -> defer.Deferred[ys.FinishApplicationMasterResponseProto]:
        if attempt_id not in self._sessions or not self.scheduling.is_registered(attempt_id):
            raise RemoteError(
                APPLICATION_MASTER_NOT_REGISTERED,
                f"Application Master is trying to unregister before registering for: {attempt_id}",
            )
        status = records.FINAL_FROM_PROTO.get(request.final_application_status, FinalStatus.UNDEFINED)
        text = records.text_from_proto
        d = self.scheduling.unregister(attempt_id, status, text(request.diagnostics), text(request.tracking_url))
        return d.addCallback(lambda done: ys.FinishApplicationMasterResponseProto(isUnregistered=bool(done)))

    # -- allocate ------------------------------------------------------------------------

    def allocate(self, attempt_id: ApplicationAttemptId, request: ys.AllocateRequestProto) -> ys.AllocateResponseProto:
        session = self._sessions.get(attempt_id)
        if session is None or not self.scheduling.is_registered(attempt_id):
            raise RemoteError(
                APPLICATION_MASTER_NOT_REGISTERED,
                f"AM is not registered for known application attempt: {attempt_id} or RM had restarted after AM"
                " registered. AM should re-register.",
            )
        if session.last_response is not None and request.response_id + 1 == session.last_response_id:
            return session.last_response  # a resend: the AM did not get our last answer
        if request.response_id != session.last_response_id:
            raise RemoteError(
                INVALID_APPLICATION_MASTER_REQUEST,
                f"Invalid responseId in AllocateRequest from application attempt: {attempt_id}, expect "
                f"responseId to be {session.last_response_id}, but get {request.response_id}",
            )
        asks = [self._ask(a) for a in request.ask]
        releases = [records.container_id_from_proto(c) for c in request.release]
        blacklist = request.blacklist_request
        result = self.scheduling.allocate(
            attempt_id,
            asks,
            releases,
            [records.text_from_proto(n) for n in blacklist.blacklist_additions],
            [records.text_from_proto(n) for n in blacklist.blacklist_removals],
            request.progress,
        )
        response = ys.AllocateResponseProto(response_id=session.last_response_id + 1)
        _, user, _ = self.scheduling.application_info(attempt_id)
        for container in result.allocated:
            self._container(container, user, response.allocated_containers.add())
            if container.node_id not in session.nodes_with_nm_token:
                session.nodes_with_nm_token.add(container.node_id)
                self._nm_token(attempt_id, container.node_id, user, response.nm_tokens.add())
        for container in result.completed:
            status = response.completed_container_statuses.add()
            records.container_id_to_proto(container.container_id, status.container_id)
            status.state = yp.C_COMPLETE
            status.exit_status = container.exit_status
            status.diagnostics = container.diagnostics
            records.resource_to_proto(container.resource, status.capability)
        records.resource_to_proto(result.headroom, response.limit)
        response.num_cluster_nodes = result.num_cluster_nodes
        if self.node_updates is not None:
            updated, session.node_cursor = self.node_updates.since(session.node_cursor)
            for node in updated:
                records.node_report(node, response.updated_nodes.add())
        session.last_response_id = response.response_id
        session.last_response = response
        return response

    def _ask(self, proto: yp.ResourceRequestProto) -> ResourceAsk:
        capability = records.resource_from_proto(proto.capability)
        if not capability.fits_in(self.scheduling.maximum_allocation) or capability.memory_mb < 0 or capability.vcores < 0:
            raise RemoteError(
                "org.apache.hadoop.yarn.exceptions.InvalidResourceRequestException",
                f"Invalid resource request! Cannot allocate containers as requested resource is greater than "
                f"maximum allowed allocation. Requested resource={capability}, maximum allowed allocation="
                f"{self.scheduling.maximum_allocation}",
            )
        return ResourceAsk(
            priority=proto.priority.priority,
            resource_name=records.text_from_proto(proto.resource_name) or "*",
            capability=capability,
            num_containers=max(0, proto.num_containers),
            relax_locality=proto.relax_locality,
            allocation_request_id=max(0, proto.allocation_request_id),
            node_label=(
                records.text_from_proto(proto.node_label_expression) if proto.HasField("node_label_expression") else None
            ),
        )

    def _container(self, container: RMContainer, user: str, out: yp.ContainerProto) -> None:
        records.container_id_to_proto(container.container_id, out.id)
        records.node_id_to_proto(container.node_id, out.nodeId)
        out.node_http_address = self.scheduling.node_http_address(container.node_id)
        records.resource_to_proto(container.resource, out.resource)
        out.priority.priority = container.priority
        out.allocation_request_id = container.allocation_request_id
        out.container_token.CopyFrom(container_token(self.container_key, container, user, self.rm_identifier, self.now_ms()))

    def _nm_token(self, attempt_id: ApplicationAttemptId, node_id: NodeId, user: str, out: ys.NMTokenProto) -> None:
        records.node_id_to_proto(node_id, out.nodeId)
        out.token.CopyFrom(nm_token(self.container_key, attempt_id, node_id, user))


def container_token(key: MasterKey, container: RMContainer, user: str, rm_identifier: int, now_ms: int) -> TokenProto:
    """The ContainerToken a NodeManager checks before starting ``container``."""
    ident = yst.ContainerTokenIdentifierProto(
        nmHostAddr=str(container.node_id),
        appSubmitter=user,
        expiryTimeStamp=now_ms + CONTAINER_TOKEN_LIFETIME_MS,
        masterKeyId=key.key_id,
        rmIdentifier=rm_identifier,
        creationTime=now_ms,
        allocation_request_id=container.allocation_request_id,
        containerType=yp.APPLICATION_MASTER if container.is_am else yp.TASK,
    )
    records.container_id_to_proto(container.container_id, ident.containerId)
    records.resource_to_proto(container.resource, ident.resource)
    ident.priority.priority = container.priority
    return make_token(key, ident.SerializeToString(), CONTAINER_TOKEN_KIND, str(container.node_id))


def am_protocol(service: ApplicationMasterService) -> RpcProtocol:
    """ApplicationMasterProtocol with our handlers (register, allocate, finish)."""
    return RpcProtocol.from_service(
        SCHEDULER_PROTOCOL,
        applicationmaster_protocol_pb2.DESCRIPTOR.services_by_name["ApplicationMasterProtocolService"],
        service.handlers(),
    )
