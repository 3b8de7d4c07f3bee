"""ApplicationClientProtocol: what ``YarnClient`` and ``spark-submit`` call on the RM.

Each handler takes the call's context and the decoded request and returns the
response message (or a Deferred of it).  Allocator errors become the Java
exceptions Hadoop's client expects (``ApplicationNotFoundException`` for an
unknown id, and so on) through ``allocator_errors``; the IPC layer turns those
into ERROR replies.

Every call is authorised first (``CALL_ACCESS``): a caller without a credential
may ask for the cluster's metrics (if ``anonymous_access`` allows) and nothing
else; an authenticated user may read the cluster and submit; an application may
be seen and changed only by whom ``AppAccess`` allows (YARN's VIEW_APP and
MODIFY_APP), and others' applications are left out of listings.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from cortex_rm.allocator import errors as alloc
from cortex_rm.allocator.app_access import MODIFY_APP, VIEW_APP, AppAccess
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.app_queries import ApplicationFilter
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.node_labels import CLUSTER_NODE_LABELS
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.yarn.delegation import Principal
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.allocator_errors import translating_allocator_errors
from cortex_rm.yarn_api.app_credentials import submit_as
from cortex_rm.yarn_api.client_credentials import CredentialCalls
from cortex_rm.yarn_api.proto import applicationclient_protocol_pb2
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import CallContext, Handler, RpcProtocol
from cortex_rm.yarn_api.user_auth import ANONYMOUS_CLUSTER_INFO, UserAuthenticator, require_user

CLIENT_PROTOCOL = "org.apache.hadoop.yarn.api.ApplicationClientProtocolPB"

_PROFILES_DISABLED = "Resource profiles are disabled on this cluster (yarn.resourcemanager.resource-profiles.enabled=false)"

# Methods an anonymous caller may call when ``anonymous_access`` is "cluster-info".
ANONYMOUS_METHODS = frozenset({"getClusterMetrics"})


# Methods of Hadoop's ApplicationClientProtocol that Cortex answers by name with a
# YarnException (their messages are not in our .proto subset).
UNSUPPORTED_CLIENT_METHODS = frozenset(
    {
        "getDelegationToken",
        "getNewReservation",
        "submitReservation",
        "updateReservation",
        "deleteReservation",
        "listReservations",
        "getNodeAttributes",
        "getAttributesToNodes",
        "getClusterNodeAttributes",
        "getNodesToAttributes",
    }
)


class ApplicationClientService:
    """The handlers of ApplicationClientProtocol over one RMContext."""

    def __init__(self, rm: RMContext, auth: UserAuthenticator, access: AppAccess) -> None:
        self.rm = rm
        self.auth = auth
        self.access = access
        self.credentials = CredentialCalls(auth)

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler, for the IPC registry; allocator errors leave as YARN's exceptions."""
        handlers: dict[str, Handler] = {
            "getNewApplication": self.get_new_application,
            "submitApplication": self.submit_application,
            "getApplicationReport": self.get_application_report,
            "forceKillApplication": self.force_kill_application,
            "getClusterMetrics": self.get_cluster_metrics,
            "getApplications": self.get_applications,
            "getClusterNodes": self.get_cluster_nodes,
            "getQueueInfo": self.get_queue_info,
            "getQueueUserAcls": self.get_queue_user_acls,
            "moveApplicationAcrossQueues": self.move_application,
            "failApplicationAttempt": self.fail_application_attempt,
            "getApplicationAttemptReport": self.get_application_attempt_report,
            "getApplicationAttempts": self.get_application_attempts,
            "getContainerReport": self.get_container_report,
            "getContainers": self.get_containers,
            "getNodeToLabels": self.get_node_to_labels,
            "getLabelsToNodes": self.get_labels_to_nodes,
            "getClusterNodeLabels": self.get_cluster_node_labels,
            "updateApplicationPriority": self.update_application_priority,
            "signalToContainer": self.signal_to_container,
            "updateApplicationTimeouts": self.update_application_timeouts,
            "getResourceProfiles": self.get_resource_profiles,
            "getResourceProfile": self.get_resource_profile,
            "getResourceTypeInfo": self.get_resource_type_info,
            "renewDelegationToken": self.credentials.renew_delegation_token,
            "cancelDelegationToken": self.credentials.cancel_delegation_token,
        }
        return {name: translating_allocator_errors(self._authenticated(name, h)) for name, h in handlers.items()}

    def _authenticated(self, name: str, handler: Handler) -> Handler:
        """``handler`` behind the rule for anonymous callers."""
        open_to_anonymous = name in ANONYMOUS_METHODS and self.auth.anonymous_access == ANONYMOUS_CLUSTER_INFO

        def run(call: CallContext, request: Any) -> Any:
            if not open_to_anonymous:
                require_user(self.auth.principal_of_call(call), name)
            return handler(call, request)

        return run

    def _app(self, call: CallContext, app_id: ApplicationId, access: str) -> Application:
        """The application, if the caller may ``access`` it (else AccessControlException)."""
        app = self.rm.apps.get(app_id)
        self.access.check(self.auth.principal_of_call(call), app, access)
        return app

    def _caller(self, call: CallContext) -> Principal:
        return self.auth.principal_of_call(call)

    # -- applications --------------------------------------------------------------

    def get_new_application(
        self, call: CallContext, request: ys.GetNewApplicationRequestProto
    ) -> defer.Deferred[ys.GetNewApplicationResponseProto]:
        user = self.access.may_submit(self._caller(call))

        async def new() -> ys.GetNewApplicationResponseProto:
            app_id = await self.rm.apps.new_application(user)
            response = ys.GetNewApplicationResponseProto()
            records.app_id_to_proto(app_id, response.application_id)
            records.resource_to_proto(self.rm.limits.maximum_allocation, response.maximumCapability)
            return response

        return defer.ensureDeferred(new())

    def submit_application(
        self, call: CallContext, request: ys.SubmitApplicationRequestProto
    ) -> defer.Deferred[ys.SubmitApplicationResponseProto]:
        async def submit() -> ys.SubmitApplicationResponseProto:
            if not request.HasField("application_submission_context"):
                raise alloc.InvalidSubmission("submitApplication carries no application_submission_context")
            context = request.application_submission_context
            user = self.access.may_submit(self._caller(call), context.queue)
            await submit_as(self.rm, context, user, self.auth.credentials, HostPort.host_of(call.peer))
            return ys.SubmitApplicationResponseProto()

        return defer.ensureDeferred(submit())

    def get_application_report(
        self, call: CallContext, request: ys.GetApplicationReportRequestProto
    ) -> ys.GetApplicationReportResponseProto:
        app = self._app(call, records.app_id_from_proto(request.application_id), VIEW_APP)
        response = ys.GetApplicationReportResponseProto()
        records.app_report(app, self.rm, response.application_report)
        return response

    def force_kill_application(
        self, call: CallContext, request: ys.KillApplicationRequestProto
    ) -> defer.Deferred[ys.KillApplicationResponseProto]:
        async def kill() -> ys.KillApplicationResponseProto:
            app_id = records.app_id_from_proto(request.application_id)
            self._app(call, app_id, MODIFY_APP)
            diagnostics = records.text_from_proto(request.diagnostics) or (
                f"Application {app_id} was killed by user {self._caller(call).user}"
            )
            completed = await self.rm.apps.kill(app_id, diagnostics)
            return ys.KillApplicationResponseProto(is_kill_completed=completed)

        return defer.ensureDeferred(kill())

    def get_applications(self, call: CallContext, request: ys.GetApplicationsRequestProto) -> ys.GetApplicationsResponseProto:
        flt = ApplicationFilter(
            types=frozenset(request.application_types),
            states=frozenset(records.app_state_from_proto(s) for s in request.application_states),
            users=frozenset(request.users),
            queues=frozenset(request.queues),
            tags=frozenset(request.applicationTags),
            name=request.name if request.HasField("name") else None,
            started_begin=request.start_begin if request.HasField("start_begin") else 0,
            started_end=request.start_end if request.HasField("start_end") else 2**63 - 1,
            finished_begin=request.finish_begin if request.HasField("finish_begin") else 0,
            finished_end=request.finish_end if request.HasField("finish_end") else 2**63 - 1,
            limit=request.limit if request.limit > 0 else 0,
        )
        response = ys.GetApplicationsResponseProto()
        principal = self._caller(call)
        for app in self.rm.apps.matching(flt):
            if not self.access.allows(principal, app, VIEW_APP):
                continue
            records.app_report(app, self.rm, response.applications.add())
        return response

    def move_application(
        self, call: CallContext, request: ys.MoveApplicationAcrossQueuesRequestProto
    ) -> defer.Deferred[ys.MoveApplicationAcrossQueuesResponseProto]:
        app = self._app(call, records.app_id_from_proto(request.application_id), MODIFY_APP)
        self.access.may_submit(self._caller(call), request.target_queue)  # YARN checks the target queue too
        d = self.rm.apps.move(app.app_id, request.target_queue)
        return d.addCallback(lambda _: ys.MoveApplicationAcrossQueuesResponseProto())

    def update_application_priority(
        self, call: CallContext, request: ys.UpdateApplicationPriorityRequestProto
    ) -> defer.Deferred[ys.UpdateApplicationPriorityResponseProto]:
        app_id = self._app(call, records.app_id_from_proto(request.applicationId), MODIFY_APP).app_id
        d = self.rm.apps.update_priority(app_id, request.applicationPriority.priority)

        def respond(priority: int) -> ys.UpdateApplicationPriorityResponseProto:
            response = ys.UpdateApplicationPriorityResponseProto()
            response.applicationPriority.priority = priority
            return response

        return d.addCallback(respond)

    def update_application_timeouts(
        self, call: CallContext, request: ys.UpdateApplicationTimeoutsRequestProto
    ) -> ys.UpdateApplicationTimeoutsResponseProto:
        app = self._app(call, records.app_id_from_proto(request.applicationId), MODIFY_APP)
        raise alloc.RefusedOperation(
            f"Application lifetime timeouts are not supported by Cortex; {app.app_id} keeps running until it ends"
        )

    # -- attempts and containers ---------------------------------------------------

    def fail_application_attempt(
        self, call: CallContext, request: ys.FailApplicationAttemptRequestProto
    ) -> defer.Deferred[ys.FailApplicationAttemptResponseProto]:
        attempt_id = records.attempt_id_from_proto(request.application_attempt_id)
        self._app(call, attempt_id.app_id, MODIFY_APP)
        d = self.rm.apps.fail_attempt(attempt_id, f"Attempt failed by user {self._caller(call).user}.")
        return d.addCallback(lambda _: ys.FailApplicationAttemptResponseProto())

    def get_application_attempt_report(
        self, call: CallContext, request: ys.GetApplicationAttemptReportRequestProto
    ) -> ys.GetApplicationAttemptReportResponseProto:
        attempt_id = records.attempt_id_from_proto(request.application_attempt_id)
        self._app(call, attempt_id.app_id, VIEW_APP)
        _, attempt = self.rm.apps.get_attempt(attempt_id)
        response = ys.GetApplicationAttemptReportResponseProto()
        records.attempt_report(attempt, response.application_attempt_report)
        return response

    def get_application_attempts(
        self, call: CallContext, request: ys.GetApplicationAttemptsRequestProto
    ) -> ys.GetApplicationAttemptsResponseProto:
        app = self._app(call, records.app_id_from_proto(request.application_id), VIEW_APP)
        response = ys.GetApplicationAttemptsResponseProto()
        for attempt in app.attempts:
            records.attempt_report(attempt, response.application_attempts.add())
        return response

    def get_container_report(
        self, call: CallContext, request: ys.GetContainerReportRequestProto
    ) -> ys.GetContainerReportResponseProto:
        container_id = records.container_id_from_proto(request.container_id)
        self._app(call, container_id.attempt_id.app_id, VIEW_APP)
        self.rm.apps.get_attempt(container_id.attempt_id)  # unknown app/attempt: their own errors
        for container in self.rm.attempt_containers(container_id.attempt_id):
            if container.container_id == container_id:
                response = ys.GetContainerReportResponseProto()
                self._container_report(container, response.container_report)
                return response
        raise alloc.UnknownContainer(f"Container with id '{container_id}' doesn't exist in RM.")

    def get_containers(self, call: CallContext, request: ys.GetContainersRequestProto) -> ys.GetContainersResponseProto:
        attempt_id = records.attempt_id_from_proto(request.application_attempt_id)
        self._app(call, attempt_id.app_id, VIEW_APP)
        self.rm.apps.get_attempt(attempt_id)
        response = ys.GetContainersResponseProto()
        for container in self.rm.attempt_containers(attempt_id):
            self._container_report(container, response.containers.add())
        return response

    def _container_report(self, container: RMContainer, out: yp.ContainerReportProto) -> None:
        """A live container as YARN's ContainerReport."""
        records.container_id_to_proto(container.container_id, out.container_id)
        records.resource_to_proto(container.resource, out.resource)
        records.node_id_to_proto(container.node_id, out.node_id)
        out.priority.priority = container.priority
        out.creation_time = container.creation_time_ms
        out.finish_time = container.finish_time_ms
        out.diagnostics_info = container.diagnostics
        out.container_exit_status = container.exit_status
        out.container_state = yp.C_RUNNING if container.state.name == "RUNNING" else yp.C_NEW
        try:
            out.node_http_address = self.rm.nodes.get(container.node_id).http_address
        except alloc.UnknownNode:
            pass

    def signal_to_container(self, call: CallContext, request: ys.SignalContainerRequestProto) -> ys.SignalContainerResponseProto:
        container_id = records.container_id_from_proto(request.container_id)
        self._app(call, container_id.attempt_id.app_id, MODIFY_APP)
        self.rm.apps.get_attempt(container_id.attempt_id)
        raise alloc.UnknownContainer(f"Container with id '{container_id}' doesn't exist in RM.")

    # -- cluster, nodes, queues ----------------------------------------------------

    def get_cluster_metrics(
        self, call: CallContext, request: ys.GetClusterMetricsRequestProto
    ) -> ys.GetClusterMetricsResponseProto:
        m = self.rm.metrics()
        response = ys.GetClusterMetricsResponseProto()
        cm = response.cluster_metrics
        cm.num_node_managers = m.total_nodes
        cm.num_active_nms = m.active_nodes
        cm.num_lost_nms = m.lost_nodes
        cm.num_unhealthy_nms = m.unhealthy_nodes
        cm.num_decommissioned_nms = m.decommissioned_nodes
        cm.num_decommissioning_nms = m.decommissioning_nodes
        cm.num_rebooted_nms = m.rebooted_nodes
        cm.num_shutdown_nms = m.shutdown_nodes
        return response

    def get_cluster_nodes(self, call: CallContext, request: ys.GetClusterNodesRequestProto) -> ys.GetClusterNodesResponseProto:
        states = [records.node_state_from_proto(s) for s in request.nodeStates]
        response = ys.GetClusterNodesResponseProto()
        for node in self.rm.nodes.with_states(states):
            records.node_report(node, response.nodeReports.add())
        return response

    def get_queue_info(self, call: CallContext, request: ys.GetQueueInfoRequestProto) -> ys.GetQueueInfoResponseProto:
        queue = self.rm.queues.find(request.queueName or "root")
        principal = self._caller(call)
        response = ys.GetQueueInfoResponseProto()
        records.queue_info(
            queue,
            self.rm,
            response.queueInfo,
            include_applications=request.includeApplications,
            include_child_queues=request.includeChildQueues,
            recursive=request.recursive,
            visible=lambda app: self.access.allows(principal, app, VIEW_APP),
        )
        return response

    def get_queue_user_acls(
        self, call: CallContext, request: ys.GetQueueUserAclsInfoRequestProto
    ) -> ys.GetQueueUserAclsInfoResponseProto:
        # What the caller may do in each queue (its ACLs or an ancestor's; the admins everything).
        user = self._caller(call).user or ""
        admin = user in self.access.admins
        response = ys.GetQueueUserAclsInfoResponseProto()
        for queue in self.rm.queues:
            acl = response.queueUserAcls.add()
            acl.queueName = queue.name
            if admin or self.rm.queues.may_submit(queue, user):
                acl.userAcls.append(yp.QACL_SUBMIT_APPLICATIONS)
            if admin or self.rm.queues.may_administer(queue, user):
                acl.userAcls.append(yp.QACL_ADMINISTER_QUEUE)
        return response

    def get_node_to_labels(self, call: CallContext, request: ys.GetNodesToLabelsRequestProto) -> ys.GetNodesToLabelsResponseProto:
        response = ys.GetNodesToLabelsResponseProto()
        for node in self.rm.nodes:
            if node.labels:
                entry = response.nodeToLabels.add()
                records.node_id_to_proto(node.node_id, entry.nodeId)
                entry.nodeLabels.extend(sorted(node.labels))
        return response

    def get_labels_to_nodes(self, call: CallContext, request: ys.GetLabelsToNodesRequestProto) -> ys.GetLabelsToNodesResponseProto:
        wanted = set(request.nodeLabels)
        by_label: dict[str, list[NodeId]] = {}
        for node in self.rm.nodes:
            for label in node.labels:
                if not wanted or label in wanted:
                    by_label.setdefault(label, []).append(node.node_id)
        response = ys.GetLabelsToNodesResponseProto()
        for label, node_ids in sorted(by_label.items()):
            entry = response.labelsToNodes.add()
            entry.nodeLabels = label
            for node_id in node_ids:
                records.node_id_to_proto(node_id, entry.nodeId.add())
        return response

    def get_cluster_node_labels(
        self, call: CallContext, request: ys.GetClusterNodeLabelsRequestProto
    ) -> ys.GetClusterNodeLabelsResponseProto:
        # both labels always exist, and are non-exclusive: a request without a label may use any node.
        # Hadoop (2.8 on) writes the names into deprecatedNodeLabels too, for clients that read only
        # that field (GetClusterNodeLabelsResponsePBImpl.addNodeLabelsToProto); so do we.
        response = ys.GetClusterNodeLabelsResponseProto()
        for label in CLUSTER_NODE_LABELS:
            response.nodeLabels.add(name=label, isExclusive=False)
            response.deprecatedNodeLabels.append(label)
        return response

    # -- resource types ------------------------------------------------------------

    def get_resource_type_info(
        self, call: CallContext, request: ys.GetAllResourceTypeInfoRequestProto
    ) -> ys.GetAllResourceTypeInfoResponseProto:
        response = ys.GetAllResourceTypeInfoResponseProto()
        response.resource_type_info.add(name="memory-mb", units="Mi", type=yp.COUNTABLE)
        response.resource_type_info.add(name="vcores", units="", type=yp.COUNTABLE)
        return response

    def get_resource_profiles(
        self, call: CallContext, request: ys.GetAllResourceProfilesRequestProto
    ) -> ys.GetAllResourceProfilesResponseProto:
        raise alloc.RefusedOperation(_PROFILES_DISABLED)

    def get_resource_profile(
        self, call: CallContext, request: ys.GetResourceProfileRequestProto
    ) -> ys.GetResourceProfileResponseProto:
        raise alloc.RefusedOperation(_PROFILES_DISABLED)


def client_protocol(service: ApplicationClientService) -> RpcProtocol:
    """ApplicationClientProtocol with our handlers; Hadoop's other methods answered by name."""
    return RpcProtocol.from_service(
        CLIENT_PROTOCOL,
        applicationclient_protocol_pb2.DESCRIPTOR.services_by_name["ApplicationClientProtocolService"],
        service.handlers(),
        unsupported=UNSUPPORTED_CLIENT_METHODS,
    )
