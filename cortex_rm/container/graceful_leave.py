"""A node that leaves gracefully: YARN's graceful decommission, seen from the node.

SIGTERM (``systemctl stop``, ``cortex-rm node leave``) starts it; the daemon's
usual stop (ports, ring leave) follows once it is over.  ``GracefulLeave`` is the
sans-IO core: it is told the time and how many containers are still live, and
says what to do and what to report.  Its phases::

    DRAINING --no container left--------------------------> DRAINED
    DRAINING --the grace passed--> KILLING --none left----> DRAINED
                                   KILLING --kill_wait_s--> DRAINED (logged: some did not end)
    DRAINED --the RM marked the node DECOMMISSIONED-------> LEFT
    DRAINED --confirm_wait_s, or no RM ever registered----> LEFT (logged)
    any --cut short (a second SIGTERM, or SIGINT)---------> LEFT

A node that no RM ever registered has no grace: no AM would learn of the leave, so
its containers are killed at once, as a plain stop does.  An RM that is out of
reach for a while (a failover, a RESYNC, a broken connection: the status updater
reconnects) changes nothing: the grace holds, and a drained node waits for the
RM's word at most ``confirm_wait_s`` in all, reachable or not, since the RM may
still be copying blocks only this node holds.

While DRAINING and KILLING the heartbeats say DECOMMISSIONING (the RM places
nothing new here and tells the AMs); from DRAINED on they say DRAINED, and the RM
marks the node DECOMMISSIONED once its file system blocks have enough replicas
elsewhere (``allocator/node_leave.py``).  The containers still live when the grace
passes are killed with KILLED_BY_RESOURCEMANAGER (-106), an exit status Spark's
YarnAllocator does not count against the application.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twisted.logger import Logger

from cortex_rm.yarn.resource_tracker import NodeLeave
from cortex_rm.yarn.transitions import TransitionTable

log = Logger()

#: After the grace, how long killed containers get to end before the node stops waiting for them.
KILL_WAIT_S = 30.0
#: How long a drained node waits for the RM's DECOMMISSIONED (the RM waits at most 120 s for blocks).
CONFIRM_WAIT_S = 150.0


class LeavePhase(enum.Enum):
    DRAINING = "DRAINING"  # running containers have their grace
    KILLING = "KILLING"  # the grace passed: the containers left are being killed
    DRAINED = "DRAINED"  # none left: waiting for the RM to mark the node DECOMMISSIONED
    LEFT = "LEFT"  # the daemon may go on with its stop


class LeaveEvent(enum.Enum):
    GRACE_PASSED = "GRACE_PASSED"
    EMPTY = "EMPTY"
    KILL_WAIT_PASSED = "KILL_WAIT_PASSED"
    CONFIRMED = "CONFIRMED"
    CONFIRM_WAIT_PASSED = "CONFIRM_WAIT_PASSED"
    CUT_SHORT = "CUT_SHORT"


_P, _L = LeavePhase, LeaveEvent
LEAVE_TRANSITIONS: TransitionTable[LeavePhase, LeaveEvent] = TransitionTable(
    "graceful leave",
    {
        (_P.DRAINING, _L.EMPTY): _P.DRAINED,
        (_P.DRAINING, _L.GRACE_PASSED): _P.KILLING,
        (_P.KILLING, _L.EMPTY): _P.DRAINED,
        (_P.KILLING, _L.KILL_WAIT_PASSED): _P.DRAINED,
        (_P.DRAINED, _L.CONFIRMED): _P.LEFT,
        (_P.DRAINED, _L.CONFIRM_WAIT_PASSED): _P.LEFT,
        **{(p, _L.CUT_SHORT): _P.LEFT for p in (_P.DRAINING, _P.KILLING, _P.DRAINED)},
    },
    ignored=[(_P.LEFT, e) for e in _L] + [(_P.DRAINING, _L.CONFIRMED), (_P.KILLING, _L.CONFIRMED)],
)


@dataclass(frozen=True)
class KillContainers:
    """Kill every live container (KILLED_BY_RESOURCEMANAGER): the grace passed, or the leave was cut short."""

    reason: str


class GracefulLeave:
    """The decisions of a node leaving gracefully (see the module docstring); times in seconds."""

    def __init__(
        self,
        started_s: float,
        grace_s: float,
        kill_wait_s: float = KILL_WAIT_S,
        confirm_wait_s: float = CONFIRM_WAIT_S,
    ) -> None:
        self.phase = LeavePhase.DRAINING
        self.started_s = started_s
        self.grace_s = grace_s
        self.kill_wait_s = kill_wait_s
        self.confirm_wait_s = confirm_wait_s
        self._since_s = started_s  # when the current phase began
        self.live = -1  # containers live at the last check (-1: not checked yet)
        self.outcome = ""  # how it ended (for the log and the CLI)

    def _go(self, event: LeaveEvent, now_s: float, why: str = "") -> bool:
        new = LEAVE_TRANSITIONS.next_state(self.phase, event)
        if new is None or new is self.phase:
            return False
        log.info("graceful leave {old} -> {new} on {event} {why}", old=self.phase.name, new=new.name,
                 event=event.name, why=why)  # fmt: skip
        self.phase, self._since_s = new, now_s
        if new is LeavePhase.LEFT:
            self.outcome = why
        return True

    @property
    def report(self) -> NodeLeave:
        """What the heartbeats say."""
        if self.phase in (LeavePhase.DRAINING, LeavePhase.KILLING):
            return NodeLeave.DECOMMISSIONING
        return NodeLeave.DRAINED

    @property
    def left(self) -> bool:
        return self.phase is LeavePhase.LEFT

    def check(self, now_s: float, live: int, rm_reachable: bool, *, rm_known: bool = True) -> list[KillContainers]:
        """The containers still live at ``now_s``, whether the RM can hear from this node now (a
        registered status updater) and whether any RM ever registered it; what to do now."""
        if self.live == -1 and not rm_known:  # no RM hears of the leave: nothing drains the node
            self.grace_s = 0.0
        self.live = live
        actions: list[KillContainers] = []
        if self.phase in (LeavePhase.DRAINING, LeavePhase.KILLING) and live == 0:
            self._go(_L.EMPTY, now_s, "(no container left)")
        elif self.phase is LeavePhase.DRAINING and now_s - self.started_s >= self.grace_s:
            self._go(_L.GRACE_PASSED, now_s, f"({live} containers still running)")
            actions.append(KillContainers(f"the node is decommissioned: its grace of {self.grace_s:g} s passed"))
        elif self.phase is LeavePhase.KILLING and now_s - self._since_s >= self.kill_wait_s:
            self._go(_L.KILL_WAIT_PASSED, now_s, f"({live} containers killed but not ended)")
        if self.phase is LeavePhase.DRAINED:
            if not rm_known:
                self._go(_L.CONFIRM_WAIT_PASSED, now_s, "without the ResourceManager's word: no RM registered the node")
            elif now_s - self._since_s >= self.confirm_wait_s:
                unreachable = "" if rm_reachable else " (it is unreachable)"
                self._go(_L.CONFIRM_WAIT_PASSED, now_s,
                         f"without the ResourceManager's word after {self.confirm_wait_s:g} s{unreachable}")  # fmt: skip
        return actions

    def confirmed(self, now_s: float) -> None:
        """The RM marked this node DECOMMISSIONED."""
        self._go(_L.CONFIRMED, now_s, "(the ResourceManager marked the node DECOMMISSIONED)")

    def cut_short(self, now_s: float) -> list[KillContainers]:
        """Stop at once (a second SIGTERM, or SIGINT): kill what is left, wait for nothing more."""
        if not self._go(_L.CUT_SHORT, now_s, "(cut short)"):
            return []
        return [KillContainers("the node stops at once")]

    def doing(self, now_s: float) -> str:
        """What the leave waits for now, for people."""
        if self.phase is LeavePhase.DRAINING:
            left_s = max(0.0, self.grace_s - (now_s - self.started_s))
            return f"DECOMMISSIONING: waiting for {self.live} containers to finish (grace ends in {left_s:.0f} s)"
        if self.phase is LeavePhase.KILLING:
            return f"DECOMMISSIONING: the grace passed; waiting for {self.live} killed containers to end"
        if self.phase is LeavePhase.DRAINED:
            return "DRAINED: waiting for the ResourceManager to mark the node DECOMMISSIONED (blocks copied elsewhere)"
        return f"LEFT {self.outcome}"
