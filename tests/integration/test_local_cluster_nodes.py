"""``cortex-rm local-cluster up --nodes 3``: every node reports to the RM, and a killed one is LOST.

Real daemons on loopback, started as a user starts them; what the RM knows is read
through its REST API (``/ws/v1/cluster/nodes`` and ``/ws/v1/cluster/metrics``),
as any YARN tool reads it.  The daemons keep the defaults for reporting
(heartbeat 1 s, expiry 10 s), so losing a node takes up to about 13 s.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from cortex_rm.config import load_config
from tests.support.cluster import RunningCluster, running_cluster

pytestmark = pytest.mark.integration

NODES = 3
DEFAULT_MEMORY_MB, DEFAULT_VCORES = 8192, 8  # [nodemanager] defaults; local-cluster does not change them


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("cortex-nodes"), nodes=NODES) as c:
        yield c


def get(cluster: RunningCluster, path: str) -> Any:
    headers = {"Accept": "application/json", **cluster.rest_headers()}
    response = requests.get(f"{cluster.rest}/ws/v1/cluster/{path}", headers=headers, timeout=5)
    response.raise_for_status()
    return response.json()


def nodes_by_id(cluster: RunningCluster) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in get(cluster, "nodes")["nodes"]["node"]}


def node_id(cluster: RunningCluster, index: int) -> str:
    """The NodeId the daemon reports under: its configured [nodemanager] address."""
    return str(load_config(cluster.nodes[index].config).nodemanager.address)


def wait_until(condition: Callable[[], bool], what: str, cluster: RunningCluster, timeout: float) -> None:
    """Poll ``condition`` every 0.2 s; fail after ``timeout`` s with the RM's log tail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting until {what}; RM log tail:\n{cluster.daemon_log()[-3000:]}"
            )
        time.sleep(0.2)


def test_every_node_registers_and_is_running_with_its_capacity(cluster: RunningCluster) -> None:
    """All three daemons appear in /nodes as RUNNING with the configured capacity; metrics add them up."""
    ids = [node_id(cluster, i) for i in range(NODES)]
    wait_until(
        lambda: all(nodes_by_id(cluster).get(i, {}).get("state") == "RUNNING" for i in ids),
        "all three nodes are RUNNING",
        cluster,
        timeout=30,
    )
    nodes = nodes_by_id(cluster)
    for i in ids:
        assert nodes[i]["availMemoryMB"] == DEFAULT_MEMORY_MB
        assert nodes[i]["availableVirtualCores"] == DEFAULT_VCORES
        assert nodes[i]["rack"] == "/default-rack"
    for index, i in enumerate(ids):  # the web address each node registered is its NM web endpoint
        assert nodes[i]["nodeHTTPAddress"] == cluster.nodes[index].nm_webapp
    metrics = get(cluster, "metrics")["clusterMetrics"]
    assert metrics["activeNodes"] == NODES
    assert metrics["totalMB"] == NODES * DEFAULT_MEMORY_MB
    assert metrics["totalVirtualCores"] == NODES * DEFAULT_VCORES


def test_killed_node_becomes_lost_and_the_others_stay_running(cluster: RunningCluster) -> None:
    """SIGKILL node3's daemon: within the expiry (10 s) plus a check the RM reports it LOST."""
    ids = [node_id(cluster, i) for i in range(NODES)]
    wait_until(
        lambda: all(nodes_by_id(cluster).get(i, {}).get("state") == "RUNNING" for i in ids),
        "all three nodes are RUNNING",
        cluster,
        timeout=30,
    )
    os.kill(cluster.nodes[2].pid, signal.SIGKILL)
    wait_until(lambda: nodes_by_id(cluster)[ids[2]]["state"] == "LOST", "node3 is LOST", cluster, timeout=40)
    nodes = nodes_by_id(cluster)
    assert [nodes[i]["state"] for i in ids[:2]] == ["RUNNING", "RUNNING"]
    metrics = get(cluster, "metrics")["clusterMetrics"]
    assert (metrics["activeNodes"], metrics["lostNodes"]) == (NODES - 1, 1)
    assert metrics["totalMB"] == (NODES - 1) * DEFAULT_MEMORY_MB
    assert "LOST" in cluster.daemon_log()


def test_only_the_rm_node_may_write_the_rm_record_and_no_node_warns(cluster: RunningCluster) -> None:
    """``up`` made the RM node's key before any daemon started and named its ring id in every node's
    ``[ring] resource_managers``: that is the id the RM node runs its ring member under (its
    /ws/v1/ring), and no node logs the first-writer warning."""
    rm_view = requests.get(f"http://{cluster.nodes[0].nm_webapp}/ws/v1/ring", timeout=5).json()["ring"]
    for index, node in enumerate(cluster.nodes):
        assert load_config(node.config).ring.resource_managers == (rm_view["node"]["id"],)
        assert "resource_managers is not set" not in cluster.daemon_log(f"node{index + 1}")
