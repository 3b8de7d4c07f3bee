"""The Twisted driver of the NodeManager's ``NodeStatusUpdater``: the node's link to the RM's tracker.

``NodeStatusUpdaterService`` connects with ``internal.tracker_client.TrackerClient``
over mutual TLS, checks the RM's key against this node's pin (trust on first use,
see ``internal/identity.py``), runs the core's actions (``container/status_updater.py``)
with the injected reactor's timers, hands the RM's answers to the NodeManager
through the hooks it was built with, and logs what it waits for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container.status_updater import (
    Action,
    CleanupApplications,
    CleanupContainers,
    Connect,
    ContainersAcknowledged,
    Disconnect,
    NodeStatusUpdater,
    ScheduleHeartbeat,
    ScheduleRetry,
    SendHeartbeat,
    SendRegistration,
    UpdaterState,
)
from cortex_rm.internal.errors import TrackerUnavailable
from cortex_rm.internal.identity import KnownResourceManagers, PinMismatch
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_client import TrackerClient
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.ids import ApplicationId, ContainerId
from cortex_rm.yarn.reactors import IReactorTimeTCP
from cortex_rm.yarn.resource_tracker import NodeHealth, NodeRefused, RegistrationAnswer

log = Logger()


@dataclass(frozen=True)
class TrackerLocation:
    """Where the RM's tracker is, as the ring told us: its address and the fingerprint of its key.
    ``vouched``: the record's writer is one of ``[ring] resource_managers`` (the ring refuses any
    other writer of that key), so its key is trusted as it is, and may change (RM failover)."""

    address: HostPort
    fingerprint: str
    vouched: bool = False


LocateTracker = Callable[[], "defer.Deferred[TrackerLocation]"]

RING_RESOURCE_MANAGER_PIN = "ring:cortex:resourcemanager"
"""The pin of the RM found through the ring (in known_resourcemanagers.json, beside address pins)."""


class NodeStatusUpdaterService:
    """Runs a ``NodeStatusUpdater`` against the RM's tracker at ``rm_address``.

    With ``rm_address`` None, ``locate_tracker`` finds the tracker before every
    connection attempt (the ring's record of the active RM): the RM may have moved
    since the last one.  The key the tracker shows must then be the one the record
    names; with a configured address, the first key seen is pinned instead.
    """

    def __init__(
        self,
        reactor: IReactorTimeTCP,
        updater: NodeStatusUpdater,
        rm_address: HostPort | None,
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
        if rm_address is None and locate_tracker is None:
            raise ValueError("without an RM tracker address the updater needs locate_tracker")
        self.reactor = reactor
        self.updater = updater
        self.rm_address = rm_address  # None until the ring says where the tracker is
        self.locate_tracker = None if rm_address is not None else locate_tracker
        self._expected_fingerprint: str | None = None
        self._vouched = False  # the ring's record is signed by a configured RM (TrackerLocation)
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
        log.info("reporting to the ResourceManager tracker at {address}", address=self._where())
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
                address=self._where(),
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

    def _where(self) -> str:
        """The tracker's address for messages (before the ring named one: how it is found)."""
        return str(self.rm_address) if self.rm_address is not None else "(through the ring)"

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
                log.info("the ring says the ResourceManager tracker is at {address}", address=str(location.address))
            self.rm_address = location.address
            self._expected_fingerprint, self._vouched = location.fingerprint, location.vouched
            self._connect_to_tracker()

        def failed(failure: Failure) -> None:
            if self._current(epoch):
                self._pending = None
                self._run(self.updater.failed(f"cannot find the ResourceManager through the ring: {failure.getErrorMessage()}"))

        d.addCallbacks(located, failed)

    def _check_key(self, fingerprint: str) -> None:
        """PinMismatch unless the tracker showed the key we expect.

        With a configured address: the key pinned for it (trust on first use).  Found
        through the ring: the key the ring's record names.  With ``[ring] resource_managers``
        configured, only those members may write the record (the ring checks each record's
        signature and writer), so its key is trusted and may change when another of them
        becomes the active RM.  Without, any member may write it: the record then says where
        the RM is, never whom to trust, and the key must be the one pinned at the first
        registration through the ring.
        """
        if self.locate_tracker is None:
            self.known_rms.check(self._where(), fingerprint)
            return
        if fingerprint != self._expected_fingerprint:
            raise PinMismatch(
                f"the tracker at {self._where()} showed key {fingerprint}, but the ring's ResourceManager "
                f"record names {self._expected_fingerprint}; not reporting to it"
            )
        if not self._vouched:
            self.known_rms.check(RING_RESOURCE_MANAGER_PIN, fingerprint)

    def _connect_to_tracker(self) -> None:
        self._epoch += 1
        epoch = self._epoch
        assert self.rm_address is not None  # configured, or located before this
        d = TrackerClient.connect(
            self.reactor, self.rm_address.host, self.rm_address.port, self.tls, self.rpc_timeout_s
        )
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
            if isinstance(failure.value, NodeRefused):
                log.error("the ResourceManager refused {call}: {message}", call=call, message=failure.getErrorMessage())
                self._run(self.updater.refused(f"{call} refused: {failure.getErrorMessage()}"))
            elif isinstance(failure.value, TrackerUnavailable):
                self._run(self.updater.failed(failure.getErrorMessage()))
            else:
                log.failure("{call} failed unexpectedly", failure, call=call)
                self._run(self.updater.failed(f"{call}: {failure.getErrorMessage()}"))

        d.addCallbacks(answered, failed)

    def _registered(self, answer: RegistrationAnswer) -> list[Action]:
        client = self.client
        if client is not None and not self._vouched:
            pin_as = self._where() if self.locate_tracker is None else RING_RESOURCE_MANAGER_PIN
            try:
                self.known_rms.pin(pin_as, client.peer_fingerprint)  # trust on first use
            except OSError:
                log.failure("cannot store the pin of the ResourceManager at {address}", address=self._where())
        log.info(
            "registered with the ResourceManager at {address} as {node_id}; heartbeat every {interval_ms} ms",
            address=self._where(),
            node_id=str(self.updater.registration.node_id),
            interval_ms=answer.heartbeat_interval_ms,
        )
        if self.on_registered is not None:
            self.on_registered(answer)  # e.g. the container-token master key for the NodeManager
        return self.updater.registered_with(answer)
