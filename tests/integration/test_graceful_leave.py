"""A node leaves gracefully on a real local cluster: `cortex-rm node leave` (SIGTERM to its daemon).

Three nodes; node1 (the RM) offers too little memory for any container, so the AM
(a shell that sleeps) runs on node2 or node3.  Its node is asked to leave with a
grace of a few seconds: the RM's REST API shows it DECOMMISSIONING while the AM
runs on, the AM is killed when the grace passes (KILLED_BY_RESOURCEMANAGER, which
does not count against the application, which allows one attempt: a second one
starts on the other node), the blocks it held alone (files written with one replica) are copied to the
other nodes, the node is DECOMMISSIONED, never LOST, and the command prints what it
waited for and exits 0 once the daemon has exited.  Started again, the node is
RUNNING.  A second SIGTERM during a leave stops the daemon at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from cortex_rm import local_cluster
from cortex_rm.processes import alive
from tests.support.ring_daemons import found_within
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.credentials import credential, rest_headers

pytestmark = pytest.mark.integration

T = TypeVar("T")
GRACE_S = 6
SMALL_NODEMANAGER = "[nodemanager]\nmemory_mb = 256  # below the 1 GiB minimum allocation: no container fits\n"
NODES_CONFIG = f"[nodemanager]\ndecommission_grace_s = {GRACE_S}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("graceful-leave"), nodes=3, rm_config=SMALL_NODEMANAGER, node_config=NODES_CONFIG
    ) as c:
        yield c


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 120) -> T:
    return found_within(check, what, timeout_s)


def submit_sleeping_am(cluster: RunningCluster, user: str) -> str:
    rest = f"{cluster.rest}/ws/v1/cluster/apps"
    headers = rest_headers(cluster, user)
    app_id: str = requests.post(f"{rest}/new-application", headers=headers, timeout=30).json()["application-id"]
    submission = {
        "application-id": app_id,
        "application-name": "graceful-leave",
        "max-app-attempts": 1,
        "resource": {"memory": 1024, "vCores": 1},
        "am-container-spec": {"commands": {"command": "exec sleep 600"}},
    }
    reply = requests.post(rest, json=submission, headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    return app_id


def write_single_replica_files(cluster: RunningCluster, user: str, count: int) -> None:
    """``count`` small files with one replica each (WebHDFS, ``user``'s credential), spread over the nodes."""
    delegation = credential(cluster, user).webhdfs_delegation()
    fs = f"{cluster.rest}/webhdfs/v1"
    home = requests.get(f"{fs}/?op=GETHOMEDIRECTORY&delegation={delegation}", timeout=10).json()["Path"]
    for i in range(count):
        create = requests.put(
            f"{fs}{home}/leave-{i}?op=CREATE&replication=1&overwrite=true&delegation={delegation}",
            allow_redirects=False, timeout=30,
        )  # fmt: skip
        assert create.status_code == 307, create.text
        written = requests.put(create.headers["Location"], data=f"file {i}\n".encode() * 1000, timeout=30)
        assert written.status_code == 201, written.text


def replicas_on(node: local_cluster.LocalNode) -> set[str]:
    """The block ids whose data ``node`` keeps on disk."""
    return {p.name for p in Path(node.directory).glob("dfs-data/current/*/blk_*") if not p.name.endswith(".meta")}


def test_a_node_asked_to_leave_is_decommissioning_then_decommissioned_and_its_am_starts_again_elsewhere(
    cluster: RunningCluster,
) -> None:
    headers = rest_headers(cluster, "dora")
    api = f"{cluster.rest}/ws/v1/cluster"
    write_single_replica_files(cluster, "dora", 8)
    app_id = submit_sleeping_am(cluster, "dora")

    def attempts() -> list[dict[str, Any]]:
        return list(requests.get(f"{api}/apps/{app_id}/appattempts", headers=headers, timeout=10).json()["appAttempts"]["appAttempt"])

    def node_states() -> dict[str, str]:
        """State by node id (YARN blanks a DECOMMISSIONED node's web address)."""
        nodes = requests.get(f"{api}/nodes", headers=headers, timeout=10).json()["nodes"]["node"]
        return {n["id"]: n["state"] for n in nodes}

    def node_id_of(webapp: str) -> str:
        nodes = requests.get(f"{api}/nodes", headers=headers, timeout=10).json()["nodes"]["node"]
        return str(next(n["id"] for n in nodes if n["nodeHTTPAddress"] == webapp))

    def app() -> dict[str, Any]:
        return dict(requests.get(f"{api}/apps/{app_id}", headers=headers, timeout=10).json()["app"])

    # (the AM is a plain shell that never registers: its attempt stays LAUNCHED, the application ACCEPTED)
    first = wait_for("the AM launched", lambda: next((a for a in attempts() if a["appAttemptState"] == "LAUNCHED"), None))
    leaving = next(n for n in cluster.nodes if n.nm_webapp == first["nodeHttpAddress"])
    staying = next(n for n in cluster.nodes[1:] if n is not leaving)
    assert leaving.name in ("node2", "node3")
    leaving_id = node_id_of(leaving.nm_webapp)
    held = replicas_on(leaving)
    assert held, "some single-replica block is on the leaving node"

    command = subprocess.Popen(
        [sys.executable, "-m", "cortex_rm", "node", "leave", "--workdir", str(cluster.workdir), "--node", leaving.name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: list[str] = []

    def state_of_leaving() -> str | None:
        state = node_states().get(leaving_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state if state in ("DECOMMISSIONED", "LOST") else None

    try:
        wait_for(f"{leaving.name} DECOMMISSIONING", lambda: state_of_leaving() or "DECOMMISSIONING" in seen, 60)
        assert attempts()[0]["appAttemptState"] == "LAUNCHED", "the AM runs on during the grace"
        final = wait_for(f"{leaving.name} gone", state_of_leaving, 60 + GRACE_S)
        output, _ = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            command.kill()
    assert final == "DECOMMISSIONED", seen
    assert seen == ["RUNNING", "DECOMMISSIONING", "DECOMMISSIONED"] or seen == ["DECOMMISSIONING", "DECOMMISSIONED"], seen
    assert command.returncode == 0, output
    assert "waiting for 1 containers to finish" in output, output
    assert "the daemon has left" in output, output

    # the AM killed by the decommission does not count: a second attempt runs on the other node
    second = wait_for("a second attempt launched", lambda: next((a for a in attempts()[1:] if a["appAttemptState"] == "LAUNCHED"), None))
    assert second["nodeHttpAddress"] == staying.nm_webapp
    assert attempts()[0]["appAttemptState"] == "FAILED"
    assert app()["state"] == "ACCEPTED"
    assert node_states()[leaving_id] == "DECOMMISSIONED"
    assert "DECOMMISSIONED" in cluster.daemon_log("node1")
    # every block it held was copied to a node that stays before it went
    staying_replicas = set().union(*(replicas_on(n) for n in cluster.nodes if n is not leaving))
    assert held <= staying_replicas, sorted(held - staying_replicas)
    assert "not yet copied" not in cluster.daemon_log("node1")

    # a node that comes back is RUNNING again
    cluster.nodes[cluster.nodes.index(leaving)] = local_cluster.restart_node(cluster.workdir, leaving.name, say=lambda _: None)
    wait_for(f"{leaving.name} RUNNING again", lambda: node_states().get(leaving_id) == "RUNNING", 60)
    requests.put(f"{api}/apps/{app_id}/state", json={"state": "KILLED"}, headers=headers, timeout=10)


def test_a_second_sigterm_stops_the_leaving_node_at_once(cluster: RunningCluster) -> None:
    """SIGTERM starts the graceful leave; a second one cuts it short: the container is killed at once (not
    when the grace passes) and the daemon stops as a plain stop does (no DECOMMISSIONED)."""
    headers = rest_headers(cluster, "erin")
    api = f"{cluster.rest}/ws/v1/cluster"
    app_id = submit_sleeping_am(cluster, "erin")

    def launched() -> dict[str, Any] | None:
        found = requests.get(f"{api}/apps/{app_id}/appattempts", headers=headers, timeout=10).json()["appAttempts"]["appAttempt"]
        return next((a for a in found if a["appAttemptState"] == "LAUNCHED" and a["nodeHttpAddress"]), None)

    attempt = wait_for("the AM launched", launched)
    node = next(n for n in cluster.nodes if n.nm_webapp == attempt["nodeHttpAddress"])
    node_id = next(n["id"] for n in requests.get(f"{api}/nodes", headers=headers, timeout=10).json()["nodes"]["node"]
                   if n["nodeHTTPAddress"] == node.nm_webapp)  # fmt: skip
    log = Path(node.directory) / "logs" / "daemon.out"
    before = len(log.read_text(errors="replace"))
    os.kill(node.pid, signal.SIGTERM)

    def state() -> str:
        return str(next(n["state"] for n in requests.get(f"{api}/nodes", headers=headers, timeout=10).json()["nodes"]["node"]
                        if n["id"] == node_id))  # fmt: skip

    wait_for("DECOMMISSIONING", lambda: state() == "DECOMMISSIONING", 30)
    os.kill(node.pid, signal.SIGTERM)
    wait_for(f"{node.name} stopped", lambda: not alive(node.pid), 60)
    text = log.read_text(errors="replace")[before:]
    assert "stopping at once" in text and "on CUT_SHORT" in text, text[-3000:]
    assert "GRACE_PASSED" not in text and "marked this node DECOMMISSIONED" not in text, text[-3000:]
    assert state() != "DECOMMISSIONED"
    cluster.nodes[cluster.nodes.index(node)] = local_cluster.restart_node(cluster.workdir, node.name, say=lambda _: None)
    requests.put(f"{api}/apps/{app_id}/state", json={"state": "KILLED"}, headers=headers, timeout=10)
