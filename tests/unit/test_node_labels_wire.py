"""Node labels on the RM's faces: ApplicationClientProtocol, ApplicationMasterProtocol, REST, submissions.

The IPC handlers run over the real scheduling service (``test_node_class_scheduling``'s
ringed cluster, labelled by ``set_static_nodes``); the REST API through its Site
without sockets (``test_rest_api``'s harness).
"""

from __future__ import annotations

import pytest

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.node_labels import STATIC, VOLATILE, InvalidLabelResourceRequest
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.client_service import ApplicationClientService
from cortex_rm.yarn_api.delegation_tokens import rm_identifier_bytes
from cortex_rm.yarn_api.errors import INVALID_LABEL_RESOURCE_REQUEST, RemoteError
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext, Handler
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from tests.fuzz.test_am_service_fuzz import AMCluster
from tests.support.rm_core import result_of
from tests.unit.test_node_class_scheduling import N1, N2, N3, RING, _ringed
from tests.unit.test_rest_api import NODE, Cluster, assert_bad_request, http, make_cluster

IPC_LABEL_EXCEPTION = "org.apache.hadoop.yarn.exceptions.InvalidLabelResourceRequestException"


class LabelledRM:
    """ApplicationClientProtocol over a three-node cluster where N2 is static."""

    def __init__(self) -> None:
        self.cluster = _ringed()
        self.cluster.service.set_static_nodes(frozenset({RING[N2]}))
        clock = self.cluster.clock
        self.credentials = UserCredentials(
            MasterKey(5, b"k" * 20), MemoryStateStore(), StoredState(), lambda: int(clock.seconds() * 1000)
        )
        rm = RMContext(clock, self.cluster.table, self.cluster.nodes, 0)
        service = ApplicationClientService(rm, UserAuthenticator(self.credentials), AppAccess(["admin"]))
        self.handlers: dict[str, Handler] = service.handlers()
        ident = result_of(self.credentials.issue("alice"))
        self.alice = CallContext(
            "127.0.0.1:1", "org.apache.hadoop.yarn.api.ApplicationClientProtocolPB", "x", 0, b"x" * 16, 0, None, None,
            AuthMethod.TOKEN, rm_identifier_bytes(ident),
        )  # fmt: skip

    def invoke(self, method: str, request: object) -> object:
        answer = self.handlers[method](self.alice, request)
        return result_of(answer) if hasattr(answer, "addCallback") else answer


@pytest.fixture
def labelled() -> LabelledRM:
    return LabelledRM()


def test_cluster_node_labels_are_static_and_volatile_both_non_exclusive(labelled: LabelledRM) -> None:
    """getClusterNodeLabels declares both labels, isExclusive=false (requests without a label use any node),
    and names them in deprecatedNodeLabels too, as Hadoop does, for clients that read only that field."""
    answer = labelled.invoke("getClusterNodeLabels", ys.GetClusterNodeLabelsRequestProto())
    assert isinstance(answer, ys.GetClusterNodeLabelsResponseProto)
    assert [(label.name, label.isExclusive) for label in answer.nodeLabels] == [(STATIC, False), (VOLATILE, False)]
    assert list(answer.deprecatedNodeLabels) == [STATIC, VOLATILE]


def test_node_reports_and_label_maps_show_each_nodes_class(labelled: LabelledRM) -> None:
    """getClusterNodes, getNodeToLabels and getLabelsToNodes (all, or filtered) agree with the ledger's set."""
    nodes = labelled.invoke("getClusterNodes", ys.GetClusterNodesRequestProto())
    assert isinstance(nodes, ys.GetClusterNodesResponseProto)
    by_node = {f"{r.nodeId.host}:{r.nodeId.port}": list(r.node_labels) for r in nodes.nodeReports}
    assert by_node == {str(N1): [VOLATILE], str(N2): [STATIC], str(N3): [VOLATILE]}
    to_labels = labelled.invoke("getNodeToLabels", ys.GetNodesToLabelsRequestProto())
    assert isinstance(to_labels, ys.GetNodesToLabelsResponseProto)
    assert {f"{e.nodeId.host}:{e.nodeId.port}": list(e.nodeLabels) for e in to_labels.nodeToLabels} == by_node
    to_nodes = labelled.invoke("getLabelsToNodes", ys.GetLabelsToNodesRequestProto())
    assert isinstance(to_nodes, ys.GetLabelsToNodesResponseProto)
    mapped = {e.nodeLabels: sorted(f"{n.host}:{n.port}" for n in e.nodeId) for e in to_nodes.labelsToNodes}
    assert mapped == {STATIC: [str(N2)], VOLATILE: sorted([str(N1), str(N3)])}
    only = labelled.invoke("getLabelsToNodes", ys.GetLabelsToNodesRequestProto(nodeLabels=[STATIC]))
    assert isinstance(only, ys.GetLabelsToNodesResponseProto)
    assert [e.nodeLabels for e in only.labelsToNodes] == [STATIC]


def test_queues_may_use_every_label(labelled: LabelledRM) -> None:
    """getQueueInfo: accessibleNodeLabels "*", no default label expression."""
    info = labelled.invoke("getQueueInfo", ys.GetQueueInfoRequestProto(queueName="default"))
    assert isinstance(info, ys.GetQueueInfoResponseProto)
    assert list(info.queueInfo.accessibleNodeLabels) == ["*"] and info.queueInfo.defaultNodeLabelExpression == ""


def _context(app_label: str | None = None, am_label: str | None = None) -> yp.ApplicationSubmissionContextProto:
    ctx = yp.ApplicationSubmissionContextProto(queue="default")
    records.app_id_to_proto(ApplicationId(1, 1), ctx.application_id)
    if app_label is not None:
        ctx.node_label_expression = app_label
    if am_label is not None:
        ctx.am_container_resource_request.add(resource_name="*", num_containers=1, node_label_expression=am_label)
        records.resource_to_proto(Resource(1024, 1), ctx.am_container_resource_request[0].capability)
    return ctx


def test_a_submission_carries_its_label_expressions_checked() -> None:
    """The AM's label is its request's (even an explicit ""), else the application's; unknown labels
    and ``&&`` are refused with YARN's InvalidLabelResourceRequestException text."""
    assert records.label_expressions(_context()) == ("", "")
    assert records.label_expressions(_context(app_label=" static ")) == (STATIC, STATIC)
    assert records.label_expressions(_context(app_label=STATIC, am_label=VOLATILE)) == (STATIC, VOLATILE)
    assert records.label_expressions(_context(app_label=STATIC, am_label="")) == (STATIC, "")
    submission = records.submission_from_proto(_context(am_label=STATIC), "alice")
    assert (submission.label_expression, submission.am_label) == ("", STATIC)
    with pytest.raises(InvalidLabelResourceRequest, match=r"^Invalid label resource request, cluster do not contain , label= gpu$"):
        records.submission_from_proto(_context(app_label="gpu"), "alice")
    with pytest.raises(InvalidLabelResourceRequest, match="more than one node label"):
        records.submission_from_proto(_context(am_label="static&&volatile"), "alice")


def test_submitting_an_unknown_label_is_refused_on_the_wire(labelled: LabelledRM) -> None:
    """submitApplication answers InvalidLabelResourceRequestException; nothing is accepted."""
    new = labelled.invoke("getNewApplication", ys.GetNewApplicationRequestProto())
    assert isinstance(new, ys.GetNewApplicationResponseProto)
    request = ys.SubmitApplicationRequestProto()
    request.application_submission_context.application_id.CopyFrom(new.application_id)
    request.application_submission_context.node_label_expression = "gpu"
    with pytest.raises(RemoteError) as refused:
        labelled.invoke("submitApplication", request)
    assert refused.value.java_class == IPC_LABEL_EXCEPTION == INVALID_LABEL_RESOURCE_REQUEST
    assert "label= gpu" in refused.value.message
    assert list(labelled.cluster.table) == []


def test_an_am_allocate_with_a_label_is_placed_and_an_unknown_label_refused() -> None:
    """ApplicationMasterProtocol.allocate: the "*" request's node_label_expression reaches the
    scheduler (containers on volatile nodes only); "gpu" is InvalidLabelResourceRequestException."""
    am = AMCluster()
    am.call("registerApplicationMaster", ys.RegisterApplicationMasterRequestProto(host="d", rpc_port=1), am.identifier)
    for node_id, ring_id in zip(sorted(n.node_id for n in am.nodes), (1, 2)):
        record = am.nodes.get(node_id)
        record.ring_id = ring_id
    am.scheduling.set_static_nodes(frozenset({1}))
    static_node = next(n.node_id for n in am.nodes if n.labels == {STATIC})
    request = ys.AllocateRequestProto(response_id=0)
    ask = request.ask.add(resource_name="*", num_containers=2, node_label_expression=VOLATILE)
    ask.priority.priority = 1
    records.resource_to_proto(Resource(1024, 1), ask.capability)
    context = CallContext(
        "10.0.0.1:5", "ApplicationMasterProtocolPB", "allocate", 1, b"c" * 16, 0, "alice", None, AuthMethod.TOKEN,
        am.identifier,
    )  # fmt: skip
    response = am.handlers["allocate"](context, request)
    assert isinstance(response, ys.AllocateResponseProto)
    placed = {NodeId(c.nodeId.host, c.nodeId.port) for c in response.allocated_containers}
    assert len(response.allocated_containers) == 2 and static_node not in placed
    bad = ys.AllocateRequestProto(response_id=1)
    bad.ask.add(resource_name="*", num_containers=1, node_label_expression="gpu").priority.priority = 2
    with pytest.raises(RemoteError) as refused:
        am.handlers["allocate"](context, bad)
    assert refused.value.java_class == IPC_LABEL_EXCEPTION


# ------------------------------------------------------------------------ REST


@pytest.fixture
def rest() -> Cluster:
    """An RM with one node (NODE) and its REST site; requests carry alice's credential."""
    return make_cluster()


def _label(cluster: Cluster, labels: dict[NodeId, str]) -> None:
    for node_id, label in labels.items():
        if node_id != NODE:
            cluster.rm.nodes.register(node_id, f"{node_id.host}:8042", Resource(4096, 4), 0)
        cluster.rm.nodes.get(node_id).labels = frozenset({label})


def test_rest_label_endpoints_show_the_classes(rest: Cluster) -> None:
    """get-node-labels, get-node-to-labels, label-mappings (all and ?labels=), nodes/{id}/get-labels,
    /nodes' nodeLabels and the queues' nodeLabels, in YARN's DAO shapes."""
    other = NodeId("10.0.0.2", 45454)
    _label(rest, {NODE: STATIC, other: VOLATILE})
    get = lambda path: http(rest.site, "GET", f"/ws/v1/cluster/{path}")  # noqa: E731
    assert get("get-node-labels").json() == {
        "nodeLabelInfo": [{"name": STATIC, "exclusivity": False}, {"name": VOLATILE, "exclusivity": False}]
    }
    assert get("get-node-to-labels").json() == {
        "nodeToLabels": {
            "entry": [
                {"key": "10.0.0.2:45454", "value": {"nodeLabelInfo": [{"name": VOLATILE, "exclusivity": False}]}},
                {"key": "127.0.0.1:45454", "value": {"nodeLabelInfo": [{"name": STATIC, "exclusivity": False}]}},
            ]
        }
    }
    assert get("label-mappings").json() == {
        "labelsToNodes": {
            "entry": [
                {"key": {"name": STATIC, "exclusivity": False}, "value": {"nodes": ["127.0.0.1:45454"]}},
                {"key": {"name": VOLATILE, "exclusivity": False}, "value": {"nodes": ["10.0.0.2:45454"]}},
            ]
        }
    }
    assert [e["key"]["name"] for e in get("label-mappings?labels=volatile").json()["labelsToNodes"]["entry"]] == [VOLATILE]
    assert get("nodes/127.0.0.1:45454/get-labels").json() == {"nodeLabelInfo": [{"name": STATIC, "exclusivity": False}]}
    assert get("nodes/10.9.9.9:1/get-labels").json() == {"nodeLabelInfo": []}  # unknown: no labels, as YARN
    assert_bad_request(get("nodes/a:b:c/get-labels"))
    nodes = get("nodes").json()["nodes"]["node"]
    assert {n["id"]: n["nodeLabels"] for n in nodes} == {"10.0.0.2:45454": [VOLATILE], "127.0.0.1:45454": [STATIC]}
    queues = get("scheduler").json()["scheduler"]["schedulerInfo"]["queues"]["queue"]
    assert [q["nodeLabels"] for q in queues] == [["*"]]  # every queue may use every label


def test_rest_label_endpoints_need_a_credential(rest: Cluster) -> None:
    """Like /nodes, the label endpoints answer 401 to a caller without a credential."""
    for path in ("get-node-labels", "get-node-to-labels", "label-mappings", "nodes/127.0.0.1:45454/get-labels"):
        response = http(rest.site, "GET", f"/ws/v1/cluster/{path}", headers={"Hadoop-YARN-RM-Delegation-Token": ""})
        assert response.status == 401, path
