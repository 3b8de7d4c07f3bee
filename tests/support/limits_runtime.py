"""A stand-in for the LXC runtime's ``set_limits`` (the node cgroup's limits), for tests of the caps."""

from __future__ import annotations

from cortex_rm.container.node_cgroup import NodeLimits


class LimitsRuntime:
    """The LXC runtime's ``set_limits``: what it was given, in order."""

    def __init__(self) -> None:
        self.given: list[NodeLimits] = []

    def set_limits(self, limits: NodeLimits) -> list[str]:
        self.given.append(limits)
        return []
