"""The capacity scheduler's settings, and request normalization.

Defaults follow YARN's (``yarn-default.xml`` / ``capacity-scheduler.xml``) where
YARN has the setting; the locality delays are ours (see ``allocation_pass``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cortex_rm.allocator.node_index import PlacementPolicy
from cortex_rm.allocator.node_labels import AMNodeClass
from cortex_rm.yarn.ids import CONTAINER_EPOCH_SHIFT
from cortex_rm.yarn.resources import Resource


class SecondsClock(Protocol):
    """What the scheduler needs of a clock: ``IReactorTime.seconds`` (twisted's ``Clock`` in tests)."""

    def seconds(self) -> float:
        """The current time in seconds."""


@dataclass(frozen=True)
class SchedulerConfig:
    """How the scheduler decides; every field is checked in ``__post_init__``.

    ``maximum_allocation``
        The largest container anyone may ask for (``yarn.scheduler.maximum-allocation-mb``
        / ``-vcores``); a larger ask can never be served.
    ``minimum_allocation``
        Asks are rounded up to a multiple of it, and to at least it
        (``yarn.scheduler.minimum-allocation-mb`` / ``-vcores``): Spark's 896 MiB executor
        gets 1024 MiB.  ``Resource(1, 1)`` turns rounding off.
    ``node_locality_delay_ms``
        How long an ask that names hosts waits, from the first pass that could not
        place it on one of them, before it may go elsewhere in their racks.
    ``rack_locality_delay_ms``
        How much longer it waits before it may go anywhere (if ``relax_locality``).
        Both 0: no delay scheduling.
    ``max_am_share``
        The fraction of a leaf's guaranteed share its ApplicationMasters may hold
        together (``maximum-am-resource-percent``, 0.1); one AM may always run.
    ``placement``
        ``SPREAD`` (most free memory first) or ``PACK`` (best fit); see ``node_index``.
    ``max_containers_per_pass``
        Stop a pass after this many containers (0: no limit), bounding the time one
        pass may take; the next pass goes on where it stopped.
    ``container_launch_expiry_ms``
        A container handed out but not reported RUNNING within this time is taken
        back (``yarn.resourcemanager.rm.container-allocation.expiry-interval-ms``).
    ``epoch``
        The epoch new container ids carry above bit 40 until ``start_epoch`` sets
        the RM's own (its start count, from the state store: ``ClusterScheduling.recover``),
        so ids never repeat across restarts.
    ``am_node_class``
        Where ApplicationMasters without a label expression go (``AMNodeClass``):
        static nodes (volatile ones only when no static node could ever hold the AM,
        or after ``am_static_wait_ms``), or any node.
    ``am_static_wait_ms``
        With ``am_node_class`` static: how long an AM waits for a static node with
        room, from the first pass that found none, before it may go to any node
        (``am_placement``); while it waits, unlabelled asks keep off static nodes.
        0: it waits for as long as a static node could hold it.
    ``am_blacklisting``
        Whether a node where an application's AM container failed is avoided for its
        next attempts (``yarn.am.blacklisting.enabled``).
    ``am_blacklist_disable_threshold``
        The blacklist is ignored once it holds at least this fraction of the nodes the AM
        could go to (``yarn.am.blacklisting.disable-failure-threshold``), so an
        application is never left with no node at all.
    """

    maximum_allocation: Resource = Resource(8192, 4)
    minimum_allocation: Resource = Resource(1024, 1)
    node_locality_delay_ms: int = 1000
    rack_locality_delay_ms: int = 1000
    max_am_share: float = 0.1
    placement: PlacementPolicy = PlacementPolicy.SPREAD
    max_containers_per_pass: int = 0
    container_launch_expiry_ms: int = 600_000
    epoch: int = 0
    am_node_class: AMNodeClass = AMNodeClass.STATIC
    am_static_wait_ms: int = 60_000
    am_blacklisting: bool = True
    am_blacklist_disable_threshold: float = 0.8

    def __post_init__(self) -> None:
        mn, mx = self.minimum_allocation, self.maximum_allocation
        if mn.memory_mb < 1 or mn.vcores < 1:
            raise ValueError(f"minimum_allocation must be at least <memory:1, vCores:1>, not {mn}")
        if not mn.fits_in(mx):
            raise ValueError(f"minimum_allocation {mn} must fit in maximum_allocation {mx}")
        if self.node_locality_delay_ms < 0 or self.rack_locality_delay_ms < 0:
            raise ValueError("locality delays must not be negative")
        if not 0.0 <= self.max_am_share <= 1.0:
            raise ValueError(f"max_am_share must be within [0, 1], not {self.max_am_share}")
        if self.max_containers_per_pass < 0:
            raise ValueError("max_containers_per_pass must not be negative (0: no limit)")
        if self.container_launch_expiry_ms <= 0:
            raise ValueError("container_launch_expiry_ms must be positive")
        if not 0 <= self.epoch < (1 << (63 - CONTAINER_EPOCH_SHIFT)):
            raise ValueError(f"epoch {self.epoch} does not fit in a container id")
        if self.am_static_wait_ms < 0:
            raise ValueError("am_static_wait_ms must not be negative (0: no limit)")
        if not 0.0 <= self.am_blacklist_disable_threshold <= 1.0:
            raise ValueError(f"am_blacklist_disable_threshold must be within [0, 1], not {self.am_blacklist_disable_threshold}")

    def normalize(self, resource: Resource) -> Resource:
        """``resource`` rounded up to the minimum allocation's multiples, capped at the maximum."""
        mn, mx = self.minimum_allocation, self.maximum_allocation
        mem = max(mn.memory_mb, -(-resource.memory_mb // mn.memory_mb) * mn.memory_mb)
        vcores = max(mn.vcores, -(-resource.vcores // mn.vcores) * mn.vcores)
        return Resource(min(mem, mx.memory_mb), min(vcores, mx.vcores))
