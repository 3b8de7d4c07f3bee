"""The RM's scheduling service: where applications, the scheduler, nodes and AMs meet.

``ClusterScheduling`` binds the decision cores together, as YARN's RM wires its
event handlers:

* the application table's attempts enter and leave the capacity scheduler
  (``AppListener``); an AM that can never fit fails its application at once;
* node reports (``NodeTrackerListener``): registrations add nodes, LOST nodes take
  their containers with them (exit status -100, so Spark re-requests executors), and
  container statuses move containers to RUNNING and COMPLETE; the end of an AM
  container is the end of its attempt;
* node classes: ``set_static_nodes`` labels every node static or volatile
  (``node_class_labels``); AM containers go where ``am_placement`` says, away from
  the nodes where the application's earlier AMs failed;
* ApplicationMasterProtocol (``AMScheduling``): register, allocate, unregister;
* allocation passes run when something changed (coalesced) and on a timer; an AM
  container is launched on its node through ``launch_am`` as soon as it is placed;
* AMs that stop heartbeating expire; containers to kill, applications to clean
  up and completed containers a node may forget (once the AM has them, or if no AM
  will get them) ride the nodes' next heartbeat answers (``node_cleanup``);
* after a restart (``recover``): a new epoch for container ids, the live attempts go
  on and the nodes' registrations bring their containers back (``work_recovery``).

Only ``launch_am`` does I/O, and it is injected; time comes from the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.allocator.am_lifecycle import AMLifecycle
from cortex_rm.allocator.am_placement import am_blacklist
from cortex_rm.allocator.app_ids import load_stored_state
from cortex_rm.allocator.app_model import Application, Attempt, SchedulerLimits
from cortex_rm.allocator.app_states import AppEvent, AppState, AttemptEvent, AttemptState, FinalStatus
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.asks import ResourceAsk
from cortex_rm.allocator.containers import RMContainer, gone_status
from cortex_rm.allocator.errors import AllocatorError, InvalidSubmission
from cortex_rm.allocator.node_class_labels import NodeClassLabels
from cortex_rm.allocator.node_cleanup import NodeCleanup, NodeOrders
from cortex_rm.allocator.node_labels import labelled_asks
from cortex_rm.allocator.nodes import NodeRecord, NodeState
from cortex_rm.allocator.rm_context import AppUsage
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.scheduler_diagnostics import explain_waiting_ams
from cortex_rm.allocator.state_store import RMStateStore, StoredState
from cortex_rm.allocator.work_recovery import EndedAM, WorkRecovery
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import ContainerReport
from cortex_rm.yarn.resources import Resource

log = Logger()

# Fires when the node accepted the AM container.  What it fires with (the launcher's reply)
# is not used here, and Deferred is invariant, so any result type is accepted.
LaunchAM = Callable[[Application, RMContainer], "defer.Deferred[Any]"]


@dataclass(frozen=True)
class AllocationResult:
    """What one allocate call hands back to the AM."""

    allocated: list[RMContainer]
    completed: list[RMContainer]
    headroom: Resource
    num_cluster_nodes: int


@dataclass(frozen=True)
class SchedulingTimers:
    """How often the service looks again, in milliseconds."""

    schedule_interval_ms: int = 250  # allocation passes when nothing triggered one
    am_expiry_ms: int = 600_000  # yarn.am.liveness-monitor.expiry-interval-ms
    launch_expiry_check_ms: int = 10_000  # how often unlaunched containers are checked


class ClusterScheduling:
    """See the module docstring."""

    def __init__(
        self,
        clock: IReactorTime,
        stored: StoredState,
        store: RMStateStore,
        limits: SchedulerLimits,
        scheduler: CapacityScheduler,
        launch_am: LaunchAM,
        timers: SchedulingTimers = SchedulingTimers(),
    ) -> None:
        self.clock = clock
        # The application table is ours: we are the listener it tells of every attempt.
        self.table = ApplicationTable.from_stored(clock, store, scheduler.queues.tree, limits, stored, listener=self)
        self.scheduler = scheduler
        self.labels = NodeClassLabels(scheduler)
        self.am = AMLifecycle(self.table)
        self.launch_am = launch_am
        self.timers = timers
        self.maximum_allocation = scheduler.config.maximum_allocation
        self._heard_ms: dict[ApplicationAttemptId, int] = {}  # AM liveness: last sign of life
        self.cleanup = NodeCleanup()
        self.recovery = WorkRecovery(self.table, scheduler, self.cleanup)
        self._pass_pending: IDelayedCall | None = None
        self._loops: list[LoopingCall] = []

    @classmethod
    def recover(
        cls,
        clock: IReactorTime,
        store: RMStateStore,
        limits: SchedulerLimits,
        scheduler: CapacityScheduler,
        launch_am: LaunchAM,
        timers: SchedulingTimers = SchedulingTimers(),
        stored: StoredState | None = None,
    ) -> defer.Deferred[ClusterScheduling]:
        """The scheduling service over the stored applications, work-preserving as YARN's RM
        restart: this start takes the stored epoch (and stores the next) for its container ids,
        and live applications go on with their attempts (``work_recovery``).
        ``stored``: what ``load_stored_state`` read, when the caller has read it already."""

        async def build(stored: StoredState) -> ClusterScheduling:
            await store.save_epoch(stored.epoch + 1)
            epoch = scheduler.start_epoch(stored.epoch)
            scheduling = cls(clock, stored, store, limits, scheduler, launch_am, timers)
            await scheduling.table.resume(stored)
            log.info("scheduling recovered: epoch {epoch}", epoch=epoch)
            return scheduling

        if stored is not None:
            return defer.ensureDeferred(build(stored))
        return load_stored_state(clock, store).addCallback(lambda s: defer.ensureDeferred(build(s)))

    # -- start/stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timers (allocation passes, AM expiry, unlaunched containers)."""
        for interval_ms, work in (
            (self.timers.schedule_interval_ms, self.schedule_now),
            (max(1, self.timers.am_expiry_ms // 3), self.expire_silent_ams),
            (self.timers.launch_expiry_check_ms, self._expire_unlaunched),
        ):
            loop = LoopingCall(work)
            loop.clock = self.clock
            loop.start(interval_ms / 1000, now=False).addErrback(
                lambda f: log.failure("scheduling timer failed", f)
            )
            self._loops.append(loop)

    def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        if self._pass_pending is not None and self._pass_pending.active():
            self._pass_pending.cancel()

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- the application table's events (AppListener) ------------------------------------

    def attempt_started(self, app: Application, attempt: Attempt) -> None:
        am_resource = None if app.unmanaged_am else app.am_resource
        if am_resource is not None:
            reason = self.scheduler.can_ever_fit(am_resource)
            if reason is not None:
                # after the table finished accepting it (this runs inside that step)
                self.clock.callLater(0, self._reject, app.app_id, f"The AM container can never run: {reason}")
                return
        blacklist = am_blacklist((a.am_node, a.exit_status) for a in app.attempts if a is not attempt)
        self.scheduler.add_attempt(
            attempt.attempt_id, app.queue, app.user, app.priority, am_resource, am_label=app.am_label,
            am_blacklist=blacklist if self.scheduler.config.am_blacklisting else frozenset(),
        )
        self.schedule_soon()

    def attempt_recovered(self, app: Application, attempt: Attempt) -> None:
        try:
            self.recovery.attempt_recovered(app, attempt)
        except InvalidSubmission as e:  # its queue is gone
            self.clock.callLater(0, self._reject, app.app_id, f"The recovered application cannot go on: {e}")
            return
        self._heard_ms[attempt.attempt_id] = self.now_ms()  # its AM has the AM expiry to register again

    def attempt_ended(self, app: Application, attempt: Attempt) -> None:
        attempt_id = attempt.attempt_id
        self._heard_ms.pop(attempt_id, None)
        self.recovery.attempt_ended(attempt_id)
        self.cleanup.attempt_ended(attempt_id)  # its last allocate's completions, and the unpulled ones:
        if self.scheduler.has_attempt(attempt_id):
            for ended in self.scheduler.pull_completed(attempt_id):  # no AM will get them
                self.cleanup.remove(ended.node_id, ended.container_id)
            exit_status = (
                ContainerExitStatus.KILLED_BY_RESOURCEMANAGER
                if app.state is AppState.KILLING or attempt.state is AttemptState.KILLED
                else ContainerExitStatus.ABORTED
            )
            for container in self.scheduler.remove_attempt(attempt_id, exit_status):
                self._kill_on_node(container)
                if container.is_am and app.state is AppState.KILLING:
                    # the AM container is being killed on its node: the kill is complete
                    # (after the table has finished this step)
                    self.clock.callLater(0, self._container_ended, container)
        self.schedule_soon()

    def app_finished(self, app: Application) -> None:
        self.cleanup.app_finished(app.app_id)

    def _reject(self, app_id: ApplicationId, reason: str) -> None:
        app = self.table.get(app_id)
        if app.state is not AppState.ACCEPTED:
            return
        attempt = app.current_attempt
        if attempt is not None and not attempt.state.is_terminal:
            self.table.attempt_event(attempt, AttemptEvent.KILL)
        self.table.transition(app, AppEvent.APP_REJECTED)
        self.table.final_save(app, AppState.FAILED, FinalStatus.FAILED, reason)

    # -- node reports (NodeTrackerListener) ------------------------------------------------

    def set_static_nodes(self, ring_ids: frozenset[int]) -> list[NodeRecord]:
        """The ledger's verdict: the ring members in ``ring_ids`` are static, every other one
        volatile.  Every node is relabelled (node reports, label calls, REST, and where the
        scheduler places AMs and labelled asks); nodes that register later get their label
        from this set.  Returns the nodes whose label changed.  Sans-IO; call it whenever
        the classes may have changed (a call with an unchanged set changes nothing)."""
        changed = self.labels.set_static(ring_ids)
        if changed:
            self.schedule_soon()
        return changed

    def node_registered(self, node: NodeRecord) -> None:
        self.labels.label(node)
        self.recovery.node_registered(node.node_id)  # its registration's containers come next
        self.cleanup.node_back(node.node_id)
        for container in self.recovery.node_back(node.node_id, node.capability):  # (kept: work_recovery.py)
            self._container_ended(container)
        self.schedule_soon()

    def node_lost(self, node: NodeRecord) -> None:
        self.cleanup.node_lost(node.node_id)  # (LOST, or DECOMMISSIONED: see gone_status)
        for container in self.scheduler.node_removed(node.node_id, *gone_status(node.state)):
            self._container_ended(container)
        self.schedule_soon()

    def node_health_changed(self, node: NodeRecord) -> None:
        """As YARN: an UNHEALTHY node leaves the scheduler (what ran there ends ABORTED, so Spark
        asks again elsewhere without counting a failure, and the node is told to kill it); a node
        healthy again comes back empty."""
        if node.state is NodeState.UNHEALTHY:
            gone = self.scheduler.node_removed(
                node.node_id, diagnostics=f"Container released on an unhealthy node: {node.health_report}"
            )
            for container in gone:  # the node still runs them: it must stop them (YARN's KillTransition)
                self._kill_on_node(container)
        elif node.state is NodeState.RUNNING:
            gone = self.scheduler.node_added(node.node_id, node.capability)
        else:
            return
        for container in gone:
            self._container_ended(container)
        self.schedule_soon()

    def containers_reported(self, node: NodeRecord, containers: tuple[ContainerReport, ...]) -> None:
        changed = False
        completed = [r.container_id for r in containers if r.state is ContainerState.COMPLETE]
        if self.recovery.awaits_report(node.node_id):  # the registration's (NMContainerStatuses)
            containers, ended = self.recovery.registration_report(node.node_id, containers)
            for am in ended:
                self._am_ended(am)
            changed = True  # recovered containers changed the node's room
        for report in containers:
            if (holding := self.scheduler.container(report.container_id)) and holding.node_id != node.node_id:
                continue  # another node's container: not this node's to report (confused or lying)
            if report.state is ContainerState.RUNNING:
                self.scheduler.container_launched(report.container_id)
            elif report.state is ContainerState.COMPLETE:
                container = self.scheduler.container_finished(report.container_id, report.exit_status, report.diagnostics)
                if container is not None:
                    self._container_ended(container)
                    changed = True
        self.cleanup.completed_reported(node.node_id, completed, self.scheduler.completions_pending)
        if changed:
            self.schedule_soon()

    def cleanup_for(self, node: NodeRecord) -> NodeOrders:
        return self.cleanup.take(node.node_id)

    def may_aggregate(self, app_id: ApplicationId, node_id: NodeId) -> bool:
        """Whether ``node_id`` may aggregate ``app_id``'s logs (``NodeCleanup.may_aggregate``)."""
        return self.cleanup.may_aggregate(app_id, node_id)

    def _kill_on_node(self, container: RMContainer) -> None:
        self.cleanup.kill(container.node_id, container.container_id)

    def _am_ended(self, am: EndedAM) -> None:
        """A recovered attempt's AM container ended while no RM watched (or its node lost it)."""
        self._heard_ms.pop(am.attempt_id, None)
        d = self.am.am_container_finished(am.attempt_id, am.exit_status, am.diagnostics)
        d.addErrback(lambda f: log.failure("AM container end of {attempt}", f, attempt=str(am.attempt_id)))

    def _container_ended(self, container: RMContainer) -> None:
        """A container is over; if it ran an AM, so is its attempt."""
        if container.is_am:
            self._heard_ms.pop(container.attempt_id, None)
            d = self.am.am_container_finished(container.attempt_id, container.exit_status, container.diagnostics)
            d.addErrback(lambda f: log.failure("AM container end of {attempt}", f, attempt=str(container.attempt_id)))

    # -- allocation passes -------------------------------------------------------------------

    def schedule_soon(self) -> None:
        """Run one pass as soon as the current event is done (several requests, one pass)."""
        if self._pass_pending is None or not self._pass_pending.active():
            self._pass_pending = self.clock.callLater(0, self.schedule_now)

    def schedule_now(self) -> list[RMContainer]:
        """One allocation pass; AM containers placed by it are launched."""
        allocated = self.scheduler.schedule(self.now_ms())
        for container in allocated:
            self.cleanup.ran_on(container.attempt_id.app_id, container.node_id)
            if container.is_am:
                self._start_am(container)
        explain_waiting_ams(self.table, self.scheduler)
        return allocated

    def _start_am(self, container: RMContainer) -> None:
        attempt_id = container.attempt_id
        self.scheduler.pull_allocated(attempt_id)  # the AM container: ACQUIRED by the launcher
        app, _ = self.table.get_attempt(attempt_id)
        node = self.node_http_address(container.node_id)
        saved = self.am.am_container_allocated(attempt_id, container.container_id, str(container.node_id), node)
        saved.addCallback(lambda _: self.launch_am(app, container))
        saved.addCallbacks(
            lambda _: self._am_launched(attempt_id),
            lambda failure: self._am_launch_failed(container, failure),
        )
        saved.addErrback(lambda f: log.failure("launching the AM of {attempt}", f, attempt=str(attempt_id)))

    def _am_launched(self, attempt_id: ApplicationAttemptId) -> None:
        app, attempt = self.table.get_attempt(attempt_id)
        if attempt is not app.current_attempt or attempt.state is not AttemptState.ALLOCATED:
            return
        self.am.am_container_launched(attempt_id)
        self._heard_ms[attempt_id] = self.now_ms()

    def _am_launch_failed(self, container: RMContainer, failure: Failure) -> None:
        log.warn(
            "AM container {container} could not be launched: {why}",
            container=str(container.container_id),
            why=failure.getErrorMessage(),
        )
        ended = self.scheduler.container_finished(
            container.container_id, ContainerExitStatus.INVALID, f"Launch failed: {failure.getErrorMessage()}"
        )
        if ended is not None:
            self._container_ended(ended)

    def _expire_unlaunched(self) -> None:
        for container in self.scheduler.expire_unlaunched(self.now_ms()):
            self._kill_on_node(container)
            self._container_ended(container)

    def usage_of(self, app: Application) -> AppUsage:
        """The live containers of the application's current attempt (for reports)."""
        attempt = app.current_attempt
        live = [] if attempt is None else self.containers_of(attempt.attempt_id)
        return AppUsage(len(live), sum((c.resource for c in live), Resource()))

    def containers_of(self, attempt_id: ApplicationAttemptId) -> list[RMContainer]:
        """The live containers of an attempt (for getContainers); none once it has ended."""
        if not self.scheduler.has_attempt(attempt_id):
            return []
        return [c for c in self.scheduler.attempt_containers(attempt_id) if c.is_live]

    # -- ApplicationMasterProtocol (AMScheduling) -------------------------------------------

    def application_info(self, attempt_id: ApplicationAttemptId) -> tuple[str, str, bytes]:
        app, _ = self.table.get_attempt(attempt_id)
        return app.queue, app.user, app.context

    def node_http_address(self, node_id: NodeId) -> str:
        return self.scheduler.node_table.get(node_id).http_address

    def is_registered(self, attempt_id: ApplicationAttemptId) -> bool:
        try:
            app, attempt = self.table.get_attempt(attempt_id)
        except AllocatorError:
            return False
        return attempt is app.current_attempt and attempt.state in (AttemptState.RUNNING, AttemptState.FINISHING)

    def register(self, attempt_id: ApplicationAttemptId, host: str, rpc_port: int, tracking_url: str) -> defer.Deferred[None]:
        self._heard_ms[attempt_id] = self.now_ms()
        return self.am.registered(attempt_id, host, rpc_port, tracking_url)

    def allocate(
        self,
        attempt_id: ApplicationAttemptId,
        asks: list[ResourceAsk],
        releases: list[ContainerId],
        blacklist_add: list[str],
        blacklist_remove: list[str],
        progress: float,
    ) -> AllocationResult:
        self._heard_ms[attempt_id] = self.now_ms()
        app, _ = self.table.get_attempt(attempt_id)
        asks = labelled_asks(asks, app.label_expression, app.queue)
        app.progress = max(0.0, min(1.0, progress))
        for container in self.scheduler.update_requests(attempt_id, asks, releases, blacklist_add, blacklist_remove):
            self._kill_on_node(container)
        if asks:
            self.schedule_now()
        completed = self.scheduler.pull_completed(attempt_id)  # forgotten by their nodes once the AM calls again
        self.cleanup.handed_to_am(attempt_id, [(c.node_id, c.container_id) for c in completed])
        return AllocationResult(
            allocated=self.scheduler.pull_allocated(attempt_id),
            completed=completed,
            headroom=self.scheduler.headroom(attempt_id),
            num_cluster_nodes=sum(1 for n in self.scheduler.node_table if n.state is NodeState.RUNNING),
        )

    def unregister(
        self, attempt_id: ApplicationAttemptId, final_status: FinalStatus, diagnostics: str, tracking_url: str
    ) -> defer.Deferred[bool]:
        self._heard_ms[attempt_id] = self.now_ms()
        return self.am.unregistered(attempt_id, final_status, diagnostics, tracking_url)

    def expire_silent_ams(self) -> None:
        """AMs silent for longer than the expiry fail their attempts (and lose their containers)."""
        now = self.now_ms()
        for attempt_id, heard in list(self._heard_ms.items()):
            if now - heard > self.timers.am_expiry_ms:
                del self._heard_ms[attempt_id]
                log.warn("AM of {attempt} silent for {ms} ms: expiring it", attempt=str(attempt_id), ms=now - heard)
                d = self.am.expired(attempt_id, self.timers.am_expiry_ms, self.recovery.lost_status(attempt_id))
                d.addErrback(_log_expiry_failure, attempt_id)  # (not a closure: the loop moves on)


def _log_expiry_failure(failure: Failure, attempt_id: ApplicationAttemptId) -> None:
    log.failure("expiring {attempt}", failure, attempt=str(attempt_id))
