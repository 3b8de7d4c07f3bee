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
reporting a completed container until ``ContainersAcknowledged`` names it.
The RM processes exactly one heartbeat per response id (a heartbeat resent after
a broken connection gets the stored answer, see ``allocator/node_tracker.py``),
and a node cannot tell which one it processed; but completed containers stay in
every report until acknowledged, so the completed containers of the *first*
heartbeat sent with a response id are in whichever one the RM processed.  A
NORMAL answer therefore acknowledges those.

Back-off: after the n-th failure in a row the updater waits
``min(max_ms, initial_ms * multiplier ** (n - 1))``, less a random fraction (up
to ``jitter``) so that nodes cut off together (an RM restart) do not all come
back in the same millisecond; a refusal (``NodeRefused``, or an RM key that
differs from the pinned one) waits ``max_ms``, since retrying at once cannot
help.  Any successful answer resets the count.

``NodeStatusUpdaterService`` is the thin Twisted driver: it connects with
``internal.tracker_client.TrackerClient`` over mutual TLS, checks the RM's key
against this node's pin (trust on first use, see ``cortex_rm/dht/identity.py``),
runs the core's actions with the injected reactor's timers, and logs what it
waits for.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.allocator.ids import ApplicationId, ContainerId
from cortex_rm.allocator.lifecycle import TransitionTable
from cortex_rm.config import parse_address
from cortex_rm.dht.identity import KnownResourceManagers, PinMismatch
from cortex_rm.internal.errors import NodeRefused, TrackerUnavailable
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_client import TrackerClient
from cortex_rm.internal.tracker_messages import (
    HeartbeatAnswer,
    ContainerState,
    NodeAction,
    NodeHealth,
    NodeRegistration,
    NodeStatusReport,
    RegistrationAnswer,
)

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
        self, registration: NodeRegistration, backoff: Backoff = Backoff(), random: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.registration = registration
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
        )
        if self._first_report is None or self._first_report.response_id != report.response_id:
            self._first_report = report
        return report

    def _acknowledged(self) -> tuple[ContainerId, ...]:
        """The completed containers the RM has certainly seen, once a heartbeat is answered."""
        first, self._first_report = self._first_report, None
        if first is None:
            return ()
        return tuple(c.container_id for c in first.containers if c.state is ContainerState.COMPLETE)

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
        return [SendRegistration(self.registration)]

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
        return [ScheduleHeartbeat(self.heartbeat_interval_ms)]

    def heartbeat_due(self, health: NodeHealth) -> list[Action]:
        if not self._go(_E.HEARTBEAT_DUE):
            return []
        return [SendHeartbeat(self._status(health))]

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
            return [SendRegistration(self.registration)]
        if answer.action is NodeAction.SHUTDOWN:
            log.warn("the ResourceManager told this node to stop reporting: {why}", why=answer.diagnostics)
            return [Disconnect()]
        self.last_response_id = answer.response_id
        self.heartbeat_interval_ms = answer.next_heartbeat_interval_ms
        actions: list[Action] = []
        acknowledged = self._acknowledged()
        if acknowledged:
            actions.append(ContainersAcknowledged(acknowledged))
        if answer.containers_to_cleanup:
            actions.append(CleanupContainers(answer.containers_to_cleanup))
        if answer.applications_to_cleanup:
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


# ------------------------------------------------------------- the Twisted driver


@dataclass(frozen=True)
class TrackerLocation:
    """Where the RM's tracker is, as the ring told us: its address and the fingerprint of its key."""

    address: str
    fingerprint: str


LocateTracker = Callable[[], "defer.Deferred[TrackerLocation]"]

RING_RESOURCE_MANAGER_PIN = "ring:cortex:resourcemanager"
"""The pin of the RM found through the ring (in known_resourcemanagers.json, beside address pins)."""


class NodeStatusUpdaterService:
    """Runs a ``NodeStatusUpdater`` against the RM's tracker at ``rm_address``.

    With ``rm_address`` empty, ``locate_tracker`` finds the tracker before every
    connection attempt (the ring's record of the active RM): the RM may have moved
    since the last one.  The key the tracker shows must then be the one the record
    names; with a configured address, the first key seen is pinned instead.
    """

    def __init__(
        self,
        reactor: Any,
        updater: NodeStatusUpdater,
        rm_address: str,
        tls: MutualTLS,
        known_rms: KnownResourceManagers,
        health: Callable[[], NodeHealth] = NodeHealth,
        rpc_timeout_ms: int = 10_000,
        on_cleanup: Callable[[tuple[ContainerId, ...]], None] | None = None,
        on_acknowledged: Callable[[tuple[ContainerId, ...]], None] | None = None,
        on_cleanup_applications: Callable[[tuple[ApplicationId, ...]], None] | None = None,
        on_registered: Callable[[RegistrationAnswer], None] | None = None,
        locate_tracker: LocateTracker | None = None,
    ) -> None:
        if not rm_address and locate_tracker is None:
            raise ValueError("without an RM tracker address the updater needs locate_tracker")
        self.reactor = reactor
        self.updater = updater
        self.rm_address = rm_address or "(through the ring)"
        self.locate_tracker = None if rm_address else locate_tracker
        if rm_address:
            self.rm_host, self.rm_port = parse_address(rm_address, "resourcemanager_tracker")
        self._expected_fingerprint: str | None = None
        self.tls = tls
        self.known_rms = known_rms
        self.health = health
        self.rpc_timeout_s = rpc_timeout_ms / 1000
        self.on_cleanup = on_cleanup
        self.on_acknowledged = on_acknowledged
        self.on_cleanup_applications = on_cleanup_applications
        self.on_registered = on_registered
        self.client: TrackerClient | None = None
        self._epoch = 0  # bumped on every connect and disconnect: older callbacks are stale
        self._timer: IDelayedCall | None = None
        self._pending: defer.Deferred[Any] | None = None
        self._queue: list[Action] = []
        self._running = False

    @property
    def state(self) -> UpdaterState:
        return self.updater.state

    def start(self) -> None:
        log.info("reporting to the ResourceManager tracker at {address}", address=self.rm_address)
        self._run(self.updater.start())

    def stop(self) -> defer.Deferred[None]:
        """Stop reporting; fires once the connection is closed."""
        client = self.client
        self._run(self.updater.stop())  # STOPPED first: what the cancellations below report is stale
        self._cancel_timer()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        if client is None:
            return defer.succeed(None)
        closed: defer.Deferred[Any] = client.lost
        return closed.addBoth(lambda _: None)

    # -- running the core's actions, one at a time, in order

    def _run(self, actions: list[Action]) -> None:
        self._queue.extend(actions)
        if self._running:
            return
        self._running = True
        try:
            while self._queue:
                self._execute(self._queue.pop(0))
        finally:
            self._running = False

    def _execute(self, action: Action) -> None:
        if isinstance(action, Connect):
            self._connect()
        elif isinstance(action, SendRegistration):
            self._send(
                "registerNode", lambda c: c.register(action.registration), self._registered
            )
        elif isinstance(action, SendHeartbeat):
            self._send("nodeHeartbeat", lambda c: c.heartbeat(action.status), self.updater.answered)
        elif isinstance(action, ScheduleHeartbeat):
            self._schedule(action.delay_ms, lambda: self._run(self.updater.heartbeat_due(self.health())))
        elif isinstance(action, ScheduleRetry):
            log.info(
                "cannot report to the ResourceManager at {address}: {reason}; "
                "retrying in {delay_s:.1f} s (failure {failures} in a row)",
                address=self.rm_address,
                reason=action.reason,
                delay_s=action.delay_ms / 1000,
                failures=action.failures,
            )
            self._schedule(action.delay_ms, lambda: self._run(self.updater.retry_due()))
        elif isinstance(action, Disconnect):
            self._disconnect()
        elif isinstance(action, CleanupContainers):
            if self.on_cleanup is not None:
                self.on_cleanup(action.container_ids)
        elif isinstance(action, CleanupApplications):
            if self.on_cleanup_applications is not None:
                self.on_cleanup_applications(action.app_ids)
        elif isinstance(action, ContainersAcknowledged):
            if self.on_acknowledged is not None:
                self.on_acknowledged(action.container_ids)
        else:  # pragma: no cover - the Action union is closed
            raise TypeError(f"unknown action {action!r}")

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self, delay_ms: int, fire: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.reactor.callLater(delay_ms / 1000, fire)

    def _current(self, epoch: int) -> bool:
        return epoch == self._epoch

    def _connect(self) -> None:
        if self.locate_tracker is None:
            self._connect_to_tracker()
            return
        self._epoch += 1
        epoch = self._epoch
        d = self.locate_tracker()
        self._pending = d

        def located(location: TrackerLocation) -> None:
            if not self._current(epoch):
                return
            self._pending = None
            if location.address != self.rm_address:
                log.info("the ring says the ResourceManager tracker is at {address}", address=location.address)
            self.rm_address = location.address
            self.rm_host, self.rm_port = parse_address(location.address, "the ring's ResourceManager record")
            self._expected_fingerprint = location.fingerprint
            self._connect_to_tracker()

        def failed(failure: Failure) -> None:
            if self._current(epoch):
                self._pending = None
                self._run(self.updater.failed(f"cannot find the ResourceManager through the ring: {failure.getErrorMessage()}"))

        d.addCallbacks(located, failed)

    def _check_key(self, fingerprint: str) -> None:
        """PinMismatch unless the tracker showed the key we expect.

        With a configured address: the key pinned for it (trust on first use).  Found
        through the ring: the key the ring's record names, and that must be the key
        pinned at the first registration through the ring.  Any ring member can write
        the record (the key space does not authenticate writers), so the record says
        where the RM is, never whom to trust.
        """
        if self.locate_tracker is None:
            self.known_rms.check(self.rm_address, fingerprint)
            return
        if fingerprint != self._expected_fingerprint:
            raise PinMismatch(
                f"the tracker at {self.rm_address} showed key {fingerprint}, but the ring's ResourceManager "
                f"record names {self._expected_fingerprint}; not reporting to it"
            )
        self.known_rms.check(RING_RESOURCE_MANAGER_PIN, fingerprint)

    def _connect_to_tracker(self) -> None:
        self._epoch += 1
        epoch = self._epoch
        d = TrackerClient.connect(self.reactor, self.rm_host, self.rm_port, self.tls, self.rpc_timeout_s)
        self._pending = d

        def connected(client: TrackerClient) -> None:
            if not self._current(epoch):
                client.abort()
                return
            self._pending = None
            try:
                self._check_key(client.peer_fingerprint)
            except PinMismatch as e:
                log.error("{message}", message=str(e))
                client.abort()
                self._run(self.updater.refused(f"the RM's key is not the pinned one ({client.peer_fingerprint})"))
                return
            self.client = client
            self._run(self.updater.connected(self.health()))
            # after the actions ran: a connection already closed reports as a failure of this epoch
            client.lost.addCallback(lambda reason: self._lost(epoch, reason))

        def failed(failure: Failure) -> None:
            if self._current(epoch):
                self._pending = None
                self._run(self.updater.failed(failure.getErrorMessage()))

        d.addCallbacks(connected, failed)

    def _lost(self, epoch: int, reason: BaseException) -> None:
        if self._current(epoch):
            self._run(self.updater.failed(f"the connection closed ({reason})"))

    def _disconnect(self) -> None:
        self._epoch += 1
        if self.client is not None:
            self.client.abort()
            self.client = None

    def _send(
        self,
        call: str,
        send: Callable[[TrackerClient], defer.Deferred[Any]],
        on_answer: Callable[[Any], list[Action]],
    ) -> None:
        epoch, client = self._epoch, self.client
        if client is None:  # cannot happen: sends follow a connection
            self._run(self.updater.failed(f"{call}: no connection"))
            return
        d = send(client)
        self._pending = d

        def answered(answer: Any) -> None:
            if self._current(epoch):
                self._pending = None
                self._run(on_answer(answer))

        def failed(failure: Failure) -> None:
            if not self._current(epoch):
                return
            self._pending = None
            if failure.check(NodeRefused):
                log.error("the ResourceManager refused {call}: {message}", call=call, message=failure.getErrorMessage())
                self._run(self.updater.refused(f"{call} refused: {failure.getErrorMessage()}"))
            elif failure.check(TrackerUnavailable):
                self._run(self.updater.failed(failure.getErrorMessage()))
            else:
                log.failure("{call} failed unexpectedly", failure, call=call)
                self._run(self.updater.failed(f"{call}: {failure.getErrorMessage()}"))

        d.addCallbacks(answered, failed)

    def _registered(self, answer: RegistrationAnswer) -> list[Action]:
        client = self.client
        if client is not None:
            pin_as = self.rm_address if self.locate_tracker is None else RING_RESOURCE_MANAGER_PIN
            try:
                self.known_rms.pin(pin_as, client.peer_fingerprint)  # trust on first use
            except OSError:
                log.failure("cannot store the pin of the ResourceManager at {address}", address=self.rm_address)
        log.info(
            "registered with the ResourceManager at {address} as {node_id}; heartbeat every {interval_ms} ms",
            address=self.rm_address,
            node_id=str(self.updater.registration.node_id),
            interval_ms=answer.heartbeat_interval_ms,
        )
        if self.on_registered is not None:
            self.on_registered(answer)  # e.g. the container-token master key for the NodeManager
        return self.updater.registered_with(answer)
