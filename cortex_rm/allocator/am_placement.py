"""Where an ApplicationMaster container may go: its label, the node classes, its blacklist.

An AM is the one container whose loss costs the whole attempt, so it goes where
nodes stay (DESIGN.md: "ApplicationMasters go to static nodes").  The first rule
that applies decides:

1. the AM's own label expression (``spark.yarn.am.nodeLabelExpression``, or the
   application's): only nodes with that label, as any labelled YARN request;
2. ``am_node_class = "any"``: a static node if one has room now, else any node;
3. ``am_node_class = "static"`` (the default): static nodes only -- unless no
   schedulable static node could ever hold it (there is none, every one is smaller
   than the AM, or every one that is large enough is leaving or on its blacklist), so
   a fresh cluster, where every node is still volatile, runs applications; or unless it has
   waited ``am_static_wait_ms`` for a static node with room (0: never).  Then a
   static node first, else any node.

The wait of rule 3 is YARN's bounded wait for a non-exclusive partition's idle
space turned around: the AM is the static partition's own ask, so it may wait for
static room -- while it does, the pass keeps unlabelled asks off static nodes
(``allocation_pass``) -- but not for ever, since executors that never end could hold
every static node.  It counts from the first pass that looked for a node for the AM
and found no static one with room (``SchedulerAttempt.am_static_missed_ms``).

AM blacklisting (YARN's ``yarn.am.blacklisting.*``, ``SimpleBlacklistManager``): a
node where one of the application's AM containers failed (an exit status not in
``ContainerExitStatus.NOT_COUNTED_FOR_AM_BLACKLIST``) is avoided by its later
attempts -- while the blacklist holds fewer than ``am_blacklist_disable_threshold``
times the nodes the AM could go to (all schedulable nodes, or those of its label);
from there on it is ignored, so a small cluster does not run out of nodes.  Nodes
are named by NodeId: several nodes may share a host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cortex_rm.allocator.node_index import Exclude, FreeSpaceIndex, PlacementPolicy, SchedulerNode
from cortex_rm.allocator.node_labels import STATIC, AMNodeClass
from cortex_rm.allocator.scheduler_attempt import SchedulerAttempt
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import Resource

if TYPE_CHECKING:
    from cortex_rm.allocator.scheduler import CapacityScheduler


def counts_for_am_blacklist(exit_status: int | None) -> bool:
    """Whether an AM container that ended with ``exit_status`` puts its node on the blacklist."""
    return exit_status is not None and exit_status not in ContainerExitStatus.NOT_COUNTED_FOR_AM_BLACKLIST


def am_blacklist(ended: Iterable[tuple[str, int | None]]) -> frozenset[NodeId]:
    """The blacklist from an application's ended AM containers: (NodeId text, exit status) pairs."""
    return frozenset(NodeId.parse(node) for node, status in ended if node and counts_for_am_blacklist(status))


@dataclass(frozen=True)
class AMPlacement:
    """Where one AM container may go now (see the module docstring)."""

    label: str  # the AM's label expression ("" none)
    tiers: tuple[FreeSpaceIndex, ...]  # where to look, in order
    static_only: bool  # rule 3 keeps it on static nodes
    blacklist: frozenset[NodeId]  # the blacklist in force (empty when off or past the threshold)
    beyond_static: str = ""  # why it may go to a node that is not static ("" when it may not, or has a label)
    static_wait_ms: int = 0  # am_static_wait_ms (rule 3)
    waited_ms: int = 0  # how long it has waited for a static node with room

    def _exclude(self) -> Exclude | None:
        blacklist = self.blacklist
        return (lambda n: n.node_id in blacklist) if blacklist else None

    def find(self, resource: Resource, policy: PlacementPolicy) -> SchedulerNode | None:
        """The node to place it on now, or None."""
        exclude = self._exclude()
        for index in self.tiers:
            node = index.find(resource.memory_mb, resource.vcores, policy, exclude)
            if node is not None:
                return node
        return None

    def waiting_reason(self, resource: Resource) -> str | None:
        """Why no node takes it now; None if one does."""
        if self.find(resource, PlacementPolicy.SPREAD) is not None:
            return None
        avoided = f"; the nodes where its earlier AMs failed are avoided ({_names(self.blacklist)})" if self.blacklist else ""
        last = self.tiers[-1]
        if self.label and not len(last):
            return f"No node labelled {self.label} is schedulable (the AM's node label expression); waiting for one{avoided}"
        largest = last.largest()
        free = f" (largest free: {largest.free} on {largest.node_id})" if largest is not None else ""
        if self.label:
            return f"No node labelled {self.label} has {resource} free{free}{avoided}"
        if self.static_only:
            if self.static_wait_ms:
                then = (
                    f"to any node once they have waited {_seconds(self.static_wait_ms)} s for one "
                    f"(am_static_wait_s; waited {_seconds(self.waited_ms)} s)"
                )
            else:
                then = "to any node only when no static node could ever hold them (am_static_wait_s = 0)"
            return (
                f"No static node has {resource} free{free}; ApplicationMasters go to static nodes "
                f'(am_node_class = "static"), {then}{avoided}'
            )
        why = f"; it may go to any node: {self.beyond_static}" if self.beyond_static else ""
        return f"No node has {resource} free for the ApplicationMaster{free}{why}{avoided}"


def am_placement(s: CapacityScheduler, attempt: SchedulerAttempt, resource: Resource, now_ms: int) -> AMPlacement:
    """Where ``attempt``'s AM container of (normalized) ``resource`` may go at ``now_ms``."""
    nodes, config = s.nodes, s.config
    label = attempt.am_label
    applicable = len(nodes.partition(label)) if label else len(nodes)
    blacklist = attempt.am_blacklist
    if not config.am_blacklisting or len(blacklist) >= config.am_blacklist_disable_threshold * applicable:
        blacklist = frozenset()
    if label:
        return AMPlacement(label, (nodes.partition(label),), False, blacklist)
    static = nodes.partition(STATIC)
    if config.am_node_class is AMNodeClass.ANY:
        return AMPlacement("", (static, nodes.everywhere), False, blacklist, 'am_node_class = "any"')
    if not _static_could_hold(s, resource, blacklist):
        return AMPlacement("", (static, nodes.everywhere), False, blacklist, "no static node could ever hold it")
    wait = config.am_static_wait_ms
    missed = attempt.am_static_missed_ms
    waited = 0 if missed is None else now_ms - missed
    if wait and missed is not None and waited >= wait:
        why = f"it waited {_seconds(waited)} s for a static node (am_static_wait_s = {_seconds(wait)})"
        return AMPlacement("", (static, nodes.everywhere), False, blacklist, why, wait, waited)
    return AMPlacement("", (static,), True, blacklist, "", wait, waited)


def _static_could_hold(s: CapacityScheduler, resource: Resource, blacklist: frozenset[NodeId]) -> bool:
    """Whether some static node, not leaving and not blacklisted, is at least as large as ``resource``."""
    if not blacklist:
        return any(resource.fits_in(shape) for shape in s.nodes.partition_shapes.get(STATIC, ()))
    return any(
        n.label == STATIC and not n.draining and n.node_id not in blacklist and resource.fits_in(n.capability)
        for n in s.nodes.by_id.values()
    )


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}"


def _names(node_ids: Iterable[NodeId], limit: int = 5) -> str:
    names = sorted(str(n) for n in node_ids)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
