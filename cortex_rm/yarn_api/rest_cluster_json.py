"""The cluster's records as the JSON objects of YARN's REST API (``/ws/v1/cluster/...``).

One function per Hadoop DAO (``ClusterInfo``, ``ClusterMetricsInfo``,
``CapacitySchedulerInfo``, ``NodeInfo``, ``ResourceInfo``), with Hadoop 3.x's
field names.  Applications and their attempts are in ``rest_app_json``.

Collections are always written whole, ``{"nodes": {"node": []}}`` when empty (see
``rest_app_json`` for why).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from cortex_rm.allocator.app_states import PENDING_APP_STATES, AppState
from cortex_rm.allocator.node_labels import ANY_LABEL
from cortex_rm.allocator.nodes import NodeRecord, NodeState
from cortex_rm.allocator.queues import Queue, QueueState
from cortex_rm.allocator.rm_context import ClusterMetrics, RMContext
from cortex_rm.yarn.resources import Resource

YARN_API_VERSION: Final = "3.5.0"
LONG_MAX: Final = 2**63 - 1
MAX_SYSTEM_APPLICATIONS: Final = 10000  # yarn.scheduler.capacity.maximum-applications
USER_LIMIT_PERCENT: Final = 100  # yarn.scheduler.capacity.<queue>.minimum-user-limit-percent
USER_LIMIT_FACTOR: Final = 1.0  # yarn.scheduler.capacity.<queue>.user-limit-factor

# Nodes whose web address YARN blanks out: they are gone.
_GONE_NODE_STATES: Final = frozenset({NodeState.LOST, NodeState.DECOMMISSIONED, NodeState.REBOOTED})


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
    """``{"clusterInfo": ...}``: this RM's identity and versions (``version`` is Cortex's)."""
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
    """``{"clusterMetrics": ...}``: applications, resources and nodes counted over the cluster."""
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


def percent(part: float, whole: float) -> float:
    """``part`` as a percentage of ``whole``; 0 when there is no whole (an empty cluster or queue)."""
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
        "absoluteUsedCapacity": percent(usage.used.memory_mb, total.memory_mb),
        "numApplications": usage.num_apps_pending + usage.num_apps_running,
        "usedResources": str(usage.used),
        "queueName": queue.name,
        "state": state.value,
        "resourcesUsed": resource_info(usage.used),
        "nodeLabels": [ANY_LABEL],  # the labels the queue may use: all (static and volatile)
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
    """``{"nodes": {"node": [...]}}``, by node id."""
    return {"nodes": {"node": [node_info(n, version) for n in sorted(nodes, key=lambda n: n.node_id)]}}
