"""Fuzzing ApplicationMasterProtocol: an AM's register, allocate and finish calls with random requests.

The RM's real scheduling service on a Clock (two nodes, an application whose AM
container runs), called as the IPC layer calls it, with the attempt's AMRMToken
identifier (or random bytes) and sequences of random requests (asks of any size and
locality, releases of any container id, blacklists, progress, text that is not UTF-8):

* each call answers a complete response message (at once or from a fired Deferred) or
  raises ``RemoteError`` (an ERROR reply), never another exception;
* whatever the calls stored can still be shown: the REST API lists the application
  as JSON, and the state store keeps it.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cortex_rm.allocator.app_model import SchedulerLimits
from cortex_rm.allocator.cluster_scheduling import ClusterScheduling, SchedulingTimers
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import ContainerReport
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api import records, rest_app_json
from cortex_rm.yarn_api.am_service import ApplicationMasterService
from cortex_rm.yarn_api.errors import RemoteError
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext
from tests.fuzz.fuzzing import fuzz_settings
from tests.fuzz.messages import protobuf_messages, with_text_not_utf8
from tests.support.rm_core import result_of, submitted

NODES = (NodeId("10.0.0.1", 45454), NodeId("10.0.0.2", 45454))
REQUESTS: dict[str, type[Message]] = {
    "registerApplicationMaster": ys.RegisterApplicationMasterRequestProto,
    "allocate": ys.AllocateRequestProto,
    "finishApplicationMaster": ys.FinishApplicationMasterRequestProto,
}


class AMCluster:
    """The scheduling service over two 8 GiB nodes and an application whose AM container runs."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.nodes = NodeTable()
        self.store = MemoryStateStore()
        scheduler = CapacityScheduler(
            QueueTree(),
            self.nodes,
            self.clock,
            SchedulerConfig(
                maximum_allocation=SchedulerLimits().maximum_allocation,
                node_locality_delay_ms=0,
                rack_locality_delay_ms=0,
                max_am_share=1.0,
            ),
        )
        self.launches: list[RMContainer] = []
        self.scheduling = result_of(
            ClusterScheduling.recover(
                self.clock,
                self.store,
                SchedulerLimits(),
                scheduler,
                self._launch,
                SchedulingTimers(am_expiry_ms=60_000),
            )
        )
        self.scheduling.start()
        for node_id in NODES:
            self.scheduling.node_registered(self.nodes.register(node_id, f"{node_id.host}:8042", Resource(8192, 8), 0))
        self.app = submitted(self.scheduling.table)
        self.clock.advance(0)
        am = self.launches[-1]
        self.scheduling.containers_reported(
            self.nodes.get(am.node_id), (ContainerReport(am.container_id, ContainerState.RUNNING, 0, ""),)
        )
        attempt = self.app.current_attempt
        assert attempt is not None
        identifier = yst.AMRMTokenIdentifierProto(keyId=1)
        records.attempt_id_to_proto(attempt.attempt_id, identifier.appAttemptId)
        self.identifier = identifier.SerializeToString()
        self.handlers = ApplicationMasterService(
            self.scheduling, MasterKey(1, b"c" * 32), 1, lambda: int(self.clock.seconds() * 1000)
        ).handlers()
        self.rm = RMContext(self.clock, self.scheduling.table, self.nodes, 0)

    def _launch(self, app: Any, container: RMContainer) -> defer.Deferred[None]:
        self.launches.append(container)
        return defer.succeed(None)

    def call(self, method: str, request: Message, identifier: bytes) -> None:
        """One call as the IPC layer makes it; checks the answer (see the module docstring)."""
        context = CallContext(
            "10.0.0.1:50000", "ApplicationMasterProtocolPB", method, 1, b"c" * 16, 0, "alice", None,
            AuthMethod.TOKEN, identifier,
        )  # fmt: skip
        try:
            result: Any = self.handlers[method](context, request)
        except RemoteError:
            return
        if isinstance(result, defer.Deferred):
            box: list[Any] = []
            result.addBoth(box.append)
            self.clock.advance(0)
            assert box, f"{method} did not answer"
            result = box[0]
            if isinstance(result, Failure):
                assert isinstance(result.value, RemoteError), result.getTraceback()
                return
        assert isinstance(result, Message)
        result.SerializeToString()


@st.composite
def am_calls(draw: st.DrawFn) -> tuple[str, Message, bool]:
    method = draw(st.sampled_from(sorted(REQUESTS)))
    requests = protobuf_messages(REQUESTS[method], depth=3, initialized=True)
    return method, draw(requests | with_text_not_utf8(requests)), draw(st.integers(0, 9)) > 0


def _register_not_utf8(field: str) -> ys.RegisterApplicationMasterRequestProto:
    """A registration whose ``field`` (host or tracking URL) is text that is not UTF-8."""
    request = ys.RegisterApplicationMasterRequestProto(host="driver", rpc_port=7077, tracking_url="")
    setattr(request, field, "~~~~")
    raw = request.SerializeToString().replace(b"~~~~", b"\xff\xfe\x80\xc3")
    return ys.RegisterApplicationMasterRequestProto.FromString(raw)


def _labelled_allocate(label: str, not_utf8: bool = False) -> ys.AllocateRequestProto:
    """An allocate call whose "*" ask names ``label`` (its bytes made invalid UTF-8 if ``not_utf8``)."""
    request = ys.AllocateRequestProto(response_id=0)
    ask = request.ask.add(resource_name="*", num_containers=1, node_label_expression=label)
    records.resource_to_proto(Resource(1024, 1), ask.capability)
    if not not_utf8:
        return request
    return ys.AllocateRequestProto.FromString(request.SerializeToString().replace(label.encode(), b"\xff\xfe\x80\xc3"))


@fuzz_settings(60)
@given(calls=st.lists(am_calls(), min_size=1, max_size=4))
@example(
    calls=[
        ("registerApplicationMaster", ys.RegisterApplicationMasterRequestProto(host="d", rpc_port=1), True),
        ("allocate", _labelled_allocate("static"), True),
        ("allocate", _labelled_allocate("~~~~", not_utf8=True), True),
    ]
).via("a labelled ask, then a label that is not UTF-8")
@example(calls=[("registerApplicationMaster", _register_not_utf8("tracking_url"), True)]).via(
    "a tracking URL that is not UTF-8"
)
@example(calls=[("registerApplicationMaster", _register_not_utf8("host"), True)]).via("a host that is not UTF-8")
@example(
    calls=[
        ("registerApplicationMaster", ys.RegisterApplicationMasterRequestProto(host="d", rpc_port=1), True),
        ("finishApplicationMaster", ys.FinishApplicationMasterRequestProto(diagnostics="~~~~"), True),
    ]
).via("a valid registration, then a finish")
def test_am_calls_answer_or_raise_remote_errors(calls: list[tuple[str, Message, bool]]) -> None:
    """Any sequence of AM calls (with the attempt's token, or random bytes as its identifier): responses or
    RemoteError; what they stored still lists as REST JSON."""
    cluster = AMCluster()
    for method, request, genuine in calls:
        cluster.call(method, request, cluster.identifier if genuine else bytes(request.SerializeToString()[:8]))
    json.dumps(rest_app_json.apps_info(cluster.rm.apps.matching(), cluster.rm, frozenset()))
