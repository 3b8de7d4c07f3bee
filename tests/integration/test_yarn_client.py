"""Hadoop's own YarnClient against a real local Cortex cluster.

Every call goes through the real Java client classes from the hadoop-client jars
that pyspark ships (``tests/java/YarnClientDriver.java``), over loopback, to
``cortex-rm`` daemons started by ``cortex-rm local-cluster up``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import YarnClientDriver

pytestmark = pytest.mark.integration

APP_NOT_FOUND = "org.apache.hadoop.yarn.exceptions.ApplicationNotFoundException"
# The AM these tests submit: it runs (in an LXC container on a node) but never registers,
# so its application stays ACCEPTED with a LAUNCHED attempt while a test looks at it.
WAITING_AM = ("--am-command", "sleep 600")
YARN_EXCEPTION = "org.apache.hadoop.yarn.exceptions.YarnException"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("cortex"), nodes=2) as c:
        yield c


@pytest.fixture(scope="module")
def yarn(cluster: RunningCluster) -> YarnClientDriver:
    return YarnClientDriver(cluster.conf_dir)


def test_new_application_ids_count_up_under_one_cluster_timestamp(yarn: YarnClientDriver) -> None:
    """createApplication returns ids of this RM with YARN's maximum capability."""
    first = yarn.run("new-app")
    second = yarn.run("new-app")
    assert first["applicationId"].startswith("application_")
    ts1, n1 = first["applicationId"].split("_")[1:]
    ts2, n2 = second["applicationId"].split("_")[1:]
    assert ts1 == ts2 and int(n2) == int(n1) + 1
    assert first["maximumCapability"] == {"memory": 8192, "vcores": 4}


def test_submitted_application_is_accepted_and_reported(yarn: YarnClientDriver) -> None:
    """submitApplication (which polls until past SUBMITTED) leaves the app ACCEPTED; its AM container runs."""
    app_id = yarn.run("submit", "report-me", "default", "--type", "SPARK", "--tags", "Nightly,etl", *WAITING_AM)[
        "applicationId"
    ]
    report = yarn.run("report", app_id)
    assert report["id"] == app_id
    assert report["state"] == "ACCEPTED"
    assert report["finalStatus"] == "UNDEFINED"
    assert report["name"] == "report-me"
    assert report["queue"] == "default"
    assert report["applicationType"] == "SPARK"
    assert report["tags"] == ["etl", "nightly"]
    assert report["user"]
    assert report["currentApplicationAttemptId"] == app_id.replace("application_", "appattempt_") + "_000001"
    deadline = time.monotonic() + 60
    while (attempts := yarn.run("attempts", app_id)["attempts"])[0]["state"] != "LAUNCHED":
        assert time.monotonic() < deadline, attempts
        time.sleep(0.2)
    (am,) = yarn.run("containers", attempts[0]["id"])["containers"]
    assert am["id"] == attempts[0]["amContainerId"]
    assert am["allocatedResource"]["memory"] == 1024
    assert yarn.run("container", am["id"])["assignedNode"] == am["assignedNode"]


def test_unknown_application_raises_application_not_found(yarn: YarnClientDriver) -> None:
    """An id this RM never issued gives the client ApplicationNotFoundException."""
    out = yarn.expect_exception("report", "application_1_9999", exception=APP_NOT_FOUND)
    assert "application_1_9999" in out["message"]
    yarn.expect_exception("kill", "application_1_9999", exception=APP_NOT_FOUND)


def test_list_applications_applies_every_filter(yarn: YarnClientDriver) -> None:
    """getApplications filters by type, state, queue, user, tags and limit on the server."""
    a = yarn.run("submit", "filter-a", "default", "--type", "FILTERTYPE", "--tags", "alpha", *WAITING_AM)[
        "applicationId"
    ]
    b = yarn.run("submit", "filter-b", "default", "--type", "FILTERTYPE", "--tags", "beta", *WAITING_AM)[
        "applicationId"
    ]
    ids = lambda out: [x["id"] for x in out["applications"]]  # noqa: E731
    assert ids(yarn.run("list", "--types", "FILTERTYPE")) == [a, b]
    assert ids(yarn.run("list", "--types", "FILTERTYPE", "--tags", "beta")) == [b]
    assert ids(yarn.run("list", "--types", "FILTERTYPE", "--limit", "1")) == [a]
    assert ids(yarn.run("list", "--types", "FILTERTYPE", "--states", "RUNNING")) == []
    assert ids(yarn.run("list", "--types", "FILTERTYPE", "--queues", "nosuchqueue")) == []
    user = yarn.run("report", a)["user"]
    assert ids(yarn.run("list", "--types", "FILTERTYPE", "--users", user)) == [a, b]
    assert ids(yarn.run("list", "--types", "FILTERTYPE", "--users", "somebody-else")) == []


def test_kill_ends_the_application_killed(yarn: YarnClientDriver) -> None:
    """killApplication loops on is_kill_completed until the app is KILLED."""
    app_id = yarn.run("submit", "kill-me", "default", *WAITING_AM)["applicationId"]
    out = yarn.run("kill", app_id)
    assert out["state"] == "KILLED"
    assert out["finalStatus"] == "KILLED"
    report = yarn.run("report", app_id)
    assert report["finishTime"] >= report["startTime"] > 0
    assert [a["state"] for a in yarn.run("attempts", app_id)["attempts"]] == ["KILLED"]


def test_move_priority_and_fail_attempt(yarn: YarnClientDriver) -> None:
    """Move to an unknown queue is refused; priority is capped; failing attempts ends in FAILED."""
    app_id = yarn.run("submit", "moves", "default", *WAITING_AM)["applicationId"]
    out = yarn.expect_exception("move", app_id, "nosuchqueue", exception=YARN_EXCEPTION)
    assert "nosuchqueue" in out["message"]
    assert yarn.run("move", app_id, "default")["queue"] == "default"
    assert yarn.run("priority", app_id, "5")["priority"] == 0  # max application priority is 0
    attempt1 = yarn.run("report", app_id)["currentApplicationAttemptId"]
    yarn.run("fail-attempt", attempt1)
    report = yarn.run("report", app_id)
    assert report["state"] == "ACCEPTED" and report["currentApplicationAttemptId"].endswith("_000002")
    yarn.run("fail-attempt", report["currentApplicationAttemptId"])
    report = yarn.run("report", app_id)
    assert report["state"] == "FAILED" and report["finalStatus"] == "FAILED"
    assert "failed 2 times" in report["diagnostics"]


def test_submission_to_a_missing_queue_fails_with_a_reason(yarn: YarnClientDriver) -> None:
    """YarnClient.submitApplication sees FAILED and reports the RM's diagnostics."""
    out = yarn.expect_exception("submit", "lost", "no-such-queue", exception=YARN_EXCEPTION)
    assert "no-such-queue" in out["message"]


def test_cluster_metrics_nodes_queues_acls_and_labels(yarn: YarnClientDriver, cluster: RunningCluster) -> None:
    """The cluster-level calls return what YarnClient expects from the RM's view."""
    metrics = yarn.run("metrics")
    assert metrics["numNodeManagers"] == metrics["numActiveNodeManagers"] == len(cluster.nodes)
    assert metrics["numLostNodeManagers"] == 0
    nodes = yarn.run("nodes")["nodes"]
    assert sorted(n["nodeId"] for n in nodes) == sorted(_node_id(cluster, n.name) for n in cluster.nodes)
    assert {n["state"] for n in nodes} == {"RUNNING"}
    assert {(n["capability"]["memory"], n["capability"]["vcores"]) for n in nodes} == {(8192, 8)}
    assert yarn.run("nodes", "--states", "LOST")["nodes"] == []
    queues = yarn.run("queues")
    assert [q["queueName"] for q in queues["rootQueues"]] == ["default"]
    default = yarn.run("queue", "default")
    assert default["queueState"] == "RUNNING"
    assert default["capacity"] == pytest.approx(1.0)
    assert default["schedulerType"] == "CapacityScheduler"
    assert any(a["userAcls"] for a in yarn.run("acls")["queueAcls"])
    # every node is labelled by its class; until the ledger has classed a node it is volatile
    labels = yarn.run("labels")
    assert labels["clusterNodeLabels"] == [
        {"name": "static", "exclusive": False}, {"name": "volatile", "exclusive": False}
    ]
    node_ids = sorted(_node_id(cluster, n.name) for n in cluster.nodes)
    assert labels["nodeToLabels"] == {node_id: ["volatile"] for node_id in node_ids}
    assert labels["labelsToNodes"] == {"volatile": node_ids}
    # the REST API sees the same cluster
    rest = requests.get(f"{cluster.rest}/ws/v1/cluster/metrics", timeout=10).json()["clusterMetrics"]
    assert rest["totalNodes"] == metrics["numNodeManagers"]


def _node_id(cluster: RunningCluster, name: str) -> str:
    """The NodeId (NodeManager address) local-cluster wrote into a node's configuration."""
    from cortex_rm.config import load_config

    return str(load_config(cluster.workdir / name / "cortex.toml").nodemanager.address)


def test_applications_survive_a_restart_of_the_cluster(tmp_path: Path) -> None:
    """Stopping and starting the RM keeps every application, its state, and never reuses an id."""
    workdir = tmp_path / "restart"
    with running_cluster(workdir, nodes=1, drop_data=False) as first:
        yarn = YarnClientDriver(first.conf_dir)
        accepted = yarn.run("submit", "survivor", "default", *WAITING_AM)["applicationId"]
        killed = yarn.run("submit", "killed-before", "default", *WAITING_AM)["applicationId"]
        yarn.run("kill", killed)
    with running_cluster(workdir, nodes=1) as second:
        yarn = YarnClientDriver(second.conf_dir)
        assert yarn.run("report", accepted)["state"] == "ACCEPTED"
        report = yarn.run("report", killed)
        assert report["state"] == "KILLED" and report["finalStatus"] == "KILLED"
        fresh = yarn.run("new-app")["applicationId"]
        assert fresh.split("_")[1] == accepted.split("_")[1]  # same cluster timestamp
        assert int(fresh.split("_")[2]) > int(killed.split("_")[2])  # no id reused
