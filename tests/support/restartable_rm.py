"""An RM that can be started again on the same state store, as the RM role wires it, on a Clock:
the node tracker, the scheduling service (recovered from the store) and ApplicationMasterProtocol's
handlers; with helpers for what NodeManagers list and what AMs call (work-preserving restart tests)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from google.protobuf.message import Message
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cortex_rm.allocator.app_model import Application, SchedulerLimits
from cortex_rm.allocator.cluster_scheduling import ClusterScheduling, SchedulingTimers
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import (
    ContainerReport,
    HeartbeatAnswer,
    NodeAction,
    NodeRegistration,
    NodeStatusReport,
)
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.am_service import ApplicationMasterService
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext
from tests.support.rm_core import result_of

KEY = "fingerprint"
AM_EXPIRY_MS = 60_000


class RM:
    """One RM run over ``store``: tracker, scheduling service and AM service."""

    def __init__(self, store: MemoryStateStore, clock: Clock) -> None:
        self.clock = clock
        self.nodes = NodeTable()
        config = SchedulerConfig(node_locality_delay_ms=0, rack_locality_delay_ms=0, max_am_share=1.0)
        scheduler = CapacityScheduler(QueueTree(), self.nodes, clock, config)
        self.launches: list[RMContainer] = []
        timers = SchedulingTimers(am_expiry_ms=AM_EXPIRY_MS)
        self.scheduling: ClusterScheduling = result_of(
            ClusterScheduling.recover(clock, store, SchedulerLimits(), scheduler, self._launch, timers)
        )
        self.scheduling.start()
        started_ms = int(clock.seconds() * 1000)
        self.tracker = NodeTracker(
            self.nodes, clock, nm_expiry_ms=60_000, rm_identifier=started_ms, listener=self.scheduling,
            removes_completed_containers=True,
        )
        now = lambda: int(clock.seconds() * 1000)  # noqa: E731
        self.handlers = ApplicationMasterService(self.scheduling, MasterKey(1, b"c" * 32), started_ms, now).handlers()
        self.response_ids: dict[NodeId, int] = {}
        self.answers: dict[NodeId, HeartbeatAnswer] = {}  # each node's last answer

    def _launch(self, app: Application, container: RMContainer) -> defer.Deferred[None]:
        self.launches.append(container)
        return defer.succeed(None)

    def register(self, node_id: NodeId, *containers: ContainerReport) -> None:
        """The node registers, listing ``containers`` (its NMContainerStatuses)."""
        registration = NodeRegistration(node_id, f"{node_id.host}:8042", "/default-rack", Resource(8192, 8), 1000)
        self.tracker.register(replace(registration, containers=containers), KEY)
        self.response_ids[node_id] = 0
        self.clock.advance(0)

    def heartbeat(self, node_id: NodeId, *containers: ContainerReport) -> tuple[ContainerId, ...]:
        """A fresh heartbeat; the containers the answer says to kill."""
        status = NodeStatusReport(node_id, self.response_ids[node_id], containers=containers)
        answer = self.tracker.heartbeat(status, KEY)
        assert answer.action is NodeAction.NORMAL
        self.response_ids[node_id] = answer.response_id
        self.answers[node_id] = answer
        self.clock.advance(0)
        return answer.containers_to_cleanup

    def call(self, attempt_id: ApplicationAttemptId, method: str, request: Message) -> Any:
        """An AM call with the attempt's AMRMToken, as the IPC layer makes it; RemoteError as raised."""
        identifier = yst.AMRMTokenIdentifierProto(keyId=1)
        records.attempt_id_to_proto(attempt_id, identifier.appAttemptId)
        context = CallContext(
            "10.0.0.1:50000", "ApplicationMasterProtocolPB", method, 1, b"c" * 16, 0, "alice", None,
            AuthMethod.TOKEN, identifier.SerializeToString(),
        )  # fmt: skip
        result = self.handlers[method](context, request)
        if isinstance(result, defer.Deferred):
            box: list[Any] = []
            result.addBoth(box.append)
            self.clock.advance(0)
            if isinstance(box[0], Failure):
                box[0].raiseException()
            result = box[0]
        return result

    def register_am(self, attempt_id: ApplicationAttemptId) -> None:
        self.call(attempt_id, "registerApplicationMaster", ys.RegisterApplicationMasterRequestProto(host="driver"))

    def allocate(
        self,
        attempt_id: ApplicationAttemptId,
        response_id: int,
        executors: int = 0,
        release: tuple[ContainerId, ...] = (),
    ) -> ys.AllocateResponseProto:
        request = ys.AllocateRequestProto(response_id=response_id, progress=0.1)
        if executors:
            ask = request.ask.add(resource_name="*", num_containers=executors, relax_locality=True)
            ask.priority.priority = 1
            ask.capability.memory, ask.capability.virtual_cores = 2048, 1
        for cid in release:
            records.container_id_to_proto(cid, request.release.add())
        response: ys.AllocateResponseProto = self.call(attempt_id, "allocate", request)
        return response


def running(container: RMContainer) -> ContainerReport:
    """What a NodeManager lists for a container it runs (YARN's NMContainerStatus)."""
    return ContainerReport(
        container.container_id, ContainerState.RUNNING, resource=container.resource, priority=container.priority,
        creation_time_ms=container.creation_time_ms,
    )  # fmt: skip


def completed(container: RMContainer, exit_status: int) -> ContainerReport:
    return ContainerReport(container.container_id, ContainerState.COMPLETE, exit_status, "exited", container.resource)


def container_ids(response: ys.AllocateResponseProto) -> list[ContainerId]:
    return [records.container_id_from_proto(c.id) for c in response.allocated_containers]
