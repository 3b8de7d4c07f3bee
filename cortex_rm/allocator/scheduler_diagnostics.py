"""The scheduler's explanations: why an application waits, and why an ask can never be served.

``explain_waiting_ams`` writes the first into the diagnostics of applications still
waiting for their AM container, after each allocation pass.

These run on demand (a report, an allocate response, a submission check), never in
the allocation pass, and say what a user can act on: the queue limit that is
reached, the resource that no node has free, the blacklist or locality that keeps
an ask off the nodes that have room.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cortex_rm.allocator.allocation_pass import AllocationPass
from cortex_rm.allocator.am_placement import am_placement
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.app_states import AppState, AttemptState
from cortex_rm.allocator.asks import PendingRequest
from cortex_rm.allocator.node_index import FreeSpaceIndex, PlacementPolicy
from cortex_rm.allocator.scheduler_attempt import SchedulerAttempt
from cortex_rm.allocator.scheduler_queues import SchedulerQueue, format_percent
from cortex_rm.yarn.resources import Resource

if TYPE_CHECKING:
    from cortex_rm.allocator.scheduler import CapacityScheduler

NEXT_PASS = "Waiting for the next scheduling pass"
NO_NODES = "No node is registered with the ResourceManager; waiting for nodes to join"


def _first(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _names(names: Iterable[object], limit: int = 5) -> str:
    return _first(sorted(str(n) for n in names), limit)


def queue_reason(leaf: SchedulerQueue, resource: Resource, total: Resource) -> str | None:
    """The queue limit (the leaf's or an ancestor's) that keeps a container of ``resource`` out."""
    blocking = leaf.blocking_queue(resource.memory_mb, resource.vcores, total.memory_mb, total.vcores)
    if blocking is None:
        return None
    limit = blocking.limit(total)
    share = f"{format_percent(blocking.absolute_maximum_capacity)} = {limit}"
    if not resource.fits_in(limit):
        return (
            f"Queue {blocking.path}'s maximum capacity ({share}) is smaller than {resource}; "
            "it can run only when the cluster grows"
        )
    return f"Queue {blocking.path} is at its maximum capacity ({share}); waiting for running containers to finish"


def _no_node_reason(index: FreeSpaceIndex, resource: Resource, label: str) -> str | None:
    if not len(index):
        return f"No node labelled {label} is schedulable (the request's node label expression); waiting for one"
    if index.find(resource.memory_mb, resource.vcores, PlacementPolicy.SPREAD) is not None:
        return None
    largest = index.largest()
    assert largest is not None
    qualifier = f" labelled {label}" if label else ""
    return f"No node{qualifier} has {resource} free (largest free: {largest.free} on {largest.node_id})"


def _request_reason(s: CapacityScheduler, attempt: SchedulerAttempt, request: PendingRequest,
                    now_ms: int) -> str | None:
    resource = s.config.normalize(request.key.capability)
    total = s.nodes.total
    index = s.nodes.partition(request.label) if request.label else s.nodes.everywhere
    reason = queue_reason(attempt.leaf, resource, total) or _no_node_reason(index, resource, request.label)
    if reason is not None:
        return reason
    probe = AllocationPass(s, now_ms)
    probe.hold_static = s.static_held and not request.label
    if probe.place(attempt, request, resource.memory_mb, resource.vcores) is not None:
        return None
    if probe.hold_static and AllocationPass(s, now_ms).place(attempt, request, resource.memory_mb,
                                                             resource.vcores) is not None:
        return (
            f"Only static nodes have {resource} free, and they are kept for ApplicationMasters waiting for one "
            '(am_node_class = "static"; a request labelled static may still use them)'
        )
    asks = attempt.asks
    if asks.has_blacklist:
        exclude = lambda n: asks.is_blacklisted(n.host, n.rack)  # noqa: E731
        if index.find(resource.memory_mb, resource.vcores, PlacementPolicy.SPREAD, exclude) is None:
            return (
                f"Every node{f' labelled {request.label}' if request.label else ''} with {resource} free "
                "is blacklisted by the application "
                f"(blacklist: {_names(asks.blacklist)})"
            )
    places = _names([*request.hosts, *request.racks])
    if not request.relax_locality:
        return f"No requested host or rack ({places}) has {resource} free, and the request does not relax locality"
    config = s.config
    waited = 0 if request.first_missed_ms is None else now_ms - request.first_missed_ms
    delay = (config.node_locality_delay_ms if request.hosts else 0) + config.rack_locality_delay_ms
    return (
        f"Waiting for a container of {resource} on a requested host or rack ({places}); "
        f"delay scheduling lets it go elsewhere after {delay} ms (waited {waited} ms)"
    )


def waiting_reason(s: CapacityScheduler, attempt: SchedulerAttempt) -> str | None:
    """Why ``attempt`` has no container yet for what it asks; None if it asks for nothing."""
    if not attempt.am_pending and not attempt.asks.has_outstanding:
        return None
    if not s.nodes.by_id:
        return NO_NODES
    total = s.nodes.total
    if attempt.am_pending:
        assert attempt.am_resource is not None
        resource = s.config.normalize(attempt.am_resource)
        leaf = attempt.leaf
        reason = queue_reason(leaf, resource, total)
        if reason is None and not leaf.am_allowed(resource, total, s.config.max_am_share):
            limit = leaf.am_limit(total, s.config.max_am_share)
            reason = (
                f"Queue's AM resource limit exceeded: the ApplicationMasters of {leaf.path} hold {leaf.am_used} "
                f"and may hold {limit} ({format_percent(s.config.max_am_share)} of its guaranteed capacity); "
                "waiting for an ApplicationMaster to finish"
            )
        if reason is None:
            reason = am_placement(s, attempt, resource, s.now_ms()).waiting_reason(resource)
        return reason or f"{NEXT_PASS} to place its ApplicationMaster container"
    pending = attempt.asks.pending()
    now_ms = s.now_ms()
    for request in pending:
        reason = _request_reason(s, attempt, request, now_ms)
        if reason is not None:
            return reason
    return NEXT_PASS


def can_ever_fit(s: CapacityScheduler, resource: Resource) -> str | None:
    """Why a container of ``resource`` can never be allocated here; None if it can, or if no node is known yet."""
    if resource.memory_mb < 0 or resource.vcores < 0:
        return f"Invalid resource request: negative resource {resource}"
    maximum = s.config.maximum_allocation
    if not resource.fits_in(maximum):
        return (
            f"Invalid resource request: {resource} is more than the maximum allocation {maximum} "
            "(yarn.scheduler.maximum-allocation-mb / -vcores)"
        )
    shapes = s.nodes.shapes
    if not shapes:
        return None  # nodes may yet come
    normalized = s.config.normalize(resource)
    if any(normalized.fits_in(shape) for shape in shapes):
        return None
    as_given = str(resource) if normalized == resource else f"{resource} (normalized to {normalized})"
    biggest = sorted(shapes, key=lambda r: (r.memory_mb, r.vcores), reverse=True)
    return (
        f"Invalid resource request: {as_given} is larger than every node; "
        f"node capabilities: {_first([str(r) for r in biggest], 3)}"
    )


def explain_waiting_ams(apps: Iterable[Application], s: CapacityScheduler) -> None:
    """Accepted applications still waiting for their AM say why in their diagnostics."""
    for app in apps:
        attempt = app.current_attempt
        if app.state is not AppState.ACCEPTED or attempt is None or attempt.state is not AttemptState.SCHEDULED:
            continue
        if s.has_attempt(attempt.attempt_id) and (reason := s.waiting_reason(attempt.attempt_id)):
            app.diagnostics = f"Waiting for the AM container: {reason}"
