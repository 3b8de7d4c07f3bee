"""Conversions between the allocator's records and YARN's protobuf records.

One function per record, both directions where clients send the record.  Enum
names map one to one (``ACCEPTED`` <-> ``ACCEPTED``, ``SCHEDULED`` <->
``APP_ATTEMPT_SCHEDULED``, ``RUNNING`` <-> ``NS_RUNNING`` ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from cortex_rm.allocator.app_model import Application, Attempt, Submission
from cortex_rm.allocator.app_states import AppState, FinalStatus
from cortex_rm.allocator.errors import UnknownQueue
from cortex_rm.allocator.node_labels import ANY_LABEL, check_label_expression
from cortex_rm.allocator.nodes import NodeRecord, NodeState
from cortex_rm.allocator.queues import Queue, QueueState
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp

# ---------------------------------------------------------------- identifiers


def app_id_from_proto(p: yp.ApplicationIdProto) -> ApplicationId:
    if not p.HasField("cluster_timestamp") or not p.HasField("id"):
        raise MalformedId("the request carries no complete application id")
    return ApplicationId(p.cluster_timestamp, p.id)


def app_id_to_proto(app_id: ApplicationId, out: yp.ApplicationIdProto) -> None:
    out.id = app_id.id
    out.cluster_timestamp = app_id.cluster_timestamp


def attempt_id_from_proto(p: yp.ApplicationAttemptIdProto) -> ApplicationAttemptId:
    if not p.HasField("application_id") or not p.HasField("attemptId"):
        raise MalformedId("the request carries no complete application attempt id")
    return ApplicationAttemptId(app_id_from_proto(p.application_id), p.attemptId)


def attempt_id_to_proto(attempt_id: ApplicationAttemptId, out: yp.ApplicationAttemptIdProto) -> None:
    app_id_to_proto(attempt_id.app_id, out.application_id)
    out.attemptId = attempt_id.attempt_id


def container_id_from_proto(p: yp.ContainerIdProto) -> ContainerId:
    if not p.HasField("app_attempt_id") or not p.HasField("id"):
        raise MalformedId("the request carries no complete container id")
    return ContainerId(attempt_id_from_proto(p.app_attempt_id), p.id)


def container_id_to_proto(container_id: ContainerId, out: yp.ContainerIdProto) -> None:
    app_id_to_proto(container_id.attempt_id.app_id, out.app_id)
    attempt_id_to_proto(container_id.attempt_id, out.app_attempt_id)
    out.id = container_id.id


def node_id_to_proto(node_id: NodeId, out: yp.NodeIdProto) -> None:
    out.host = node_id.host
    out.port = node_id.port


# ------------------------------------------------------------------ resources


def resource_to_proto(resource: Resource, out: yp.ResourceProto) -> None:
    """Memory and vcores, both as the legacy fields and as resource_value_map entries."""
    out.memory = resource.memory_mb
    out.virtual_cores = resource.vcores
    mem = out.resource_value_map.add()
    mem.key, mem.value, mem.units, mem.type = "memory-mb", resource.memory_mb, "Mi", yp.COUNTABLE
    cpu = out.resource_value_map.add()
    cpu.key, cpu.value, cpu.units, cpu.type = "vcores", resource.vcores, "", yp.COUNTABLE


def resource_from_proto(p: yp.ResourceProto) -> Resource:
    """Java writes both forms; resource_value_map wins where present (Hadoop 3 semantics)."""
    memory, vcores = p.memory, p.virtual_cores
    for info in p.resource_value_map:
        if info.key == "memory-mb":
            memory = _to_mebibytes(info.value, info.units)
        elif info.key == "vcores":
            vcores = info.value
    return Resource(int(memory), int(vcores))


_UNITS_TO_MI = {"": 1 / (1024 * 1024), "k": 1000 / 2**20, "Ki": 1 / 1024, "M": 1e6 / 2**20, "Mi": 1, "G": 1e9 / 2**20, "Gi": 1024, "T": 1e12 / 2**20, "Ti": 1024 * 1024}


def _to_mebibytes(value: int, units: str) -> int:
    factor = _UNITS_TO_MI.get(units)
    if factor is None:
        raise MalformedId(f"unknown memory unit {units!r}")
    return int(value * factor)


# ------------------------------------------------------------ applications

_FINAL_TO_PROTO = {
    FinalStatus.UNDEFINED: yp.APP_UNDEFINED,
    FinalStatus.SUCCEEDED: yp.APP_SUCCEEDED,
    FinalStatus.FAILED: yp.APP_FAILED,
    FinalStatus.KILLED: yp.APP_KILLED,
    FinalStatus.ENDED: yp.APP_ENDED,
}
FINAL_FROM_PROTO = {v: k for k, v in _FINAL_TO_PROTO.items()}


# protobuf's Value() returns a plain int; the stubs type enum fields by the enum's own class.
def app_state_to_proto(state: AppState) -> yp.YarnApplicationStateProto:
    return cast(yp.YarnApplicationStateProto, yp.YarnApplicationStateProto.Value(state.value))


def app_state_from_proto(value: int) -> AppState:
    return AppState(yp.YarnApplicationStateProto.Name(value))


def final_status_to_proto(status: FinalStatus) -> yp.FinalApplicationStatusProto:
    return _FINAL_TO_PROTO[status]


def text_from_proto(value: str | bytes) -> str:
    """A proto2 ``string`` field as text.  proto2 does not check UTF-8, and Python's protobuf
    returns a field that is not as ``bytes``; Java's reads it with U+FFFD for each bad
    sequence, and so do we."""
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def label_expressions(ctx: yp.ApplicationSubmissionContextProto) -> tuple[str, str]:
    """(the application's label expression, its AM's), checked (``InvalidLabelResourceRequest``).

    The AM's is its ``am_container_resource_request``'s when that names one (even ""),
    else the application's, as YARN's RMAppManager fills it in."""
    queue = text_from_proto(ctx.queue)
    app_label = check_label_expression(text_from_proto(ctx.node_label_expression), queue=queue)
    am_label = app_label
    if len(ctx.am_container_resource_request):
        am_request = ctx.am_container_resource_request[0]
        if am_request.HasField("node_label_expression"):
            am_label = check_label_expression(text_from_proto(am_request.node_label_expression), queue=queue)
    return app_label, am_label


def submission_from_proto(ctx: yp.ApplicationSubmissionContextProto, user: str, client_host: str = "") -> Submission:
    """What the RM needs from an ApplicationSubmissionContext; the bytes are kept whole.
    ``client_host``: where the submission came from, as the RM saw its connection."""
    app_id = app_id_from_proto(ctx.application_id)
    app_label, am_label = label_expressions(ctx)
    if ctx.HasField("resource"):
        am_resource = resource_from_proto(ctx.resource)
    elif len(ctx.am_container_resource_request):
        am_resource = resource_from_proto(ctx.am_container_resource_request[0].capability)
    else:
        am_resource = Resource(1024, 1)  # YARN's default AM resource (yarn.app.mapreduce.am.resource.mb)
    return Submission(
        app_id=app_id,
        user=user,
        name=text_from_proto(ctx.application_name),
        queue=text_from_proto(ctx.queue),
        app_type=text_from_proto(ctx.applicationType),
        tags=frozenset(text_from_proto(tag) for tag in ctx.applicationTags),
        priority=ctx.priority.priority if ctx.HasField("priority") else 0,
        am_resource=am_resource,
        max_attempts=ctx.maxAppAttempts,
        unmanaged_am=ctx.unmanaged_am,
        context=ctx.SerializeToString(),
        acls=tuple(
            (_ACCESS_TYPES[acl.accessType], acl.acl)
            for acl in ctx.am_container_spec.application_ACLs
            if acl.accessType in _ACCESS_TYPES
        ),
        client_host=client_host,
        label_expression=app_label,
        am_label=am_label,
    )


_ACCESS_TYPES = {yp.APPACCESS_VIEW_APP: "VIEW_APP", yp.APPACCESS_MODIFY_APP: "MODIFY_APP"}


def app_report(app: Application, rm: RMContext, out: yp.ApplicationReportProto) -> None:
    """Fill an ApplicationReportProto as YARN's RM reports the application."""
    app_id_to_proto(app.app_id, out.applicationId)
    out.user = app.user
    out.queue = app.queue
    out.name = app.name
    attempt = app.current_attempt
    out.host = attempt.host if attempt else "N/A"
    out.rpc_port = attempt.rpc_port if attempt else -1
    out.yarn_application_state = app_state_to_proto(app.reported_state)
    out.trackingUrl = attempt.tracking_url if attempt and attempt.tracking_url else "N/A"
    out.originalTrackingUrl = out.trackingUrl
    out.diagnostics = app.diagnostics
    out.startTime = app.start_time_ms
    out.launchTime = app.launch_time_ms
    out.submitTime = app.submit_time_ms
    out.finishTime = app.finish_time_ms
    out.final_application_status = final_status_to_proto(app.final_status)
    out.progress = app.progress
    out.applicationType = app.app_type
    out.applicationTags.extend(sorted(app.tags))
    out.unmanaged_application = app.unmanaged_am
    out.priority.priority = app.priority
    out.log_aggregation_status = yp.LOG_DISABLED
    out.rmClusterId = str(rm.cluster_id)
    if attempt is not None:
        attempt_id_to_proto(attempt.attempt_id, out.currentApplicationAttemptId)
    usage = out.app_resource_Usage
    usage.CopyFrom(_NO_USAGE)
    held = rm.app_usage(app)
    if held.containers:
        usage.num_used_containers = held.containers
        usage.ClearField("used_resources")
        resource_to_proto(held.used, usage.used_resources)


def _no_usage() -> yp.ApplicationResourceUsageReportProto:
    """The usage report of an application that holds no containers."""
    usage = yp.ApplicationResourceUsageReportProto(
        num_used_containers=0, num_reserved_containers=0, memory_seconds=0, vcore_seconds=0
    )
    for field in (usage.used_resources, usage.reserved_resources, usage.needed_resources):
        resource_to_proto(Resource(), field)
    return usage


_NO_USAGE = _no_usage()


def attempt_report(attempt: Attempt, out: yp.ApplicationAttemptReportProto) -> None:
    attempt_id_to_proto(attempt.attempt_id, out.application_attempt_id)
    out.host = attempt.host
    out.rpc_port = attempt.rpc_port
    out.tracking_url = attempt.tracking_url or "N/A"
    out.original_tracking_url = out.tracking_url
    out.diagnostics = attempt.diagnostics
    out.yarn_application_attempt_state = cast(
        yp.YarnApplicationAttemptStateProto, yp.YarnApplicationAttemptStateProto.Value("APP_ATTEMPT_" + attempt.state.value)
    )
    if attempt.am_container_id is not None:
        container_id_to_proto(attempt.am_container_id, out.am_container_id)
    out.startTime = attempt.start_time_ms
    out.finishTime = attempt.finish_time_ms


# ------------------------------------------------------------------- nodes


def node_state_to_proto(state: NodeState) -> yp.NodeStateProto:
    return cast(yp.NodeStateProto, yp.NodeStateProto.Value("NS_" + state.value))


def node_state_from_proto(value: int) -> NodeState:
    return NodeState(yp.NodeStateProto.Name(value)[3:])


def node_report(node: NodeRecord, out: yp.NodeReportProto) -> None:
    node_id_to_proto(node.node_id, out.nodeId)
    out.httpAddress = node.http_address
    out.rackName = node.rack
    resource_to_proto(node.used, out.used)
    resource_to_proto(node.capability, out.capability)
    out.numContainers = node.num_containers
    out.node_state = node_state_to_proto(node.state)
    out.health_report = node.health_report
    out.last_health_report_time = node.last_health_update_ms
    out.node_labels.extend(sorted(node.labels))


# ------------------------------------------------------------------ queues

_QUEUE_STATE = {QueueState.RUNNING: yp.Q_RUNNING, QueueState.STOPPED: yp.Q_STOPPED}


def queue_info(
    queue: Queue,
    rm: RMContext,
    out: yp.QueueInfoProto,
    *,
    include_applications: bool,
    include_child_queues: bool,
    recursive: bool,
    visible: Callable[[Application], bool] = lambda app: True,
) -> None:
    """Fill a QueueInfoProto; capacities are fractions of the parent, as YARN's QueueInfo.
    Only the applications ``visible`` to the caller are listed."""
    usage = rm.queue_usage(queue)
    total = rm.nodes.total_capability()
    out.queueName = queue.name
    out.queuePath = queue.path
    out.capacity = queue.spec.capacity / 100.0
    out.maximumCapacity = queue.spec.maximum_capacity / 100.0
    out.currentCapacity = usage.current_capacity(queue, total)
    out.state = _QUEUE_STATE[queue.spec.state if queue.is_running else QueueState.STOPPED]
    out.accessibleNodeLabels.append(ANY_LABEL)  # every queue may use every label
    out.defaultNodeLabelExpression = ""
    out.preemptionDisabled = True
    out.intraQueuePreemptionDisabled = True
    out.schedulerType = "CapacityScheduler"
    stats = out.queueStatistics
    counts = [a for a in rm.apps if _in_subtree(a.queue, queue, rm)]
    stats.numAppsSubmitted = len(counts)
    stats.numAppsRunning = usage.num_apps_running
    stats.numAppsPending = usage.num_apps_pending
    stats.numAppsCompleted = sum(1 for a in counts if a.state is AppState.FINISHED)
    stats.numAppsKilled = sum(1 for a in counts if a.state is AppState.KILLED)
    stats.numAppsFailed = sum(1 for a in counts if a.state is AppState.FAILED)
    stats.numActiveUsers = len({a.user for a in counts if not a.state.is_terminal})
    stats.allocatedMemoryMB = usage.used.memory_mb
    stats.allocatedVCores = usage.used.vcores
    stats.availableMemoryMB = max(0, int(queue.absolute_maximum_capacity * total.memory_mb) - usage.used.memory_mb)
    stats.availableVCores = max(0, int(queue.absolute_maximum_capacity * total.vcores) - usage.used.vcores)
    if include_applications and queue.is_leaf:
        for app in rm.apps.in_queue(queue):
            if visible(app):
                app_report(app, rm, out.applications.add())
    if include_child_queues:
        for child in queue.children:
            queue_info(
                child,
                rm,
                out.childQueues.add(),
                include_applications=include_applications and recursive,
                include_child_queues=recursive,
                recursive=recursive,
                visible=visible,
            )


def _in_subtree(app_queue: str, queue: Queue, rm: RMContext) -> bool:
    try:
        leaf = rm.queues.find(app_queue)
    except UnknownQueue:
        return False
    return leaf.path == queue.path or leaf.path.startswith(queue.path + ".")
