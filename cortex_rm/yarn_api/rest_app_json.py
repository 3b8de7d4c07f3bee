"""Applications and their attempts as the JSON objects of YARN's REST API (``/ws/v1/cluster/apps...``).

One function per Hadoop DAO (``AppInfo``, ``AppAttemptInfo``,
``ApplicationStatisticsInfo``), with Hadoop 3.x's field names.  Fields that YARN
leaves null (Jersey then omits them) are omitted here too: ``trackingUrl`` before
the AM has one, ``amContainerLogs``/``amHostHttpAddress`` while no AM container is
known, ``amRPCAddress`` before the AM registers.

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
from cortex_rm.allocator.app_queries import elapsed_ms, tracking_link
from cortex_rm.allocator.app_states import PENDING_APP_STATES, AppState
from cortex_rm.allocator.errors import UnknownQueue
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.rest_cluster_json import percent

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

# deSelects values (DeSelectFields.DeSelectType literals) -> the AppInfo field they drop.
DESELECTABLE: Final = {
    "resourcerequests": "resourceRequests",
    "timeouts": "timeouts",
    "appnodelabelexpression": "appNodeLabelExpression",
    "amnodelabelexpression": "amNodeLabelExpression",
    "resourceinfo": "resourceInfo",
}


def _label_expressions(app: Application) -> tuple[str | None, str | None]:
    """(appNodeLabelExpression, amNodeLabelExpression) as submitted; YARN's null is None."""
    ctx = yp.ApplicationSubmissionContextProto()
    try:
        ctx.ParseFromString(app.context)
    except DecodeError:  # a stored context we cannot read has no labels to show
        return None, None
    app_label = records.text_from_proto(ctx.node_label_expression) if ctx.HasField("node_label_expression") else None
    if app.unmanaged_am:
        return app_label, None
    am_label = app_label
    if len(ctx.am_container_resource_request) and ctx.am_container_resource_request[0].HasField(
        "node_label_expression"
    ):
        am_label = records.text_from_proto(ctx.am_container_resource_request[0].node_label_expression)
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
        "elapsedTime": elapsed_ms(app, rm.now_ms()),
        "allocatedMB": allocated.memory_mb,
        "allocatedVCores": allocated.vcores,
        "reservedMB": 0,
        "reservedVCores": 0,
        "runningContainers": usage.containers,
        "memorySeconds": 0,
        "vcoreSeconds": 0,
        "queueUsagePercentage": percent(allocated.memory_mb, queue_share),
        "clusterUsagePercentage": percent(allocated.memory_mb, total.memory_mb),
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
        info["trackingUrl"] = tracking_link(tracking_url)
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
    """``{"apps": {"app": [...]}}`` in the order given."""
    return {"apps": {"app": [app_info(a, rm, deselects) for a in apps]}}


def attempt_info(attempt: Attempt) -> dict[str, Any]:
    """``AppAttemptInfo``, with the AM container's node once it was placed."""
    return {
        "id": attempt.attempt_id.attempt_id,
        "startTime": attempt.start_time_ms,
        "finishedTime": attempt.finish_time_ms,
        "containerId": str(attempt.am_container_id) if attempt.am_container_id is not None else "",
        "nodeHttpAddress": attempt.am_node_http,
        "nodeId": attempt.am_node,
        "logsLink": "",
        "blacklistedNodes": "",
        "nodesBlacklistedBySystem": "",
        "appAttemptId": str(attempt.attempt_id),
        "appAttemptState": attempt.state.value,
        "exportPorts": "",
    }


def attempts_info(app: Application) -> dict[str, Any]:
    """``{"appAttempts": {"appAttempt": [...]}}``, every attempt of ``app``."""
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
