"""How a node reports to the ResourceManager: YARN's NodeStatusUpdater.

``NodeStatusUpdater`` is the sans-IO core: it takes what happened (connected,
an answer arrived, a call failed, a timer fired) and returns the actions to take
(connect, send this registration or heartbeat, wait this long).  Its lifecycle
is an explicit transition table::

    IDLE --start--> CONNECTING --connected--> REGISTERING --registered--> REPORTING
    REPORTING --heartbeat_due--> HEARTBEATING --answered NORMAL--> REPORTING
                                 HEARTBEATING --answered RESYNC--> REGISTERING
                                 HEARTBEATING --answered SHUTDOWN--> SHUT_DOWN
    CONNECTING/REGISTERING/REPORTING/HEARTBEATING --failure--> BACKING_OFF --retry_due--> CONNECTING
    any --stop--> STOPPED

After a reconnection a node that had registered goes straight to a heartbeat
with its last response id, as YARN's NM does: if the RM restarted or lost the
node, it answers RESYNC and the node registers again.

Completed containers are acknowledged by the RM's answers: a node keeps
reporting a completed container until ``ContainersAcknowledged`` names it.  A
registration's answer acknowledges the completed containers it listed.
The RM processes exactly one heartbeat per response id (a heartbeat resent after
a broken connection gets the stored answer, see ``allocator/node_tracker.py``),
and a node cannot tell which one it processed; but completed containers stay in
every report until acknowledged, so the completed containers of the *first*
heartbeat sent with a response id are in whichever one the RM processed.  A
NORMAL answer therefore acknowledges those.

Kept completions (``kept_completions.py``): when the registration's answer says the
RM names removable completions (``removes_completed_containers``), an acknowledged
completed container is not forgotten but kept, out of the heartbeats, until a
heartbeat answer names it in ``containers_to_remove`` or cleans up its application;
every registration lists the kept ones after what the node reports (at most
``MAX_CONTAINERS`` in all: live containers first), so an RM that took over hands
them to their AM.  With an RM that does not say so (an older one) the node forgets
a completion once acknowledged, as before: nobody would ever name it.

Back-off: after the n-th failure in a row the updater waits
``min(max_ms, initial_ms * multiplier ** (n - 1))``, less a random fraction (up
to ``jitter``) so that nodes cut off together (an RM restart) do not all come
back in the same millisecond; a refusal (``NodeRefused``, or an RM key that
differs from the pinned one) waits ``max_ms``, since retrying at once cannot
help.  Any successful answer resets the count.

``roles/status_updater_service.NodeStatusUpdaterService`` is the thin Twisted
driver: it connects to the RM's tracker over mutual TLS, checks the RM's key,
and runs this core's actions with the reactor's timers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Union

from twisted.logger import Logger

from cortex_rm.container.kept_completions import MAX_KEPT_COMPLETIONS, KeptCompletions
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import ApplicationId, ContainerId
from cortex_rm.yarn.resource_tracker import (
    MAX_CONTAINERS,
    ContainerReport,
    HeartbeatAnswer,
    NodeAction,
    NodeHealth,
    NodeLeave,
    NodeRegistration,
    NodeStatusReport,
    RegistrationAnswer,
)
from cortex_rm.yarn.transitions import TransitionTable

log = Logger()


class UpdaterState(enum.Enum):
    IDLE = "IDLE"
    CONNECTING = "CONNECTING"
    REGISTERING = "REGISTERING"  # registerNode in flight
    REPORTING = "REPORTING"  # registered, waiting for the next heartbeat time
    HEARTBEATING = "HEARTBEATING"  # nodeHeartbeat in flight
    BACKING_OFF = "BACKING_OFF"  # waiting before the next connection attempt
    SHUT_DOWN = "SHUT_DOWN"  # the RM told this node to stop reporting
    STOPPED = "STOPPED"


class UpdaterEvent(enum.Enum):
    START = "START"
    CONNECTED = "CONNECTED"
    REGISTERED = "REGISTERED"
    HEARTBEAT_DUE = "HEARTBEAT_DUE"
    ANSWERED = "ANSWERED"
    FAILED = "FAILED"  # no connection, a broken or timed-out call, the connection lost
    REFUSED = "REFUSED"  # NodeRefused, or the RM's key is not the pinned one
    RETRY_DUE = "RETRY_DUE"
    STOP = "STOP"


_S, _E = UpdaterState, UpdaterEvent
UPDATER_TRANSITIONS: TransitionTable[UpdaterState, UpdaterEvent] = TransitionTable(
    "node status updater",
    {
        (_S.IDLE, _E.START): _S.CONNECTING,
        (_S.CONNECTING, _E.CONNECTED): [_S.REGISTERING, _S.HEARTBEATING],
        (_S.REGISTERING, _E.REGISTERED): _S.REPORTING,
        (_S.REPORTING, _E.HEARTBEAT_DUE): _S.HEARTBEATING,
        (_S.HEARTBEATING, _E.ANSWERED): [_S.REPORTING, _S.REGISTERING, _S.SHUT_DOWN],
        **{(s, _E.FAILED): _S.BACKING_OFF for s in (_S.CONNECTING, _S.REGISTERING, _S.REPORTING, _S.HEARTBEATING)},
        **{(s, _E.REFUSED): _S.BACKING_OFF for s in (_S.CONNECTING, _S.REGISTERING, _S.HEARTBEATING)},
        (_S.BACKING_OFF, _E.RETRY_DUE): _S.CONNECTING,
        **{(s, _E.STOP): _S.STOPPED for s in _S if s is not _S.STOPPED},
    },
    # once stopped, or told to shut down, late news of the old connection changes nothing
    ignored=[(_S.STOPPED, e) for e in _E if e is not _E.START]
    + [(_S.SHUT_DOWN, _E.FAILED)],
)


# ------------------------------------------------------------- actions


@dataclass(frozen=True)
class Connect:
    """Open a connection to the RM's tracker."""


@dataclass(frozen=True)
class SendRegistration:
    registration: NodeRegistration


@dataclass(frozen=True)
class SendHeartbeat:
    status: NodeStatusReport


@dataclass(frozen=True)
class ScheduleHeartbeat:
    delay_ms: int


@dataclass(frozen=True)
class ScheduleRetry:
    """Wait ``delay_ms`` before reconnecting; ``reason`` is what went wrong, for the log."""

    delay_ms: int
    reason: str
    failures: int


@dataclass(frozen=True)
class Disconnect:
    """Drop the current connection, if any."""


@dataclass(frozen=True)
class CleanupContainers:
    """The RM asked this node to stop these containers (the container runtime acts on it)."""

    container_ids: tuple[ContainerId, ...]


@dataclass(frozen=True)
class CleanupApplications:
    """These applications finished: the node cleans up their containers and work dirs."""

    app_ids: tuple[ApplicationId, ...]


@dataclass(frozen=True)
class ContainersAcknowledged:
    """The RM has recorded these completed containers: the node may stop reporting them."""

    container_ids: tuple[ContainerId, ...]


Action = Union[
    Connect,
    SendRegistration,
    SendHeartbeat,
    ScheduleHeartbeat,
    ScheduleRetry,
    Disconnect,
    CleanupContainers,
    CleanupApplications,
    ContainersAcknowledged,
]


@dataclass(frozen=True)
class Backoff:
    """Capped exponential back-off with jitter (see the module docstring)."""

    initial_ms: int = 500
    max_ms: int = 30_000
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay_ms(self, failures: int, random_value: float) -> int:
        """The wait after ``failures`` failures in a row (1 = the first), ``random_value`` in [0, 1)."""
        exponent = min(max(failures - 1, 0), 64)
        base = min(float(self.max_ms), self.initial_ms * self.multiplier**exponent)
        return max(1, round(base * (1 - self.jitter * random_value)))

    def refused_delay_ms(self, random_value: float) -> int:
        return max(1, round(self.max_ms * (1 - self.jitter * random_value)))


# ------------------------------------------------------------- the core


class NodeStatusUpdater:
    """The decisions of a node reporting to its RM, free of any I/O."""

    def __init__(
        self,
        registration: NodeRegistration,
        backoff: Backoff = Backoff(),
        random: Callable[[], float] = lambda: 0.0,
        kept_limit: int = MAX_KEPT_COMPLETIONS,
    ) -> None:
        self.registration = registration
        self._health = NodeHealth(healthy=registration.healthy, health_report=registration.health_report)
        self.backoff = backoff
        self.random = random
        self.state = UpdaterState.IDLE
        self.registered = False  # whether the RM has accepted a registration (reset by RESYNC / refusal)
        self.last_response_id = 0
        self.heartbeat_interval_ms = registration.heartbeat_interval_ms
        self.rm_identifier: int | None = None
        self.failures = 0
        # the first heartbeat sent with the current last_response_id (see the module docstring)
        self._first_report: NodeStatusReport | None = None
        self._registered_completed: tuple[ContainerReport, ...] = ()  # listed by the registration in flight
        self._last_report: NodeStatusReport | None = None  # the heartbeat in flight (the last one sent)
        self.kept = KeptCompletions(kept_limit)  # acknowledged completions the RM has not let go of
        self.rm_removes = False  # the RM names removable completions (its registration answer said so)
        # a graceful leave (graceful_leave.py): what the heartbeats say, and whether the RM has
        # marked this node DECOMMISSIONED (its answer SHUTDOWN said so)
        self.leave: NodeLeave | None = None
        self.decommissioned = False

    def _go(self, event: UpdaterEvent, target: UpdaterState | None = None) -> bool:
        new = UPDATER_TRANSITIONS.next_state(self.state, event, target)
        if new is None:
            return False
        # one event per transition, except the routine REPORTING <-> HEARTBEATING cycle
        routine = {self.state, new} == {_S.REPORTING, _S.HEARTBEATING}
        if new is not self.state and not routine:
            log.info("status updater {old} -> {new} on {event}", old=self.state.name, new=new.name, event=event.name)
        self.state = new
        return True

    def _status(self, health: NodeHealth) -> NodeStatusReport:
        report = NodeStatusReport(
            node_id=self.registration.node_id,
            response_id=self.last_response_id,
            healthy=health.healthy,
            health_report=health.health_report,
            containers=health.containers,
            leave=self.leave,
            capability=self.registration.capability,  # (the caps may change: roles/node_caps.py)
            offering=health.offering,
        )
        if self._first_report is None or self._first_report.response_id != report.response_id:
            self._first_report = report
        self._last_report = report
        return report

    def _acknowledged(self) -> tuple[ContainerReport, ...]:
        """The completed containers the RM has certainly seen, once a heartbeat is answered."""
        first, self._first_report = self._first_report, None
        if first is None:
            return ()
        return tuple(c for c in first.containers if c.state is ContainerState.COMPLETE)

    def _keep(self, acknowledged: tuple[ContainerReport, ...]) -> list[Action]:
        """The RM recorded ``acknowledged``: kept until it lets go of them, if it ever will (see the
        module docstring); the node stops reporting them either way."""
        if self.rm_removes:
            self.kept.acknowledged(acknowledged)
        else:
            self.kept.clear()
        return [ContainersAcknowledged(tuple(c.container_id for c in acknowledged))] if acknowledged else []

    def start(self) -> list[Action]:
        self._go(_E.START)
        return [Connect()]

    def connected(self, health: NodeHealth = NodeHealth()) -> list[Action]:
        """The connection is up (and the RM's key checked)."""
        if self.registered:
            if not self._go(_E.CONNECTED, _S.HEARTBEATING):
                return []
            return [SendHeartbeat(self._status(health))]
        if not self._go(_E.CONNECTED, _S.REGISTERING):
            return []
        self._health = health
        return [SendRegistration(self._registration())]

    def registered_with(self, answer: RegistrationAnswer) -> list[Action]:
        """registerNode succeeded."""
        if not self._go(_E.REGISTERED):
            return []
        if self.rm_identifier is not None and self.rm_identifier != answer.rm_identifier:
            log.info(
                "the ResourceManager restarted (identifier {old} -> {new})",
                old=self.rm_identifier,
                new=answer.rm_identifier,
            )
        self.registered, self.failures = True, 0
        self.rm_identifier = answer.rm_identifier
        self.last_response_id = 0
        self._first_report = None
        self.heartbeat_interval_ms = answer.heartbeat_interval_ms
        self.rm_removes = answer.removes_completed_containers
        # the RM recorded the completed containers the registration listed: no longer reported, and
        # kept only if this RM will say when its AM has them
        acknowledged, self._registered_completed = self._registered_completed, ()
        return [*self._keep(acknowledged), ScheduleHeartbeat(self.heartbeat_interval_ms)]

    def heartbeat_due(self, health: NodeHealth) -> list[Action]:
        if not self._go(_E.HEARTBEAT_DUE):
            return []
        self._health = health
        return [SendHeartbeat(self._status(health))]

    def _registration(self) -> NodeRegistration:
        """The registration with the node's health and containers as last known (YARN's nodeStatus and
        NMContainerStatuses in it): an RM that restarted recovers the running containers from it, and
        hands the completed ones, kept ones included, to their AMs."""
        health = self._health
        reported = {c.container_id for c in health.containers}
        kept = tuple(c for c in self.kept.reports() if c.container_id not in reported)
        containers = (health.containers + kept)[:MAX_CONTAINERS]
        if len(health.containers) + len(kept) > MAX_CONTAINERS:
            log.warn(
                "the registration lists {n} of {total} containers (at most {limit})",
                n=MAX_CONTAINERS, total=len(health.containers) + len(kept), limit=MAX_CONTAINERS,
            )  # fmt: skip
        self._registered_completed = tuple(c for c in containers if c.state is ContainerState.COMPLETE)
        return replace(
            self.registration, healthy=health.healthy, health_report=health.health_report, containers=containers,
            leave=self.leave,
        )  # fmt: skip

    def answered(self, answer: HeartbeatAnswer) -> list[Action]:
        """nodeHeartbeat returned ``answer``."""
        target = {NodeAction.NORMAL: _S.REPORTING, NodeAction.RESYNC: _S.REGISTERING, NodeAction.SHUTDOWN: _S.SHUT_DOWN}
        if not self._go(_E.ANSWERED, target[answer.action]):
            return []
        self.failures = 0
        if answer.action is NodeAction.RESYNC:
            log.info("the ResourceManager asks this node to register again: {why}", why=answer.diagnostics)
            self.registered = False
            self._first_report = None
            return [SendRegistration(self._registration())]
        if answer.action is NodeAction.SHUTDOWN and answer.decommissioned:
            log.info("the ResourceManager marked this node DECOMMISSIONED")
            self.decommissioned = True
            return [Disconnect()]
        if answer.action is NodeAction.SHUTDOWN:
            log.warn("the ResourceManager told this node to stop reporting: {why}", why=answer.diagnostics)
            return [Disconnect()]
        self.last_response_id = answer.response_id
        self.heartbeat_interval_ms = answer.next_heartbeat_interval_ms
        acknowledged = self._acknowledged()
        actions = self._keep(acknowledged)
        last, self._last_report = self._last_report, None
        if answer.containers_to_remove:
            # (those this answer acknowledged are no longer reported: a name for one of them applies now)
            done = {c.container_id for c in acknowledged}
            still_reported = {c.container_id for c in last.containers} - done if last is not None else set()
            self.kept.remove(answer.containers_to_remove, still_reported)
        if answer.containers_to_cleanup:
            actions.append(CleanupContainers(answer.containers_to_cleanup))
        if answer.applications_to_cleanup:
            self.kept.applications_cleaned(frozenset(answer.applications_to_cleanup))
            actions.append(CleanupApplications(answer.applications_to_cleanup))
        actions.append(ScheduleHeartbeat(self.heartbeat_interval_ms))
        return actions

    def failed(self, reason: str) -> list[Action]:
        """The connection could not be made, or broke, or a call failed or timed out."""
        if not self._go(_E.FAILED):
            return []
        self.failures += 1
        return [Disconnect(), ScheduleRetry(self.backoff.delay_ms(self.failures, self.random()), reason, self.failures)]

    def refused(self, reason: str) -> list[Action]:
        """The RM refused this node, or showed a key other than the pinned one."""
        if not self._go(_E.REFUSED):
            return []
        self.failures += 1
        self.registered = False
        return [Disconnect(), ScheduleRetry(self.backoff.refused_delay_ms(self.random()), reason, self.failures)]

    def retry_due(self) -> list[Action]:
        if not self._go(_E.RETRY_DUE):
            return []
        return [Connect()]

    def stop(self) -> list[Action]:
        if not self._go(_E.STOP):
            return []
        return [Disconnect()]
