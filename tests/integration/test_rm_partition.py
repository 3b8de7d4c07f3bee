"""A network partition that isolates the active RM: it stops acting by itself, and comes back a standby.

A local three-node Cortex in namespaces of its own (``local-cluster up --isolated --rm-standbys 2``: every
node RM-eligible, node1 the first active).  nftables in node1's network namespace then drop everything
between node1 and the other two nodes, while this test (the client, on the bridge) still reaches all three:
unlike a SIGSTOP, node1 runs on, hears no majority, and must notice by itself that its lease is over.

What must hold: node1 stops answering as the active (its IPC ports close) no later than another node
answers as the active -- never two at once; a write acknowledged by node1 before or during the cut, and one
acknowledged by the new active, are all on the new active; once the partition heals node1 answers as a
standby (a redirect to the new active) and catches up on what it missed.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hdfs import HdfsError, TokenClient

from cortex_rm.isolation import IsolatedNetwork
from cortex_rm.yarn.addresses import HostPort
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.ring_daemons import wait_for

pytestmark = pytest.mark.integration

TABLE = "cortex_test_partition"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path / "cluster", nodes=3, isolated=True, rm_standbys=2) as c:
        yield c


def _ha_state(cluster: RunningCluster, index: int) -> str | None:
    rm = cluster.nodes[index].rm
    assert rm is not None
    try:
        answer = requests.get(f"http://{rm.webapp}/ws/v1/cluster/info", timeout=5, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout):
        return None
    return str(answer.json()["clusterInfo"]["haState"]) if answer.status_code == 200 else None


def _refuses(address: HostPort) -> bool:
    try:
        socket.create_connection((address.host, address.port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _journal_applied(cluster: RunningCluster, index: int) -> int:
    """The journal position node ``index`` has applied (its journal's SQLite file, read-only)."""
    path = Path(cluster.nodes[index].directory) / "rm-journal.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("select applied from journal_meta").fetchone()
    return int(row[0]) if row else -1


def _partition(network: IsolatedNetwork, index: int, cut: bool) -> None:
    """Drop (``cut``) or let through again every packet between node ``index`` and the other nodes, in its own
    network namespace; the bridge's address (this test, the client) stays reachable."""
    others = ", ".join(n.address for i, n in enumerate(network.nodes) if i != index)
    netns = network.nodes[index].netns
    if cut:
        rules = (
            f"table inet {TABLE} {{\n"
            f"  chain input {{ type filter hook input priority -10; policy accept; ip saddr {{ {others} }} drop; }}\n"
            f"  chain output {{ type filter hook output priority -10; policy accept; ip daddr {{ {others} }} drop; }}\n"
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rules, text=True, check=True)
    else:
        subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", TABLE], check=True)


def test_an_active_cut_off_by_a_partition_stops_acting_and_rejoins_as_a_standby(cluster: RunningCluster) -> None:
    network = cluster.isolated
    assert network is not None
    rms = [node.rm for node in cluster.nodes]
    assert all(rm is not None for rm in rms)
    wait_for(lambda: [_ha_state(cluster, i) for i in range(3)] == ["ACTIVE", "STANDBY", "STANDBY"],
             "node1 to be the active RM and the others standbys", 60, step=0.5)  # fmt: skip
    token = cluster.credential.webhdfs_delegation()
    old = TokenClient(f"http://{rms[0].webapp}", token=token, timeout=10)  # type: ignore[union-attr]
    old.makedirs("partition/before")

    # During the cut, a client keeps writing to node1: whatever it acknowledges must survive.
    acknowledged: list[str] = []
    stop = threading.Event()

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                old.makedirs(f"partition/during-{n}")
            except (HdfsError, requests.RequestException):
                pass
            else:
                acknowledged.append(f"during-{n}")
            time.sleep(0.2)

    writer = threading.Thread(target=keep_writing, daemon=True)
    _partition(network, 0, cut=True)
    cut_at = time.monotonic()
    try:
        writer.start()
        overlap: list[tuple[float, str | None]] = []

        def taken_over() -> bool:
            # the others first, node1 after: node1 ACTIVE after another answered ACTIVE is an overlap (the other
            # order would count a hand-over between the two reads as one)
            others = [_ha_state(cluster, i) for i in (1, 2)]
            first = _ha_state(cluster, 0)
            if first == "ACTIVE" and "ACTIVE" in others:
                overlap.append((time.monotonic() - cut_at, first))
            return first != "ACTIVE" and "ACTIVE" in others

        wait_for(taken_over, "node2 or node3 to take over while node1 is cut off", 90, step=0.2)
        assert not overlap, f"two nodes answered as the active at once: {overlap}"
        print(f"cut -> another node answers as the active: {time.monotonic() - cut_at:.1f} s")
        new_index = next(i for i in (1, 2) if _ha_state(cluster, i) == "ACTIVE")
        new_rm = rms[new_index]
        assert new_rm is not None
        # node1 stood down by itself: its IPC and tracker ports are closed although it runs on
        wait_for(lambda: _refuses(rms[0].client) and _refuses(rms[0].scheduler), "node1 to close its RM ports", 30,  # type: ignore[union-attr]
                 step=0.5)  # fmt: skip
        assert _ha_state(cluster, 0) != "ACTIVE"
        stop.set()
        writer.join(timeout=60)
        new = TokenClient(f"http://{new_rm.webapp}", token=token, timeout=10)
        new.makedirs("partition/after")
    finally:
        stop.set()
        _partition(network, 0, cut=False)

    listed = set(new.list("partition"))
    assert {"before", "after", *acknowledged} <= listed, (listed, acknowledged)
    # healed: node1 answers as a standby that redirects to the new active, and it has caught up
    wait_for(lambda: _ha_state(cluster, 0) == "STANDBY", "node1 to answer as a standby", 60, step=0.5)
    assert _ha_state(cluster, new_index) == "ACTIVE"

    def redirects() -> bool:  # (503, RetriableException, until node1 hears who leads)
        answer = requests.get(f"http://{rms[0].webapp}/ws/v1/cluster/apps", timeout=5, allow_redirects=False)  # type: ignore[union-attr]
        return answer.status_code == 307 and answer.headers["Location"].startswith(f"http://{new_rm.webapp}/")

    wait_for(redirects, "node1 to redirect to the new active", 60, step=0.5)
    caught_up = _journal_applied(cluster, new_index)
    wait_for(lambda: _journal_applied(cluster, 0) >= caught_up, "node1 to apply what it missed", 60, step=0.5)
    log = cluster.daemon_log("node1")
    assert "this node stands down as the active ResourceManager" in log
