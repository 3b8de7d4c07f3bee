"""The RM REST API (``/ws/v1/cluster/...``) driven through its twisted.web Site without sockets.

Each request is written as raw HTTP into an ``HTTPChannel`` over a ``StringTransport``,
so the whole edge is exercised (body bounds, routing, NOT_DONE_YET, error form); the
RM runs on a ``Clock`` and a memory state store whose writes a test may hold back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from cortex_rm.allocator.app_ids import PENDING_PER_USER
from cortex_rm.fs import tickets
from cortex_rm.yarn_api.nm_viewers import view_ticket
from cortex_rm.allocator.app_model import Application, SchedulerLimits, Submission
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueSpec, QueueTree
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.roles.user_admin import RMUserAdmin
from cortex_rm.yarn_api.delegation_tokens import from_url_string, read_token_writable, to_url_string
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.rest import build_rest_site
from cortex_rm.yarn_api.rest_submit import url_from_string
from cortex_rm.yarn_api.writable import read_token_storage, read_vlong, token_storage, write_vlong
from tests.support.http_site import HttpConnection, HttpResponse

START_S = 1_700_000_000
START_MS = START_S * 1000
NODE = NodeId("127.0.0.1", 45454)
VERSION = "9.8.7"


# ------------------------------------------------------------------ harness


def fired(d: Deferred) -> Any:
    """The result of a Deferred that must already have fired."""
    results: list[Any] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "the Deferred has not fired"
    return results[0]


class HeldStore(MemoryStateStore):
    """A memory store whose application writes can be held back, to see requests wait on them."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.held: list[Deferred] = []

    def save_application(self, document: dict[str, Any], context: bytes) -> Deferred:
        d = super().save_application(document, context)
        if not self.hold:
            return d
        pending: Deferred = Deferred()
        self.held.append(pending)
        return pending

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for d in held:
            d.callback(None)


@dataclass
class Cluster:
    clock: Clock
    store: HeldStore
    rm: RMContext
    site: Any
    auth: UserAuthenticator

    def credential_header(self, user: str) -> dict[str, str]:
        """The REST header carrying a new RM delegation token of ``user``."""
        ident = fired(self.auth.credentials.issue(user))
        [(_, rm_token), _] = self.auth.tokens_for(ident, "127.0.0.1:8032", "127.0.0.1:8088")
        return {REST_TOKEN_HEADER: to_url_string(rm_token)}


VIEW_KEY = MasterKey(5, b"t" * 32)  # what the RM signs nodes' view tickets with


def make_cluster(queues: QueueSpec | None = None, max_body_bytes: int = 1 << 20) -> Cluster:
    """An RM at START_MS with one 8 GiB/8-core node and its REST site."""
    clock = Clock()
    clock.advance(START_S)
    store = HeldStore()
    tree = QueueTree(queues) if queues is not None else QueueTree()
    apps = fired(ApplicationTable.recover(clock, store, tree, SchedulerLimits()))
    nodes = NodeTable()
    nodes.register(NODE, "127.0.0.1:8042", Resource(8192, 8), START_MS)
    rm = RMContext(clock, apps, nodes, START_MS)
    credentials = UserCredentials(MasterKey(3, b"d" * 20), store, StoredState(), lambda: int(clock.seconds() * 1000))
    auth = UserAuthenticator(credentials)
    site = build_rest_site(
        rm, version=VERSION, max_body_bytes=max_body_bytes, auth=auth, access=AppAccess(["admin"]),
        view_tickets=lambda app, user, node: view_ticket(VIEW_KEY, app, user, node, int(clock.seconds() * 1000)),
    )
    cluster = Cluster(clock, store, rm, site, auth)
    site.test_headers = cluster.credential_header("alice")  # every request below is alice's unless it says otherwise
    return cluster


def http(
    site: Any, method: str, path: str, body: bytes | dict | list = b"", headers: dict[str, str] | None = None
) -> HttpResponse:
    """One request on a fresh connection (a dict/list body is sent as JSON); the response must be complete."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    conn = HttpConnection(site)
    conn.send(method, path, body, headers)
    response = conn.response()
    assert response is not None, f"{method} {path} got no complete response"
    return response


def assert_remote_exception(response: HttpResponse, status: int, exception: str, java_package: str) -> str:
    """The response is YARN's error form; returns its message."""
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["RemoteException"]
    assert error["exception"] == exception
    assert error["javaClassName"] == f"{java_package}.{exception}"
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


def assert_not_found(response: HttpResponse) -> str:
    return assert_remote_exception(response, 404, "NotFoundException", "org.apache.hadoop.yarn.webapp")


def assert_bad_request(response: HttpResponse) -> str:
    return assert_remote_exception(response, 400, "BadRequestException", "org.apache.hadoop.yarn.webapp")


def submit(cluster: Cluster, **fields: Any) -> Application:
    """Submit straight to the application table (for listing tests)."""
    user = fields.pop("user", "alice")
    app_id = fired(cluster.rm.apps.new_application(user))
    return fired(cluster.rm.apps.submit(Submission(app_id=app_id, user=user, **fields)))


def local_resource(value: dict[str, Any]) -> dict[str, Any]:
    """A submission change whose AM spec has one local resource with ``value``."""
    return {"am-container-spec": {"local-resources": {"entry": [{"key": "a", "value": value}]}}}


def new_app_id(cluster: Cluster) -> str:
    """An application id from POST /apps/new-application."""
    response = http(cluster.site, "POST", "/ws/v1/cluster/apps/new-application")
    assert response.status == 200
    return response.json()["application-id"]


def distributed_shell_body(app_id: str) -> dict[str, Any]:
    """The submit body of Hadoop's REST documentation (distributed shell), with every section."""
    return {
        "application-id": app_id,
        "application-name": "test",
        "queue": "default",
        "priority": 0,
        "am-container-spec": {
            "local-resources": {
                "entry": [
                    {
                        "key": "AppMaster.jar",
                        "value": {
                            "resource": "hdfs://hdfs-namenode:9000/user/testuser/DistributedShell/demo-app/AppMaster.jar",
                            "type": "FILE",
                            "visibility": "APPLICATION",
                            "size": 43004,
                            "timestamp": 1405452071209,
                        },
                    }
                ]
            },
            "commands": {
                "command": "{{JAVA_HOME}}/bin/java -Xmx10m org.apache.hadoop.yarn.applications.distributedshell."
                "ApplicationMaster --container_memory 10 --container_vcores 1 --num_containers 1 --priority 0 "
                "1><LOG_DIR>/AppMaster.stdout 2><LOG_DIR>/AppMaster.stderr"
            },
            "environment": {
                "entry": [
                    {"key": "DISTRIBUTEDSHELLSCRIPTTIMESTAMP", "value": "1405459400754"},
                    {"key": "CLASSPATH", "value": "{{CLASSPATH}}<CPS>./*<CPS>{{HADOOP_CONF_DIR}}"},
                ]
            },
            "service-data": {"entry": [{"key": "test", "value": "dmFsdWUxMg"}]},
            "credentials": {"tokens": {}, "secrets": {"entry": [{"key": "secret1", "value": "c2VjcmV0MQ"}]}},
            "application-acls": {
                "entry": [
                    {"key": "VIEW_APP", "value": "testuser3, testuser4"},
                    {"key": "MODIFY_APP", "value": "testuser1, testuser2"},
                ]
            },
        },
        "unmanaged-AM": False,
        "max-app-attempts": 2,
        "resource": {"memory": 1024, "vCores": 1},
        "application-type": "YARN",
        "keep-containers-across-application-attempts": False,
        "application-tags": {"tag": ["tag 2", "tag1"]},
        "log-aggregation-context": {
            "log-include-pattern": "file1",
            "log-exclude-pattern": "file2",
            "rolled-log-include-pattern": "file3",
            "rolled-log-exclude-pattern": "file4",
            "log-aggregation-policy-class-name": "org.apache.hadoop.yarn.server.nodemanager.containermanager."
            "logaggregation.AllContainerLogAggregationPolicy",
            "log-aggregation-policy-parameters": "",
        },
        "attempt-failures-validity-interval": 3600000,
        "reservation-id": "reservation_1454114874_1",
        "am-black-listing-requests": {"am-black-listing-enabled": True, "disable-failure-threshold": 0.01},
    }


@pytest.fixture(autouse=True)
def logged_failures() -> Iterator[list[dict[str, Any]]]:
    """Fail any test that logs an unhandled error (a test expecting one empties the list)."""
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)
    assert not failures, [e["log_failure"].getTraceback() for e in failures]


@pytest.fixture
def cluster() -> Cluster:
    """An RM with the default queues (root.default)."""
    return make_cluster()


# ------------------------------------------------------------------ cluster


@pytest.mark.parametrize("path", ["/ws/v1/cluster", "/ws/v1/cluster/", "/ws/v1/cluster/info", "/ws/v1/cluster/info/"])
def test_cluster_info_reports_the_cluster_timestamp_state_and_versions(cluster: Cluster, path: str) -> None:
    """clusterInfo, at both of its URIs, carries the cluster id, start time, STARTED/ACTIVE and our version."""
    response = http(cluster.site, "GET", path)
    assert response.status == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    info = response.json()["clusterInfo"]
    assert info["id"] == START_MS and info["startedOn"] == START_MS
    assert (info["state"], info["haState"]) == ("STARTED", "ACTIVE")
    assert info["resourceManagerVersion"] == VERSION
    assert info["resourceManagerBuildVersion"] == f"Cortex RM {VERSION} (YARN 3.5 API)"
    assert info["hadoopVersion"] == "3.5.0"
    assert info["rmStateStoreName"].endswith("HeldStore")
    for key in ("resourceManagerVersionBuiltOn", "hadoopBuildVersion", "hadoopVersionBuiltOn"):
        assert isinstance(info[key], str)


def test_cluster_metrics_count_applications_nodes_and_memory_with_every_documented_field(cluster: Cluster) -> None:
    """clusterMetrics has all of YARN's documented fields, counting apps by state and nodes by state."""
    cluster.rm.nodes.register(NodeId("10.0.0.2", 45454), "10.0.0.2:8042", Resource(4096, 4), START_MS)
    cluster.rm.nodes.expire(NodeId("10.0.0.2", 45454))
    submit(cluster)
    killed = submit(cluster)
    fired(cluster.rm.apps.kill(killed.app_id))
    metrics = http(cluster.site, "GET", "/ws/v1/cluster/metrics").json()["clusterMetrics"]
    documented = {
        "appsSubmitted", "appsCompleted", "appsPending", "appsRunning", "appsFailed", "appsKilled", "reservedMB",
        "availableMB", "allocatedMB", "totalMB", "reservedVirtualCores", "availableVirtualCores",
        "allocatedVirtualCores", "totalVirtualCores", "containersAllocated", "containersReserved",
        "containersPending", "totalNodes", "activeNodes", "lostNodes", "unhealthyNodes", "decommissionedNodes",
        "rebootedNodes", "decommissioningNodes", "shutdownNodes",
    }  # fmt: skip
    assert documented <= metrics.keys()
    assert all(isinstance(metrics[k], int) and not isinstance(metrics[k], bool) for k in documented)
    assert (metrics["appsSubmitted"], metrics["appsPending"], metrics["appsKilled"], metrics["appsCompleted"]) == (
        2, 1, 1, 0,
    )  # fmt: skip
    assert (metrics["totalMB"], metrics["availableMB"], metrics["allocatedMB"]) == (8192, 8192, 0)
    assert metrics["totalVirtualCores"] == 8
    assert (metrics["totalNodes"], metrics["activeNodes"], metrics["lostNodes"]) == (2, 1, 1)


def test_scheduler_shows_the_capacity_queue_tree_with_parents_leaves_and_usage() -> None:
    """schedulerInfo is a capacityScheduler tree: parents nest queues, leaves carry type and app counts."""
    spec = QueueSpec(
        "root",
        children=(
            QueueSpec("prod", 70, 100, children=(QueueSpec("etl", 60), QueueSpec("adhoc", 40, 50))),
            QueueSpec("default", 30, 50),
        ),
    )
    cluster = make_cluster(spec)
    submit(cluster, queue="etl", user="carol")
    info = http(cluster.site, "GET", "/ws/v1/cluster/scheduler").json()["scheduler"]["schedulerInfo"]
    assert (info["type"], info["queueName"], info["capacity"], info["maxCapacity"]) == (
        "capacityScheduler", "root", 100.0, 100.0,
    )  # fmt: skip
    prod, default = info["queues"]["queue"]
    assert (prod["queueName"], prod["queuePath"], prod["capacity"]) == ("prod", "root.prod", 70.0)
    assert "type" not in prod and prod["numApplications"] == 1 and prod["state"] == "RUNNING"
    etl, adhoc = prod["queues"]["queue"]
    assert etl["type"] == "capacitySchedulerLeafQueueInfo"
    assert etl["absoluteCapacity"] == pytest.approx(42.0)
    assert adhoc["absoluteMaxCapacity"] == pytest.approx(50.0)
    assert (etl["numApplications"], etl["numPendingApplications"], etl["numActiveApplications"]) == (1, 1, 0)
    assert etl["users"]["user"][0]["username"] == "carol"
    assert etl["usedResources"] == "<memory:0, vCores:0>"
    assert adhoc["users"] is None and "queues" not in adhoc
    assert (default["queuePath"], default["maxCapacity"], default["absoluteCapacity"]) == ("root.default", 50.0, 30.0)


# -------------------------------------------------------------------- nodes


def test_nodes_lists_every_node_whatever_its_state_and_filters_by_states(cluster: Cluster) -> None:
    """/nodes shows all nodes (YARN's REST default); ?states= filters, any case; gone nodes lose their web address."""
    lost = NodeId("10.0.0.2", 45454)
    cluster.rm.nodes.register(lost, "10.0.0.2:8042", Resource(4096, 4), START_MS)
    cluster.rm.nodes.expire(lost)
    every = http(cluster.site, "GET", "/ws/v1/cluster/nodes").json()["nodes"]["node"]
    assert [n["id"] for n in every] == ["10.0.0.2:45454", "127.0.0.1:45454"]
    running = http(cluster.site, "GET", "/ws/v1/cluster/nodes?states=running").json()["nodes"]["node"]
    assert len(running) == 1
    node = running[0]
    assert (node["id"], node["nodeHostName"], node["nodeHTTPAddress"], node["state"]) == (
        "127.0.0.1:45454", "127.0.0.1", "127.0.0.1:8042", "RUNNING",
    )  # fmt: skip
    assert (node["rack"], node["availMemoryMB"], node["availableVirtualCores"], node["usedMemoryMB"]) == (
        "/default-rack", 8192, 8, 0,
    )  # fmt: skip
    assert node["lastHealthUpdate"] == START_MS and node["numContainers"] == 0
    lost_only = http(cluster.site, "GET", "/ws/v1/cluster/nodes?states=LOST").json()["nodes"]["node"]
    assert [(n["id"], n["state"], n["nodeHTTPAddress"]) for n in lost_only] == [("10.0.0.2:45454", "LOST", "")]
    both = http(cluster.site, "GET", "/ws/v1/cluster/nodes?states=RUNNING,LOST").json()["nodes"]["node"]
    assert len(both) == 2
    none = http(cluster.site, "GET", "/ws/v1/cluster/nodes?states=DECOMMISSIONED").json()
    assert none == {"nodes": {"node": []}}


def test_nodes_with_an_unknown_state_is_a_bad_request(cluster: Cluster) -> None:
    """A state that is not a NodeState is answered 400 BadRequestException naming it."""
    message = assert_bad_request(http(cluster.site, "GET", "/ws/v1/cluster/nodes?states=RUNNING,SLEEPY"))
    assert "SLEEPY" in message


def test_node_by_id_unknown_and_malformed(cluster: Cluster) -> None:
    """/nodes/{id} gives {"node": ...}; an unknown id is 404 NotFoundException, a malformed one 400."""
    node = http(cluster.site, "GET", "/ws/v1/cluster/nodes/127.0.0.1:45454").json()["node"]
    assert node["id"] == "127.0.0.1:45454" and node["totalResource"]["memory"] == 8192
    assert "10.9.9.9:1" in assert_not_found(http(cluster.site, "GET", "/ws/v1/cluster/nodes/10.9.9.9:1"))
    assert_bad_request(http(cluster.site, "GET", "/ws/v1/cluster/nodes/no-port"))


# ------------------------------------------------------------- applications


def test_apps_with_no_applications_is_an_empty_app_list(cluster: Cluster) -> None:
    """No applications: {"apps": {"app": []}}, readable by code written for YARN's null and {} forms."""
    assert http(cluster.site, "GET", "/ws/v1/cluster/apps").json() == {"apps": {"app": []}}


@pytest.fixture
def three_apps(cluster: Cluster) -> Cluster:
    """a1 ACCEPTED (alice, SPARK, etl) at T; a2 KILLED at T+30 s (bob, MAPREDUCE, adhoc+etl, started T+10 s);
    a3 FAILED at T+20 s (alice, YARN, refused by its queue)."""
    submit(cluster, name="daily", app_type="SPARK", tags=frozenset({"etl"}))
    cluster.clock.advance(10)
    a2 = submit(cluster, user="bob", name="adhoc", app_type="MAPREDUCE", tags=frozenset({"adhoc", "etl"}))
    cluster.clock.advance(10)
    submit(cluster, name="other", queue="nosuch")
    cluster.clock.advance(10)
    fired(cluster.rm.apps.kill(a2.app_id))
    return cluster


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [1, 2, 3]),
        ("?states=accepted", [1]),
        ("?states=KILLED,FAILED", [2, 3]),
        ("?state=FAILED", [3]),
        ("?states=ACCEPTED&state=KILLED", [1, 2]),
        ("?states=KILLED&states=ACCEPTED", [1, 2]),
        ("?finalStatus=KILLED", [2]),
        ("?finalStatus=UNDEFINED", [1]),
        ("?user=alice", [1, 3]),
        ("?queue=default", [1, 2]),
        ("?queue=root.default", [1, 2]),
        ("?limit=2", [1, 2]),
        (f"?startedTimeBegin={START_MS + 5000}", [2, 3]),
        (f"?startedTimeEnd={START_MS + 15000}", [1, 2]),
        (f"?startedTimeBegin={START_MS + 5000}&startedTimeEnd={START_MS + 15000}", [2]),
        (f"?finishedTimeBegin={START_MS + 25000}", [2]),
        ("?finishedTimeBegin=1", [2, 3]),
        (f"?finishedTimeEnd={START_MS + 25000}", [1, 3]),
        ("?applicationTypes=spark", [1]),
        ("?applicationTypes=SPARK,mapreduce", [1, 2]),
        ("?applicationTags=etl", [1, 2]),
        ("?applicationTags=ADHOC", [2]),
        ("?name=adhoc", [2]),
        ("?user=alice&states=ACCEPTED", [1]),
        ("?user.name=bob&limit=", [1, 2, 3]),
    ],
)
def test_apps_filters_select_the_matching_applications(three_apps: Cluster, query: str, expected: list[int]) -> None:
    """Each of YARN's /apps query filters (and their combinations) selects exactly the matching applications
    (asked by the admin, who may see everyone's)."""
    admin = three_apps.credential_header("admin")
    apps = http(three_apps.site, "GET", "/ws/v1/cluster/apps" + query, headers=admin).json()["apps"]["app"]
    assert [ApplicationId.parse(a["id"]).id for a in apps] == expected


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=ten",
        "?states=RUNNING,BOGUS",
        "?state=FINAL_SAVING",
        "?finalStatus=MAYBE",
        "?startedTimeBegin=-1",
        "?startedTimeBegin=soon",
        f"?startedTimeBegin={START_MS}&startedTimeEnd={START_MS - 1}",
        "?finishedTimeBegin=5&finishedTimeEnd=4",
        "?queue=nosuch",
        "?deSelects=everything",
        "?user=%ff",
    ],
)
def test_apps_bad_query_parameters_are_bad_requests(cluster: Cluster, query: str) -> None:
    """Invalid /apps parameters are answered 400 BadRequestException, as RMWebServices validates them."""
    assert_bad_request(http(cluster.site, "GET", "/ws/v1/cluster/apps" + query))


def test_app_shows_yarn_app_fields(cluster: Cluster) -> None:
    """/apps/{id} wraps the app in "app" with YARN's fields; an ACCEPTED app has no tracking URL yet."""
    app = submit(
        cluster, name="word count", app_type="MAPREDUCE", tags=frozenset({"b", "a"}), am_resource=Resource(2048, 2)
    )
    cluster.clock.advance(5)
    info = http(cluster.site, "GET", f"/ws/v1/cluster/apps/{app.app_id}").json()["app"]
    assert info["id"] == str(app.app_id) and info["clusterId"] == START_MS
    assert (info["user"], info["name"], info["queue"], info["applicationType"]) == (
        "alice", "word count", "default", "MAPREDUCE",
    )  # fmt: skip
    assert (info["state"], info["finalStatus"], info["trackingUI"], info["progress"]) == (
        "ACCEPTED", "UNDEFINED", "UNASSIGNED", 0.0,
    )  # fmt: skip
    assert "trackingUrl" not in info and "amContainerLogs" not in info
    assert info["applicationTags"] == "a,b"
    assert (info["startedTime"], info["launchTime"], info["finishedTime"], info["elapsedTime"]) == (
        START_MS, 0, 0, 5000,
    )  # fmt: skip
    assert info["diagnostics"].startswith("Application is added to the scheduler")
    assert info["priority"] == 0 and info["unmanagedApplication"] is False
    assert (info["allocatedMB"], info["runningContainers"], info["memorySeconds"]) == (0, 0, 0)
    assert info["amNodeLabelExpression"] == "" and info["logAggregationStatus"] == "DISABLED"
    assert info["timeouts"]["timeout"][0]["type"] == "LIFETIME"


def test_app_deselects_drop_the_named_fields(cluster: Cluster) -> None:
    """deSelects=timeouts,resourceRequests removes those fields from the app object."""
    app = submit(cluster)
    info = http(cluster.site, "GET", f"/ws/v1/cluster/apps/{app.app_id}?deSelects=timeouts,resourceRequests").json()
    assert "timeouts" not in info["app"] and "resourceRequests" not in info["app"] and "queue" in info["app"]


@pytest.mark.parametrize("suffix", ["", "/appattempts", "/state", "/queue", "/priority"])
def test_unknown_application_is_not_found_and_malformed_id_is_bad_request(cluster: Cluster, suffix: str) -> None:
    """Every /apps/{id} resource answers an unknown id 404 NotFoundException and a malformed one 400."""
    unknown = f"application_{START_MS}_0042"
    message = assert_not_found(http(cluster.site, "GET", f"/ws/v1/cluster/apps/{unknown}{suffix}"))
    assert message == f"app with id: {unknown} not found"
    assert_bad_request(http(cluster.site, "GET", f"/ws/v1/cluster/apps/app_1_2{suffix}"))


def test_kill_of_unknown_application_is_not_found(cluster: Cluster) -> None:
    """PUT /apps/{id}/state on an unknown application is 404 NotFoundException."""
    response = http(cluster.site, "PUT", f"/ws/v1/cluster/apps/application_{START_MS}_0042/state", {"state": "KILLED"})
    assert_not_found(response)


def test_app_attempts_lists_the_current_attempt(cluster: Cluster) -> None:
    """/appattempts lists each attempt with its number, id, start time and state."""
    app = submit(cluster)
    attempts = http(cluster.site, "GET", f"/ws/v1/cluster/apps/{app.app_id}/appattempts").json()
    [attempt] = attempts["appAttempts"]["appAttempt"]
    assert (attempt["id"], attempt["appAttemptId"], attempt["startTime"], attempt["finishedTime"]) == (
        1, f"appattempt_{START_MS}_0001_000001", START_MS, 0,
    )  # fmt: skip
    assert attempt["appAttemptState"] == "SCHEDULED" and attempt["containerId"] == ""


def test_app_state_queue_and_priority_are_readable(cluster: Cluster) -> None:
    """GET /state, /queue and /priority give the application's current values."""
    app = submit(cluster)
    base = f"/ws/v1/cluster/apps/{app.app_id}"
    assert http(cluster.site, "GET", base + "/state").json() == {"state": "ACCEPTED"}
    assert http(cluster.site, "GET", base + "/queue").json() == {"queue": "default"}
    assert http(cluster.site, "GET", base + "/priority").json() == {"priority": 0}


def test_kill_answers_202_with_location_while_killing_then_200_once_killed(cluster: Cluster) -> None:
    """PUT {"state":"KILLED"}: 202 + Location + current state while the kill is stored, then 200 KILLED on repeat."""
    app = submit(cluster)
    path = f"/ws/v1/cluster/apps/{app.app_id}/state"
    cluster.store.hold = True
    conn = HttpConnection(cluster.site)
    conn.send("PUT", path, b'{"state":"KILLED"}', {"Content-Type": "application/json"})
    assert conn.response() is None  # waiting on the state store: NOT_DONE_YET
    assert http(cluster.site, "GET", path).json() == {"state": "ACCEPTED"}  # FINAL_SAVING shows the state before
    repeat = http(cluster.site, "PUT", path, {"state": "KILLED"})
    assert (repeat.status, repeat.json()) == (202, {"state": "ACCEPTED"})
    cluster.store.release()
    first = conn.response()
    assert first is not None and first.status == 202
    assert first.headers["location"] == f"http://rm.test:8088{path}"
    assert first.json() == {"state": "KILLED"}
    done = http(cluster.site, "PUT", path, {"state": "KILLED"})
    assert (done.status, done.json()) == (200, {"state": "KILLED"})
    info = http(cluster.site, "GET", f"/ws/v1/cluster/apps/{app.app_id}").json()["app"]
    assert (info["state"], info["finalStatus"], info["finishedTime"]) == ("KILLED", "KILLED", START_MS)
    assert "killed by user alice" in info["diagnostics"]


def test_put_state_other_than_killed_is_bad_request_and_same_state_is_ok(cluster: Cluster) -> None:
    """Only KILLED may be requested (else 400); asking for the current state changes nothing (200)."""
    app = submit(cluster)
    path = f"/ws/v1/cluster/apps/{app.app_id}/state"
    message = assert_bad_request(http(cluster.site, "PUT", path, {"state": "RUNNING"}))
    assert message == "Only 'KILLED' is allowed as a target state."
    assert_bad_request(http(cluster.site, "PUT", path, {"state": 7}))
    same = http(cluster.site, "PUT", path, {"state": "ACCEPTED"})
    assert (same.status, same.json()) == (200, {"state": "ACCEPTED"})
    assert cluster.rm.apps.get(app.app_id).reported_state.value == "ACCEPTED"


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"state": "KILLED"', "application/json", 400),
        (b"", "application/json", 400),
        (b"[]", "application/json", 400),
        (b'{"status": "KILLED"}', "application/json", 400),
        (b'{"state": NaN}', "application/json", 400),
        (b"\xff\xfe{", "application/json", 400),
        (b"<appstate><state>KILLED</state></appstate>", "application/xml", 415),
    ],
)
def test_put_state_with_a_malformed_body_is_rejected(cluster: Cluster, body: bytes, content_type: str, status: int) -> None:
    """Malformed JSON, a wrong shape or a non-JSON media type are 400/415 in YARN's error form; nothing is killed."""
    app = submit(cluster)
    response = http(cluster.site, "PUT", f"/ws/v1/cluster/apps/{app.app_id}/state", body, {"Content-Type": content_type})
    assert response.status == status
    assert "RemoteException" in response.json()
    assert cluster.rm.apps.get(app.app_id).reported_state.value == "ACCEPTED"


def test_queue_move_and_priority_update() -> None:
    """PUT /queue moves the application to another leaf (unknown queue: 400); PUT /priority is capped by the cluster."""
    cluster = make_cluster(QueueSpec("root", children=(QueueSpec("default", 50), QueueSpec("etl", 50))))
    app = submit(cluster)
    base = f"/ws/v1/cluster/apps/{app.app_id}"
    moved = http(cluster.site, "PUT", base + "/queue", {"queue": "etl"})
    assert (moved.status, moved.json()) == (200, {"queue": "etl"})
    assert cluster.rm.apps.get(app.app_id).queue == "etl"
    assert_bad_request(http(cluster.site, "PUT", base + "/queue", {"queue": "nosuch"}))
    updated = http(cluster.site, "PUT", base + "/priority", {"priority": 5})
    assert (updated.status, updated.json()) == (200, {"priority": 0})  # max-application-priority is 0
    assert_bad_request(http(cluster.site, "PUT", base + "/priority", {"priority": "high"}))


def test_app_statistics_count_applications_per_state(three_apps: Cluster) -> None:
    """/appstatistics counts applications by state (and one type); two types are a bad request."""
    stats = http(three_apps.site, "GET", "/ws/v1/cluster/appstatistics?states=accepted,killed").json()
    assert stats["appStatInfo"]["statItem"] == [
        {"state": "ACCEPTED", "type": "*", "count": 1},
        {"state": "KILLED", "type": "*", "count": 1},
    ]
    spark = http(three_apps.site, "GET", "/ws/v1/cluster/appstatistics?applicationTypes=SPARK").json()
    counts = {i["state"]: i["count"] for i in spark["appStatInfo"]["statItem"]}
    assert counts["ACCEPTED"] == 1 and counts["KILLED"] == 0 and len(counts) == 8
    assert_bad_request(http(three_apps.site, "GET", "/ws/v1/cluster/appstatistics?applicationTypes=a,b"))


# ------------------------------------------------------------------- writes


def test_new_application_hands_out_fresh_ids_and_the_maximum_capability(cluster: Cluster) -> None:
    """POST /apps/new-application gives a new id each time and the largest container."""
    first = http(cluster.site, "POST", "/ws/v1/cluster/apps/new-application").json()
    second = http(cluster.site, "POST", "/ws/v1/cluster/apps/new-application").json()
    assert (first["application-id"], second["application-id"]) == (
        f"application_{START_MS}_0001", f"application_{START_MS}_0002",
    )  # fmt: skip
    capability = first["maximum-resource-capability"]
    assert (capability["memory"], capability["vCores"]) == (8192, 4)


def test_new_application_stops_at_the_users_share_of_unsubmitted_ids(cluster: Cluster) -> None:
    """A client asking for ids in a loop gets YARN's 400 with what to do once it holds
    PENDING_PER_USER unsubmitted ones."""
    for _ in range(PENDING_PER_USER):
        assert http(cluster.site, "POST", "/ws/v1/cluster/apps/new-application").status == 200
    refused = http(cluster.site, "POST", "/ws/v1/cluster/apps/new-application")
    assert "not yet submitted" in assert_bad_request(refused)


def test_submit_stores_the_application_accepted_with_its_launch_context(cluster: Cluster) -> None:
    """POST /apps: 202 + Location, empty body; the app is ACCEPTED for the token's owner (user.name proves
    nothing) with the context built from the body."""
    app_id = new_app_id(cluster)
    response = http(cluster.site, "POST", "/ws/v1/cluster/apps?user.name=testuser", distributed_shell_body(app_id))
    assert response.status == 202 and response.body == b""
    assert response.headers["location"] == f"http://rm.test:8088/ws/v1/cluster/apps/{app_id}"
    app = cluster.rm.apps.get(ApplicationId.parse(app_id))
    assert (app.user, app.name, app.queue, app.app_type, app.reported_state.value) == (
        "alice", "test", "default", "YARN", "ACCEPTED",
    )  # fmt: skip
    assert app.tags == frozenset({"tag 2", "tag1"}) and app.am_resource == Resource(1024, 1) and app.max_attempts == 2
    ctx = yp.ApplicationSubmissionContextProto.FromString(app.context)
    assert (ctx.application_id.cluster_timestamp, ctx.application_id.id) == (START_MS, 1)
    assert (ctx.maxAppAttempts, ctx.priority.priority, ctx.attempt_failures_validity_interval) == (2, 0, 3600000)
    assert (ctx.reservation_id.cluster_timestamp, ctx.reservation_id.id) == (1454114874, 1)
    assert ctx.log_aggregation_context.rolled_logs_exclude_pattern == "file4"
    spec = ctx.am_container_spec
    [jar] = spec.localResources
    assert jar.key == "AppMaster.jar"
    url = jar.value.resource
    assert (url.scheme, url.host, url.port, url.file) == (
        "hdfs", "hdfs-namenode", 9000, "/user/testuser/DistributedShell/demo-app/AppMaster.jar",
    )  # fmt: skip
    assert (jar.value.type, jar.value.visibility, jar.value.size, jar.value.timestamp) == (
        yp.FILE, yp.APPLICATION, 43004, 1405452071209,
    )  # fmt: skip
    assert {e.key: e.value for e in spec.environment}["DISTRIBUTEDSHELLSCRIPTTIMESTAMP"] == "1405459400754"
    assert len(spec.command) == 1 and spec.command[0].startswith("{{JAVA_HOME}}/bin/java")
    assert {e.key: e.value for e in spec.service_data} == {"test": b"value12"}
    assert spec.tokens == b"HDTS\x00\x00\x01\x07secret1\x07secret1"
    assert [(a.accessType, a.acl) for a in spec.application_ACLs] == [
        (yp.APPACCESS_VIEW_APP, "testuser3, testuser4"),
        (yp.APPACCESS_MODIFY_APP, "testuser1, testuser2"),
    ]


def test_submit_waits_for_the_state_store(cluster: Cluster) -> None:
    """The 202 is sent only once the submission is stored; the submitter is the token's owner."""
    app_id = new_app_id(cluster)
    cluster.store.hold = True
    conn = HttpConnection(cluster.site)
    body = json.dumps({"application-id": app_id, "am-container-spec": {"commands": {"command": ["a", "b"]}}})
    conn.send("POST", "/ws/v1/cluster/apps", body.encode(), {"Content-Type": "application/json"})
    assert conn.response() is None
    cluster.store.release()
    response = conn.response()
    assert response is not None and response.status == 202
    app = cluster.rm.apps.get(ApplicationId.parse(app_id))
    assert (app.user, app.name, app.app_type, app.am_resource) == ("alice", "N/A", "YARN", Resource(1024, 1))
    spec = yp.ApplicationSubmissionContextProto.FromString(app.context).am_container_spec
    assert list(spec.command) == ["a", "b"] and spec.tokens == b"HDTS\x00\x00\x00"


def test_submit_carries_hadoop_tokens_and_single_entry_maps(cluster: Cluster) -> None:
    """An encoded Hadoop token is stored in the credentials; a one-entry map may be a bare object, numbers strings."""
    raw_token = write_vlong(3) + b"idn" + write_vlong(2) + b"pw" + write_vlong(4) + b"KIND" + write_vlong(3) + b"svc"
    encoded = base64.urlsafe_b64encode(raw_token).decode().rstrip("=")
    app_id = new_app_id(cluster)
    body = {
        "application-id": app_id,
        "max-app-attempts": "1",
        "unmanaged-AM": "false",
        "am-container-spec": {
            "local-resources": {"entry": {"key": "x", "value": {"resource": "file:///tmp/x.py", "type": "file"}}},
            "credentials": {"tokens": {"entry": {"key": "hdfs", "value": encoded}}},
        },
    }
    assert http(cluster.site, "POST", "/ws/v1/cluster/apps", body).status == 202
    spec = yp.ApplicationSubmissionContextProto.FromString(cluster.rm.apps.get(ApplicationId.parse(app_id)).context)
    resource = spec.am_container_spec.localResources[0].value
    assert (resource.resource.scheme, resource.resource.HasField("host"), resource.resource.port) == ("file", False, -1)
    assert resource.visibility == yp.APPLICATION and spec.maxAppAttempts == 1
    assert spec.am_container_spec.tokens == b"HDTS\x00\x01\x04hdfs" + raw_token + b"\x00"


@pytest.mark.parametrize(
    ("change", "message_part"),
    [
        ({"application-id": None}, "application-id is required"),
        ({"application-id": "app_1_1"}, "Could not parse application id"),
        ({"application-id": f"application_{START_MS}_99999999999999"}, "Could not parse application id"),
        ({"application-id": "application_99999999999999999999999_1"}, "Could not parse application id"),
        ({"application-id": f"application_{START_MS}_0099"}, "was not issued"),
        ({"resource": {"memory": 1 << 20, "vCores": 1}}, "more memory than configured max"),
        ({"resource": {"memory": 1024, "vCores": 64}}, "more cores than configured max"),
        ({"resource": [1024, 1]}, "resource must be a JSON object"),
        ({"max-app-attempts": "two"}, "max-app-attempts must be an integer"),
        ({"max-app-attempts": 2**40}, "out of range"),
        ({"unmanaged-AM": "maybe"}, "unmanaged-AM must be true or false"),
        ({"priority": -1}, "priority -1 is negative"),
        ({"application-tags": {"tag": [f"t{i}" for i in range(11)]}}, "Too many applicationTags"),
        ({"application-name": "\ud800"}, "not valid Unicode"),
        ({"reservation-id": "res_1"}, "reservation-id"),
        (local_resource({"resource": "a.jar"}), "absolute URL"),
        (local_resource({"resource": "hdfs://h:x/a"}), "invalid port"),
        (local_resource({"resource": "hdfs://h/a", "type": "DIR"}), "type 'DIR'"),
        (local_resource({"resource": "hdfs://h/a", "visibility": "WORLD"}), "visibility 'WORLD'"),
        (local_resource({"resource": "hdfs://h/a", "size": "big"}), "size must be an integer"),
        (local_resource({"type": "FILE"}), "resource (the URL to localize) is required"),
        ({"am-container-spec": {"local-resources": {"entry": [{"value": {"resource": "hdfs://h/a"}}]}}}, "has no key"),
        ({"am-container-spec": {"service-data": {"entry": [{"key": "s", "value": "***"}]}}}, "not valid base64"),
        ({"am-container-spec": {"credentials": {"tokens": {"entry": [{"key": "t", "value": "AAAA"}]}}}}, "Hadoop token"),
        ({"am-container-spec": {"application-acls": {"entry": [{"key": "READ_APP", "value": "*"}]}}}, "READ_APP"),
        ({"am-container-spec": "java -jar am.jar"}, "am-container-spec must be a JSON object"),
    ],
)
def test_submit_with_an_invalid_body_is_a_bad_request(cluster: Cluster, change: dict[str, Any], message_part: str) -> None:
    """Each kind of invalid submission is a 400 BadRequestException naming the problem; no application is created."""
    app_id = new_app_id(cluster)
    body = {**distributed_shell_body(app_id), **change}
    message = assert_bad_request(http(cluster.site, "POST", "/ws/v1/cluster/apps", body))
    assert message_part in message
    assert cluster.rm.apps.matching() == []


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b'"application"', b"[" * 100_000 + b"]" * 100_000, b"{}" + b" " * 10 + b"x"]
)
def test_malformed_submissions_are_bad_requests_and_the_server_keeps_serving(cluster: Cluster, body: bytes) -> None:
    """Broken or deeply nested JSON is a 400 (no traceback, no 500), and the next request is served."""
    assert_bad_request(http(cluster.site, "POST", "/ws/v1/cluster/apps", body, {"Content-Type": "application/json"}))
    assert http(cluster.site, "GET", "/ws/v1/cluster/info").status == 200


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_SUBMIT_KEYS = [*distributed_shell_body("x"), "am-container-node-label-expression", "app-node-label-expression"]
_SPEC_KEYS = ["local-resources", "environment", "commands", "service-data", "credentials", "application-acls"]


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(_SUBMIT_KEYS), spec_key=st.sampled_from(_SPEC_KEYS), value=_JSON, nested=st.booleans())
def test_any_json_in_any_submit_field_is_answered_without_a_server_error(
    key: str, spec_key: str, value: Any, nested: bool
) -> None:
    """Whatever JSON replaces a field of a valid submission (top level or in the AM spec), the answer is 202 or 4xx."""
    cluster = make_cluster()
    body = distributed_shell_body(new_app_id(cluster))
    if nested:
        body["am-container-spec"][spec_key] = value
    else:
        body[key] = value
    response = http(cluster.site, "POST", "/ws/v1/cluster/apps", body)
    assert response.status == 202 or 400 <= response.status < 500, response.body


def test_bodies_over_the_limit_are_refused_without_being_kept() -> None:
    """A body over max_body_bytes (declared or chunked) is 413 in YARN's form; one at the limit is served."""
    cluster = make_cluster(max_body_bytes=64)
    app = submit(cluster)
    path = f"/ws/v1/cluster/apps/{app.app_id}/state"
    at_limit = b'{"state": "ACCEPTED"}'.ljust(64)
    assert http(cluster.site, "PUT", path, at_limit, {"Content-Type": "application/json"}).status == 200
    over = http(cluster.site, "PUT", path, b'{"state": "KILLED"}'.ljust(65), {"Content-Type": "application/json"})
    assert_remote_exception(over, 413, "WebApplicationException", "javax.ws.rs")
    conn = HttpConnection(cluster.site)
    conn.send("PUT", path, chunks=[b'{"state": "KILLED"}'.ljust(40), b" " * 40])
    chunked = conn.response()
    assert chunked is not None
    assert "larger than the limit of 64 bytes" in assert_remote_exception(
        chunked, 413, "WebApplicationException", "javax.ws.rs"
    )
    huge = HttpConnection(cluster.site)
    huge.send("POST", "/ws/v1/cluster/apps", b"x" * (4 << 20))
    assert huge.response() is not None and huge.response().status == 413  # type: ignore[union-attr]
    assert cluster.rm.apps.get(app.app_id).reported_state.value == "ACCEPTED"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/ws/v1/cluster/apps", "GET, POST"),
        ("GET", "/ws/v1/cluster/apps/new-application", "POST"),
        ("POST", "/ws/v1/cluster/info", "GET"),
        ("PUT", "/ws/v1/cluster/metrics", "GET"),
        ("POST", f"/ws/v1/cluster/apps/application_{START_MS}_0001", "GET"),
        ("DELETE", f"/ws/v1/cluster/apps/application_{START_MS}_0001/state", "GET, PUT"),
    ],
)
def test_wrong_method_is_405_with_allow(cluster: Cluster, method: str, path: str, allowed: str) -> None:
    """A known resource with an unsupported method is 405 with an Allow header, in YARN's error form."""
    response = http(cluster.site, method, path)
    assert_remote_exception(response, 405, "WebApplicationException", "javax.ws.rs")
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize("path", ["/ws/v1/cluster/nope", "/ws/v2/cluster/info", "/ws", "/jmx", "/ws/v1/cluster/apps/x/y/z"])
def test_unknown_paths_are_not_found(cluster: Cluster, path: str) -> None:
    """Paths that name no resource are 404 NotFoundException, JSON."""
    assert_not_found(http(cluster.site, "GET", path))


@pytest.mark.parametrize(("method", "status"), [("PUT", 405), ("DELETE", 405), ("BREW", 501)])
def test_other_methods_on_the_overview_page_are_json_not_twisted_html(cluster: Cluster, method: str, status: int) -> None:
    """``PUT /`` (and methods HTTP does not define) are refused in YARN's JSON form, not twisted.web's HTML "Huh?"."""
    response = http(cluster.site, method, "/")
    assert_remote_exception(response, status, "WebApplicationException", "javax.ws.rs")
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/cluster", "/cluster/"])
def test_cluster_page_answers_200_html_for_the_active_rm_probe(cluster: Cluster, path: str) -> None:
    """/cluster answers 200 with an HTML page (yarn-api-client's active-RM probe); / redirects there, as YARN's."""
    root = http(cluster.site, "GET", "/")
    assert root.status == 302 and root.headers["location"] == "/cluster"
    response = http(cluster.site, "GET", path)
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert b"Cortex ResourceManager" in response.body and str(START_MS).encode() in response.body


def test_head_is_answered_like_get_without_a_body(cluster: Cluster) -> None:
    """HEAD of a JSON resource has GET's status and headers and no body."""
    conn = HttpConnection(cluster.site)
    conn.send("HEAD", "/ws/v1/cluster/info")
    response = conn.response()
    assert response is not None and response.status == 200 and response.body == b""
    assert int(response.headers["content-length"]) > 0


def test_an_internal_error_is_a_logged_500_and_the_server_keeps_serving(
    cluster: Cluster, logged_failures: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in an operation is a 500 in YARN's form naming the exception (and logged); other requests go on."""

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cluster.rm, "metrics", broken)
    response = http(cluster.site, "GET", "/ws/v1/cluster/metrics")
    message = assert_remote_exception(response, 500, "YarnRuntimeException", "org.apache.hadoop.yarn.exceptions")
    assert "RuntimeError: boom" in message
    assert len(logged_failures) == 1
    logged_failures.clear()
    assert http(cluster.site, "GET", "/ws/v1/cluster/info").status == 200


def test_a_client_gone_before_the_answer_is_not_answered(cluster: Cluster) -> None:
    """If the connection closes while the store works, the kill still completes and nothing fails."""
    app = submit(cluster)
    cluster.store.hold = True
    conn = HttpConnection(cluster.site)
    conn.send("PUT", f"/ws/v1/cluster/apps/{app.app_id}/state", b'{"state":"KILLED"}')
    conn.channel.connectionLost(Failure(ConnectionDone()))
    cluster.store.release()
    assert conn.response() is None
    assert cluster.rm.apps.get(app.app_id).reported_state.value == "KILLED"


# ------------------------------------------------------- wire encodings


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "file", "user_info"),
    [
        ("hdfs://nn:8020/user/a/app.jar", "hdfs", "nn", 8020, "/user/a/app.jar", None),
        ("hdfs://NN.Example.com/a", "hdfs", "NN.Example.com", -1, "/a", None),
        ("file:///tmp/x.py", "file", None, -1, "/tmp/x.py", None),
        ("file:/tmp/x.py", "file", None, -1, "/tmp/x.py", None),
        ("s3a://bucket/dir/with%20space.zip#alias", "s3a", "bucket", -1, "/dir/with space.zip", None),
        ("http://bob:secret@[::1]:9000/f?x=1", "http", "[::1]", 9000, "/f", "bob:secret"),
    ],
)
def test_url_from_string_is_what_hadoop_url_from_uri_makes(
    text: str, scheme: str, host: str | None, port: int, file: str, user_info: str | None
) -> None:
    """Local-resource URLs become URLProto like URL.fromURI: host kept as written, port -1 if absent, path decoded."""
    url = url_from_string(text, "r")
    assert (url.scheme, url.port, url.file) == (scheme, port, file)
    assert (url.host if url.HasField("host") else None) == host
    assert (url.userInfo if url.HasField("userInfo") else None) == user_info


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (127, b"\x7f"), (-112, b"\x90"), (128, b"\x8f\x80"), (300, b"\x8e\x01\x2c"), (-113, b"\x87\x70")],
)
def test_write_vlong_matches_hadoop_writable_utils(value: int, encoded: bytes) -> None:
    """WritableUtils.writeVLong's encoding, checked on known values around its boundaries."""
    assert write_vlong(value) == encoded


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_vlong_round_trips(value: int) -> None:
    """read_vlong undoes write_vlong for every 64-bit value and consumes exactly its bytes."""
    data = write_vlong(value)
    assert read_vlong(data + b"tail", 0) == (value, len(data))


def test_token_storage_is_hadoops_writable_credentials_format() -> None:
    """Credentials are written as HDTS, version 0, then counted (alias, token) and (alias, length, secret) records."""
    assert token_storage({"t": b"TOKEN"}, {"s": b"\x01\x02"}) == b"HDTS\x00\x01\x01tTOKEN\x01\x01s\x02\x01\x02"


# ------------------------------------------------------------------ who may do what


def test_without_a_credential_only_the_cluster_info_and_metrics_answer(cluster: Cluster) -> None:
    """An anonymous caller (no token; a user.name proves nothing) gets 401 telling what to do,
    for reads and writes alike, and changes nothing."""
    app = submit(cluster)
    anonymous = {REST_TOKEN_HEADER: ""}
    assert http(cluster.site, "GET", "/ws/v1/cluster/info", headers=anonymous).status == 200
    assert http(cluster.site, "GET", "/ws/v1/cluster/metrics", headers=anonymous).status == 200
    for method, path, body in [
        ("GET", "/ws/v1/cluster/apps?user.name=alice", b""),
        ("GET", f"/ws/v1/cluster/apps/{app.app_id}", b""),
        ("GET", "/ws/v1/cluster/nodes", b""),
        ("POST", "/ws/v1/cluster/apps/new-application", b""),
        ("PUT", f"/ws/v1/cluster/apps/{app.app_id}/state?user.name=alice", {"state": "KILLED"}),
    ]:
        conn = HttpConnection(cluster.site)
        conn.default_headers = {}
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.send(method, path, payload, {"Content-Type": "application/json"})
        response = conn.response()
        assert response is not None
        message = assert_remote_exception(response, 401, "AuthorizationException", "org.apache.hadoop.security.authorize")
        assert "Hadoop-YARN-RM-Delegation-Token" in message and "cortex-rm user add" in message
    assert cluster.rm.apps.get(app.app_id).reported_state.value == "ACCEPTED"


def test_a_forged_or_revoked_token_is_401_with_the_reason(cluster: Cluster) -> None:
    header = cluster.credential_header("bob")
    real = from_url_string(header[REST_TOKEN_HEADER])
    real.password = bytes(20)
    forged = {REST_TOKEN_HEADER: to_url_string(real)}
    message = assert_remote_exception(
        http(cluster.site, "GET", "/ws/v1/cluster/apps", headers=forged), 401, "AuthorizationException",
        "org.apache.hadoop.security.authorize",
    )
    assert "Hadoop-YARN-RM-Delegation-Token" in message and "wrong password" in message
    assert http(cluster.site, "GET", "/ws/v1/cluster/apps", headers=header).status == 200
    fired(cluster.auth.credentials.revoke_user("bob"))
    message = assert_remote_exception(
        http(cluster.site, "GET", "/ws/v1/cluster/apps", headers=header), 401, "AuthorizationException",
        "org.apache.hadoop.security.authorize",
    )
    assert "can't be found in cache" in message


def test_another_user_can_neither_see_nor_kill_an_application_and_the_admin_can(cluster: Cluster) -> None:
    """alice's application: 403 ForbiddenException to bob on read and kill, absent from his list;
    the admin reads and kills it."""
    app = submit(cluster)
    bob, admin = cluster.credential_header("bob"), cluster.credential_header("admin")
    path = f"/ws/v1/cluster/apps/{app.app_id}"
    for method, sub, body in [("GET", "", b""), ("GET", "/state", b""), ("PUT", "/state", {"state": "KILLED"})]:
        message = assert_remote_exception(
            http(cluster.site, method, path + sub, body, headers=bob), 403, "ForbiddenException", "org.apache.hadoop.yarn.webapp"
        )
        assert f"User bob cannot perform operation" in message
    assert http(cluster.site, "GET", "/ws/v1/cluster/apps", headers=bob).json()["apps"] in (None, {"app": []})
    assert http(cluster.site, "GET", path, headers=admin).json()["app"]["user"] == "alice"
    assert http(cluster.site, "PUT", path + "/state", {"state": "KILLED"}, headers=admin).status in (200, 202)


def test_only_an_admin_issues_and_revokes_credentials_and_an_issued_one_works(cluster: Cluster) -> None:
    """PUT /ws/v1/cluster/cortex/users/carol by the admin returns carol's token file, whose RM token
    then works; DELETE revokes it at once; alice (not an admin) and anonymous callers may do neither."""
    admin_site = build_rest_site(
        cluster.rm, version=VERSION, auth=cluster.auth, access=AppAccess(["admin"]),
        admin=RMUserAdmin(cluster.auth, "127.0.0.1:8032", "127.0.0.1:8088"),
    )
    admin_site.test_headers = cluster.site.test_headers  # alice's, unless a request says otherwise
    users = "/ws/v1/cluster/cortex/users/carol"
    admin = cluster.credential_header("admin")
    for method in ("PUT", "DELETE"):
        assert_remote_exception(http(admin_site, method, users), 403, "ForbiddenException", "org.apache.hadoop.yarn.webapp")
        assert http(admin_site, method, users, headers={REST_TOKEN_HEADER: ""}).status == 401
    issued = http(admin_site, "PUT", users, headers=admin).json()
    assert issued["user"] == "carol"
    tokens, _ = read_token_storage(base64.b64decode(issued["tokenFile"]))
    carol = {REST_TOKEN_HEADER: to_url_string(next(
        t for t in map(read_token_writable, tokens.values()) if t.kind == "RM_DELEGATION_TOKEN"
    ))}
    assert http(admin_site, "GET", "/ws/v1/cluster/apps", headers=carol).status == 200
    listed = http(admin_site, "GET", "/ws/v1/cluster/cortex/users", headers=admin).json()["users"]["user"]
    assert "carol" in [u["name"] for u in listed]
    assert http(admin_site, "DELETE", users, headers=admin).json() == {"user": "carol", "revokedTokens": 1}
    assert http(admin_site, "GET", "/ws/v1/cluster/apps", headers=carol).status == 401
    bad = http(admin_site, "PUT", "/ws/v1/cluster/cortex/users/super%20group", headers=admin)
    assert_bad_request(bad)


def test_a_user_renews_and_cancels_her_own_token_as_rmwebservices_does(cluster: Cluster) -> None:
    """POST /delegation-token/expiration renews the header's token ({"expiration-time"}); DELETE
    /delegation-token cancels it, after which it is a 401; GET on them is 405."""
    credentials = cluster.auth.credentials
    cluster.clock.advance(60)
    renewed = http(cluster.site, "POST", "/ws/v1/cluster/delegation-token/expiration")
    assert renewed.status == 200
    assert renewed.json() == {"expiration-time": int(cluster.clock.seconds() * 1000) + credentials.renew_interval_ms}
    assert http(cluster.site, "GET", "/ws/v1/cluster/delegation-token/expiration").status == 405
    assert http(cluster.site, "DELETE", "/ws/v1/cluster/delegation-token").status == 200
    assert_remote_exception(
        http(cluster.site, "GET", "/ws/v1/cluster/apps"), 401, "AuthorizationException", "org.apache.hadoop.security.authorize"
    )
    anonymous = http(cluster.site, "DELETE", "/ws/v1/cluster/delegation-token", headers={REST_TOKEN_HEADER: ""})
    assert anonymous.status == 401


def test_a_view_ticket_is_signed_for_who_may_view_the_application_and_one_node(cluster: Cluster) -> None:
    """POST /cortex/apps/{app}/view-ticket?node=: alice gets a ticket her node checks (the app, her
    name, that node); bob may not view her application (403); an unknown node is a 400."""
    app = submit(cluster)
    path = f"/ws/v1/cluster/cortex/apps/{app.app_id}/view-ticket"
    reply = http(cluster.site, "POST", f"{path}?node={NODE}").json()
    checked = tickets.verify({VIEW_KEY.key_id: VIEW_KEY}, reply["ticket"], "VIEWLOGS", START_MS)
    assert (checked.text("app"), checked.text("user"), checked.text("node")) == (str(app.app_id), "alice", str(NODE))
    assert reply["node"] == str(NODE) and reply["expires-ms"] == checked.expires_ms
    bob = cluster.credential_header("bob")
    assert_remote_exception(http(cluster.site, "POST", f"{path}?node={NODE}", headers=bob), 403, "ForbiddenException", "org.apache.hadoop.yarn.webapp")
    assert_bad_request(http(cluster.site, "POST", f"{path}?node=10.9.9.9:1"))
    assert_bad_request(http(cluster.site, "POST", path))
