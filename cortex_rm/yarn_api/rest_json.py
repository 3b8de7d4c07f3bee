"""The RM's records as the JSON objects of YARN's REST API (``/ws/v1/cluster/...``).

One function per Hadoop DAO (``ClusterInfo``, ``ClusterMetricsInfo``,
``CapacitySchedulerInfo``, ``NodeInfo``, ``AppInfo``, ``AppAttemptInfo``,
``ResourceInfo``), with Hadoop 3.x's field names.  Fields that YARN leaves null
(Jersey then omits them) are omitted here too: ``trackingUrl`` before the AM has
one, ``amContainerLogs``/``amHostHttpAddress`` while no AM container is known,
``amRPCAddress`` before the AM registers.

Collections: Hadoop 2 wrote ``{"apps": null}`` for an empty list and Hadoop 3
writes ``{"apps": {}}``; we always write the list, ``{"apps": {"app": []}}``.
Code written for either RM reads that correctly (``(d["apps"] or {}).get("app", [])``
and ``d["apps"]["app"]`` both work), which neither of YARN's forms guarantees.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from google.protobuf.message import DecodeError

from cortex_rm.allocator.app_model import Application, Attempt
from cortex_rm.allocator.app_states import PENDING_APP_STATES, AppState
from cortex_rm.allocator.errors import UnknownQueue
from cortex_rm.allocator.nodes import NodeRecord, NodeState
from cortex_rm.allocator.queues import Queue, QueueState
from cortex_rm.allocator.rm_context import ClusterMetrics, RMContext
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp

YARN_API_VERSION: Final = "3.5.0"
LONG_MAX: Final = 2**63 - 1
MAX_SYSTEM_APPLICATIONS: Final = 10000  # yarn.scheduler.capacity.maximum-applications
USER_LIMIT_PERCENT: Final = 100  # yarn.scheduler.capacity.<queue>.minimum-user-limit-percent
USER_LIMIT_FACTOR: Final = 1.0  # yarn.scheduler.capacity.<queue>.user-limit-factor

# The client-visible application states, in YarnApplicationState's order.
YARN_APPLICATION_STATES: Final = (
    AppState.NEW,
    AppState.NEW_SAVING,
    AppState.SUBMITTED,
    AppState.ACCEPTED,
    AppState.RUNNING,
    AppState.FINISHED,
    AppState.FAILED,
    AppState.KILLED,
)
_NOT_TRACKABLE: Final = PENDING_APP_STATES  # no AM to track yet
# Nodes whose web address YARN blanks out: they are gone.
_GONE_NODE_STATES: Final = frozenset({NodeState.LOST, NodeState.DECOMMISSIONED, NodeState.REBOOTED})

# deSelects values (DeSelectFields.DeSelectType literals) -> the AppInfo field they drop.
DESELECTABLE: Final = {
    "resourcerequests": "resourceRequests",
    "timeouts": "timeouts",
    "appnodelabelexpression": "appNodeLabelExpression",
    "amnodelabelexpression": "amNodeLabelExpression",
    "resourceinfo": "resourceInfo",
}


def resource_info(resource: Resource) -> dict[str, Any]:
    """``ResourceInfo``: memory and vCores, and the same two as resource informations."""

    def information(name: str, units: str, value: int) -> dict[str, Any]:
        return {
            "maximumAllocation": LONG_MAX,
            "minimumAllocation": 0,
            "name": name,
            "resourceType": "COUNTABLE",
            "units": units,
            "value": value,
        }

    return {
        "memory": resource.memory_mb,
        "vCores": resource.vcores,
        "resourceInformations": {
            "resourceInformation": [
                information("memory-mb", "Mi", resource.memory_mb),
                information("vcores", "", resource.vcores),
            ]
        },
    }


# ------------------------------------------------------------------ cluster


def cluster_info(rm: RMContext, version: str) -> dict[str, Any]:
    store = type(rm.apps.store)
    build = f"Cortex RM {version} (YARN {YARN_API_VERSION[:3]} API)"
    return {
        "clusterInfo": {
            "id": rm.cluster_id,
            "startedOn": rm.started_ms,
            "state": "STARTED",
            "haState": "ACTIVE",
            "rmStateStoreName": f"{store.__module__}.{store.__qualname__}",
            "resourceManagerVersion": version,
            "resourceManagerBuildVersion": build,
            "resourceManagerVersionBuiltOn": "Unknown",  # Hadoop's VersionInfo says so without build info
            "hadoopVersion": YARN_API_VERSION,
            "hadoopBuildVersion": f"{YARN_API_VERSION} (Cortex RM {version} compatible API)",
            "hadoopVersionBuiltOn": "Unknown",
            "haZooKeeperConnectionState": "ZooKeeper is not used: the active RM is chosen on the Cortex ring",
        }
    }


def cluster_metrics(m: ClusterMetrics) -> dict[str, Any]:
    available = m.available
    # ClusterMetricsInfo counts every known node, whatever its state.
    total_nodes = (
        m.active_nodes
        + m.lost_nodes
        + m.decommissioned_nodes
        + m.rebooted_nodes
        + m.unhealthy_nodes
        + m.decommissioning_nodes
        + m.shutdown_nodes
    )
    return {
        "clusterMetrics": {
            "appsSubmitted": m.apps_submitted,
            "appsCompleted": m.apps_completed,
            "appsPending": m.apps_pending,
            "appsRunning": m.apps_running,
            "appsFailed": m.apps_failed,
            "appsKilled": m.apps_killed,
            "reservedMB": 0,
            "availableMB": available.memory_mb,
            "allocatedMB": m.allocated.memory_mb,
            "pendingMB": 0,
            "reservedVirtualCores": 0,
            "availableVirtualCores": available.vcores,
            "allocatedVirtualCores": m.allocated.vcores,
            "pendingVirtualCores": 0,
            "containersAllocated": m.containers_allocated,
            "containersReserved": 0,
            "containersPending": m.containers_pending,
            "totalMB": m.total.memory_mb,
            "totalVirtualCores": m.total.vcores,
            "totalNodes": total_nodes,
            "lostNodes": m.lost_nodes,
            "unhealthyNodes": m.unhealthy_nodes,
            "decommissioningNodes": m.decommissioning_nodes,
            "decommissionedNodes": m.decommissioned_nodes,
            "rebootedNodes": m.rebooted_nodes,
            "activeNodes": m.active_nodes,
            "shutdownNodes": m.shutdown_nodes,
            "totalUsedResourcesAcrossPartition": resource_info(m.allocated),
            "totalClusterResourcesAcrossPartition": resource_info(m.total),
            "totalReservedResourcesAcrossPartition": resource_info(Resource()),
            "totalAllocatedContainersAcrossPartition": m.containers_allocated,
            "crossPartitionMetricsAvailable": True,
        }
    }


# ---------------------------------------------------------------- scheduler


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


def _queue_info(queue: Queue, rm: RMContext, total: Resource) -> dict[str, Any]:
    """``CapacitySchedulerQueueInfo`` (parents) / ``CapacitySchedulerLeafQueueInfo`` (leaves)."""
    usage = rm.queue_usage(queue)
    state = queue.spec.state if queue.is_running else QueueState.STOPPED
    info: dict[str, Any] = {
        "queuePath": queue.path,
        "capacity": queue.spec.capacity,
        "usedCapacity": 100.0 * usage.current_capacity(queue, total),
        "maxCapacity": queue.spec.maximum_capacity,
        "absoluteCapacity": 100.0 * queue.absolute_capacity,
        "absoluteMaxCapacity": 100.0 * queue.absolute_maximum_capacity,
        "absoluteUsedCapacity": _percent(usage.used.memory_mb, total.memory_mb),
        "numApplications": usage.num_apps_pending + usage.num_apps_running,
        "usedResources": str(usage.used),
        "queueName": queue.name,
        "state": state.value,
        "resourcesUsed": resource_info(usage.used),
    }
    if not queue.is_leaf:
        info["queues"] = {"queue": [_queue_info(child, rm, total) for child in queue.children]}
        return info
    max_apps = int(MAX_SYSTEM_APPLICATIONS * queue.absolute_capacity)
    users: dict[str, dict[str, Any]] = {}
    for app in rm.apps.in_queue(queue):
        user = users.setdefault(
            app.user, {"username": app.user, "used": Resource(), "numActiveApplications": 0, "numPendingApplications": 0}
        )
        if app.reported_state is AppState.RUNNING:
            user["numActiveApplications"] += 1
            user["used"] = user["used"] + app.am_resource
        elif app.reported_state in PENDING_APP_STATES:
            user["numPendingApplications"] += 1
    user_list = [
        {
            "username": u["username"],
            "resourcesUsed": resource_info(u.pop("used")),
            "numActiveApplications": u["numActiveApplications"],
            "numPendingApplications": u["numPendingApplications"],
        }
        for u in sorted(users.values(), key=lambda u: u["username"])
    ]
    info.update(
        {
            "type": "capacitySchedulerLeafQueueInfo",
            "numActiveApplications": usage.num_apps_running,
            "numPendingApplications": usage.num_apps_pending,
            "numContainers": usage.num_apps_running,  # one AM container per running application
            "maxApplications": max_apps,
            "maxApplicationsPerUser": int(max_apps * USER_LIMIT_PERCENT / 100 * USER_LIMIT_FACTOR),
            "userLimit": USER_LIMIT_PERCENT,
            "userLimitFactor": USER_LIMIT_FACTOR,
            "users": {"user": user_list} if user_list else None,  # YARN writes null for no users
        }
    )
    return info


def scheduler_info(rm: RMContext) -> dict[str, Any]:
    """``{"scheduler": {"schedulerInfo": {...}}}`` of a capacity scheduler, the whole tree."""
    root = rm.queues.root
    total = rm.nodes.total_capability()
    usage = rm.queue_usage(root)
    return {
        "scheduler": {
            "schedulerInfo": {
                "type": "capacityScheduler",
                "capacity": root.spec.capacity,
                "usedCapacity": 100.0 * usage.current_capacity(root, total),
                "maxCapacity": root.spec.maximum_capacity,
                "queueName": root.name,
                "queuePath": root.path,
                "queues": {"queue": [_queue_info(child, rm, total) for child in root.children]},
            }
        }
    }


# -------------------------------------------------------------------- nodes


def node_info(node: NodeRecord, version: str) -> dict[str, Any]:
    """``NodeInfo``; ``version`` is the Cortex daemon's (every node runs the same one)."""
    available = node.available
    return {
        "rack": node.rack,
        "state": node.state.value,
        "id": str(node.node_id),
        "nodeHostName": node.node_id.host,
        "nodeHTTPAddress": "" if node.state in _GONE_NODE_STATES else node.http_address,
        "lastHealthUpdate": node.last_health_update_ms,
        "version": version,
        "healthReport": node.health_report,
        "numContainers": node.num_containers,
        "usedMemoryMB": node.used.memory_mb,
        "availMemoryMB": available.memory_mb,
        "usedVirtualCores": node.used.vcores,
        "availableVirtualCores": available.vcores,
        "numRunningOpportContainers": 0,
        "usedMemoryOpportGB": 0,
        "usedVirtualCoresOpport": 0,
        "numQueuedContainers": 0,
        "nodeLabels": sorted(node.labels),
        "resourceUtilization": {
            "nodePhysicalMemoryMB": 0,
            "nodeVirtualMemoryMB": 0,
            "nodeCPUUsage": 0.0,
            "aggregatedContainersPhysicalMemoryMB": 0,
            "aggregatedContainersVirtualMemoryMB": 0,
            "containersCPUUsage": 0.0,
        },
        "usedResource": resource_info(node.used),
        "availableResource": resource_info(available),
        "totalResource": resource_info(node.capability),
    }


def nodes_info(nodes: Iterable[NodeRecord], version: str) -> dict[str, Any]:
    return {"nodes": {"node": [node_info(n, version) for n in sorted(nodes, key=lambda n: n.node_id)]}}


# ------------------------------------------------------------- applications


def _elapsed(started: int, finished: int, now: int) -> int:
    """Hadoop's ``Times.elapsed`` for an application."""
    if finished > 0 and started > 0:
        return max(finished - started, 0)
    return max(now - started, 0) if started > 0 else 0


def _with_scheme(url: str) -> str:
    return url if "://" in url else "http://" + url


def _label_expressions(app: Application) -> tuple[str | None, str | None]:
    """(appNodeLabelExpression, amNodeLabelExpression) as submitted; YARN's null is None."""
    ctx = yp.ApplicationSubmissionContextProto()
    try:
        ctx.ParseFromString(app.context)
    except DecodeError:  # a stored context we cannot read has no labels to show
        return None, None
    app_label = ctx.node_label_expression if ctx.HasField("node_label_expression") else None
    if app.unmanaged_am:
        return app_label, None
    am_label = app_label
    if len(ctx.am_container_resource_request) and ctx.am_container_resource_request[0].HasField(
        "node_label_expression"
    ):
        am_label = ctx.am_container_resource_request[0].node_label_expression
    return app_label, "" if am_label is None else am_label


def app_info(app: Application, rm: RMContext, deselects: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``AppInfo``: one application as ``/apps`` and ``/apps/{id}`` show it."""
    state = app.reported_state
    attempt = app.current_attempt
    tracking_url = attempt.tracking_url if attempt is not None else ""
    trackable = bool(tracking_url) and state not in _NOT_TRACKABLE
    usage = rm.app_usage(app)
    allocated = usage.used
    total = rm.nodes.total_capability()
    try:
        queue_share = rm.queues.find(app.queue).absolute_capacity * total.memory_mb
    except UnknownQueue:  # an application whose queue is gone uses no share of it
        queue_share = 0.0
    app_label, am_label = _label_expressions(app)
    info: dict[str, Any] = {
        "id": str(app.app_id),
        "user": app.user,
        "name": app.name,
        "queue": app.queue,
        "state": state.value,
        "finalStatus": app.final_status.value,
        "progress": 100.0 * app.progress,
        "trackingUI": ("ApplicationMaster" if app.finish_time_ms == 0 else "History") if trackable else "UNASSIGNED",
        "diagnostics": app.diagnostics,
        "clusterId": rm.cluster_id,
        "applicationType": app.app_type,
        "applicationTags": ",".join(sorted(app.tags)),
        "priority": app.priority,
        "startedTime": app.start_time_ms,
        "launchTime": app.launch_time_ms,
        "finishedTime": app.finish_time_ms,
        "elapsedTime": _elapsed(app.start_time_ms, app.finish_time_ms, rm.now_ms()),
        "allocatedMB": allocated.memory_mb,
        "allocatedVCores": allocated.vcores,
        "reservedMB": 0,
        "reservedVCores": 0,
        "runningContainers": usage.containers,
        "memorySeconds": 0,
        "vcoreSeconds": 0,
        "queueUsagePercentage": _percent(allocated.memory_mb, queue_share),
        "clusterUsagePercentage": _percent(allocated.memory_mb, total.memory_mb),
        "preemptedResourceMB": 0,
        "preemptedResourceVCores": 0,
        "numNonAMContainerPreempted": 0,
        "numAMContainerPreempted": 0,
        "preemptedMemorySeconds": 0,
        "preemptedVcoreSeconds": 0,
        "resourceRequests": [],
        "logAggregationStatus": "DISABLED",
        "unmanagedApplication": app.unmanaged_am,
        "timeouts": {"timeout": [{"type": "LIFETIME", "expiryTime": "UNLIMITED", "remainingTimeInSeconds": -1}]},
    }
    if trackable:
        info["trackingUrl"] = _with_scheme(tracking_url)
    if attempt is not None and attempt.host not in ("", "N/A"):
        info["amRPCAddress"] = f"{attempt.host}:{attempt.rpc_port}"
    if app_label is not None:
        info["appNodeLabelExpression"] = app_label
    if am_label is not None:
        info["amNodeLabelExpression"] = am_label
    for field in deselects:
        info.pop(field, None)
    return info


def apps_info(apps: Iterable[Application], rm: RMContext, deselects: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {"apps": {"app": [app_info(a, rm, deselects) for a in apps]}}


def attempt_info(attempt: Attempt) -> dict[str, Any]:
    """``AppAttemptInfo``; the AM container's node is not recorded yet, so its fields are empty."""
    return {
        "id": attempt.attempt_id.attempt_id,
        "startTime": attempt.start_time_ms,
        "finishedTime": attempt.finish_time_ms,
        "containerId": str(attempt.am_container_id) if attempt.am_container_id is not None else "",
        "nodeHttpAddress": "",
        "nodeId": "",
        "logsLink": "",
        "blacklistedNodes": "",
        "nodesBlacklistedBySystem": "",
        "appAttemptId": str(attempt.attempt_id),
        "appAttemptState": attempt.state.value,
        "exportPorts": "",
    }


def attempts_info(app: Application) -> dict[str, Any]:
    return {"appAttempts": {"appAttempt": [attempt_info(a) for a in app.attempts]}}


def app_statistics(rm: RMContext, states: Sequence[AppState], app_type: str | None) -> dict[str, Any]:
    """``ApplicationStatisticsInfo``: how many applications of the type are in each state."""
    counts = dict.fromkeys(states, 0)
    for app in rm.apps:
        if app.reported_state in counts and (app_type is None or app.app_type.strip().lower() == app_type):
            counts[app.reported_state] += 1
    return {
        "appStatInfo": {
            "statItem": [{"state": s.value, "type": app_type or "*", "count": counts[s]} for s in states]
        }
    }
