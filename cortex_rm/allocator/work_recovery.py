"""Work-preserving RM restart: what a restarted (or newly active) RM does with the work
an earlier RM left running, as YARN's ``yarn.resourcemanager.work-preserving-recovery``.

The application table goes on with each live application's attempt (``app_table``:
attempt LAUNCHED, application ACCEPTED until the AM registers again).  The AM finds
out through ``ApplicationMasterNotRegisteredException`` (``yarn_api/am_service.py``),
registers again and re-sends its asks; meanwhile the nodes, answered RESYNC, register
again and list their containers (YARN's NMContainerStatuses).  ``WorkRecovery``
decides about those lists, once per node (its first registration with this RM):

* a running container of an attempt that goes on is counted back in (node usage,
  queue, attempt), RUNNING, so the AM's later releases and its completion work; the
  AM's own container becomes the attempt's AM container again;
* a container of that attempt that ended meanwhile goes into the AM's completed
  list (not one an earlier RM had killed: it ended it, and told the AM then); the
  AM's own container ended: the attempt is over (its exit decides);
* a running container of an unknown, ended or earlier attempt is killed; the node
  cleans up an ended application;
* a node that comes back without the AM container of an attempt it ran: that AM is
  gone with the node's containers (ABORTED, which does not count against the
  application).

A later registration of the same node (lost and back, or out of step) recovers
nothing: whatever it lists that the scheduler does not hold was ended by this RM
and is killed.  A node that registers again while the scheduler still holds containers
on it (its NodeManager restarted with recovery: YARN's reconnect with running
applications, ``node_back``) keeps those it lists; those it does not list end ABORTED;
one that lists nothing (no recovery) loses them all, as a node added again does.
An attempt whose AM container's node never registers again is, at
AM expiry, lost with its node (not counted either); see ``lost_status``.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from cortex_rm.allocator.app_model import Application, Attempt
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.errors import AllocatorError
from cortex_rm.allocator.node_cleanup import NodeCleanup
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import ContainerReport
from cortex_rm.yarn.resources import Resource

log = Logger()

_KILLED_BY_RM = ContainerExitStatus.KILLED_BY_RESOURCEMANAGER
NOT_LISTED = "Container released: its node registered again without it"
AM_LOST_WITH_NODE = (
    "The AM container was lost: its node registered again without it after the ResourceManager restarted."
)


@dataclass(frozen=True)
class EndedAM:
    """The AM container of ``attempt_id`` turned out to have ended while no RM watched."""

    attempt_id: ApplicationAttemptId
    exit_status: int
    diagnostics: str


class WorkRecovery:
    """The restarted RM's decisions about recovered attempts and nodes' container lists."""

    def __init__(self, table: ApplicationTable, scheduler: CapacityScheduler, cleanup: NodeCleanup) -> None:
        self.table = table
        self.scheduler = scheduler
        self.cleanup = cleanup
        # recovered attempts whose AM container has not been reported yet -> its node ("": unmanaged AM)
        self._awaiting_am: dict[ApplicationAttemptId, str] = {}
        self._registered: set[NodeId] = set()  # nodes that registered with this RM
        self._report_next: dict[NodeId, bool] = {}  # nodes whose registration's list comes next -> first time?
        self._reconnecting: set[NodeId] = set()  # nodes back with containers held here

    def attempt_recovered(self, app: Application, attempt: Attempt) -> None:
        """``attempt`` goes on: into the scheduler (without an AM request), waiting for its AM's node."""
        self.scheduler.add_attempt(attempt.attempt_id, app.queue, app.user, app.priority, recovered=True)
        self._awaiting_am[attempt.attempt_id] = "" if app.unmanaged_am else attempt.am_node

    def attempt_ended(self, attempt_id: ApplicationAttemptId) -> None:
        """``attempt_id`` is over: nothing of it is awaited any more."""
        self._awaiting_am.pop(attempt_id, None)

    def lost_status(self, attempt_id: ApplicationAttemptId) -> int | None:
        """ABORTED when the AM of a recovered attempt ran on a node that never registered with this RM:
        at AM expiry it is lost with its node, which does not count against the application; else None."""
        node = self._awaiting_am.get(attempt_id)
        if node and not any(str(n) == node for n in self._registered):
            return ContainerExitStatus.ABORTED
        return None

    def node_registered(self, node_id: NodeId) -> None:
        """``node_id`` registered; the list of containers that comes next is its registration's."""
        self._report_next[node_id] = node_id not in self._registered
        self._registered.add(node_id)

    def node_back(self, node_id: NodeId, capability: Resource) -> list[RMContainer]:
        """``node_id`` registered: into the scheduler; the containers that ended with that (those the
        scheduler had on it when it is added again).  A node the scheduler holds containers on, with the
        same capability, keeps them until its registration's list says which it still has (see the
        module docstring)."""
        node = self.scheduler.nodes.by_id.get(node_id)
        if node is not None and node.capability == capability and self.scheduler.node_containers(node_id):
            self._reconnecting.add(node_id)
            return []
        return self.scheduler.node_added(node_id, capability)

    def awaits_report(self, node_id: NodeId) -> bool:
        """Whether ``node_id``'s next list of containers is its registration's."""
        return node_id in self._report_next

    def registration_report(
        self, node_id: NodeId, reports: tuple[ContainerReport, ...]
    ) -> tuple[tuple[ContainerReport, ...], list[EndedAM]]:
        """What a node listed as it registered (see the module docstring): the reports of containers the
        scheduler holds (the caller treats them as a heartbeat's: with those of a node back with containers
        held here, ABORTED, that it did not list), and the AMs found ended."""
        first = self._report_next.pop(node_id, False)
        held: list[ContainerReport] = self._not_listed(node_id, reports)
        ended: list[EndedAM] = []
        recovered = 0
        for report in reports:
            cid = report.container_id
            holding = self.scheduler.container(cid)
            if holding is not None:
                if holding.node_id == node_id:  # (another node's container is not this node's to report)
                    held.append(report)
                continue
            attempt = self._going_on(cid) if first else None
            if attempt is not None and cid == attempt.am_container_id and attempt.am_node not in ("", str(node_id)):
                continue  # the AM container runs elsewhere: a node that lists it is confused or lying
            if attempt is None:
                self._orphan(node_id, report)
            elif report.state is ContainerState.COMPLETE and cid == attempt.am_container_id:
                self._awaiting_am.pop(cid.attempt_id, None)
                ended.append(EndedAM(cid.attempt_id, report.exit_status, report.diagnostics))
            elif report.state is ContainerState.COMPLETE and report.exit_status == _KILLED_BY_RM:
                pass  # an earlier RM killed it, having ended it itself: its AM heard of it then (or needs not)
            elif report.state is ContainerState.COMPLETE:
                self.scheduler.recover_completed(
                    cid.attempt_id, cid, node_id, report.resource or Resource(), report.exit_status, report.diagnostics
                )
            elif self._recover(node_id, report, attempt):
                recovered += 1
            else:
                self.cleanup.kill(node_id, cid)
        if first:
            ended.extend(self._ams_lost_on(node_id))
        if recovered or ended:
            log.info(
                "node {node_id}: {n} containers recovered, {ended} AM containers found ended",
                node_id=str(node_id), n=recovered, ended=len(ended),
            )  # fmt: skip
        return tuple(held), ended

    def _not_listed(self, node_id: NodeId, reports: tuple[ContainerReport, ...]) -> list[ContainerReport]:
        """For a node back with containers held here (``node_back``): those it does not list, as ended
        ABORTED (a NodeManager without recovery lists none: all of them)."""
        if node_id not in self._reconnecting:
            return []
        self._reconnecting.discard(node_id)
        listed = {r.container_id for r in reports}
        gone = [
            ContainerReport(c.container_id, ContainerState.COMPLETE, ContainerExitStatus.ABORTED, NOT_LISTED)
            for c in self.scheduler.node_containers(node_id)
            if c.container_id not in listed
        ]
        log.info("node {node_id} registered again: {n} containers it ran not listed", node_id=str(node_id), n=len(gone))
        return gone

    def _going_on(self, cid: ContainerId) -> Attempt | None:
        """The live current attempt ``cid`` belongs to, if the scheduler holds it."""
        if not self.scheduler.has_attempt(cid.attempt_id):
            return None
        try:
            app, attempt = self.table.get_attempt(cid.attempt_id)
        except AllocatorError:
            return None
        return attempt if attempt is app.current_attempt and not attempt.state.is_terminal else None

    def _recover(self, node_id: NodeId, report: ContainerReport, attempt: Attempt) -> bool:
        cid, resource = report.container_id, report.resource
        if resource is None:
            return False  # a node that does not say what the container holds: it cannot be counted in
        is_am = cid == attempt.am_container_id
        container = self.scheduler.recover_container(
            cid.attempt_id, cid, node_id, resource, report.priority, is_am, report.creation_time_ms
        )
        if container is None:
            return False
        self.cleanup.ran_on(cid.attempt_id.app_id, node_id)
        if is_am:
            self._awaiting_am.pop(cid.attempt_id, None)
        return True

    def _orphan(self, node_id: NodeId, report: ContainerReport) -> None:
        """A container nobody here goes on with: killed if it runs; its ended application cleaned up."""
        if report.state is not ContainerState.COMPLETE:
            self.cleanup.kill(node_id, report.container_id)
        app_id = report.container_id.attempt_id.app_id
        try:
            ended = self.table.get(app_id).state.is_terminal
        except AllocatorError:
            return
        if ended:
            self.cleanup.clean_app_on(node_id, app_id)

    def _ams_lost_on(self, node_id: NodeId) -> list[EndedAM]:
        """Recovered attempts whose AM ran on ``node_id``, which registered without it."""
        lost = [a for a, node in self._awaiting_am.items() if node == str(node_id)]
        for attempt_id in lost:
            del self._awaiting_am[attempt_id]
        return [EndedAM(a, ContainerExitStatus.ABORTED, AM_LOST_WITH_NODE) for a in lost]

