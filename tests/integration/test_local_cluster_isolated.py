"""``local-cluster up --isolated``: every node in network and mount namespaces of its own, so
that nothing reaches across through the file system or through localhost; ``down`` removes
what ``up`` made.  Checked from inside the daemons' own namespaces with ``nsenter``."""

from __future__ import annotations

import json
import subprocess
import tomllib
import urllib.request
from pathlib import Path

import pytest

from cortex_rm.isolation import IsolatedNetwork
from tests.support.cluster import running_cluster

pytestmark = pytest.mark.integration


def inside(pid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in the mount and network namespaces of the daemon ``pid``."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", *command], capture_output=True, text=True, timeout=30)


def test_isolated_nodes_share_no_files_and_no_loopback_and_down_removes_their_namespaces(tmp_path: Path) -> None:
    client_file = tmp_path / "client-only.txt"
    client_file.write_text("the client's\n")
    workdir = tmp_path / "cluster"
    with running_cluster(workdir, nodes=2, isolated=True) as cluster:
        network = cluster.isolated
        assert network is not None
        node1, node2 = cluster.nodes
        rm = cluster.rm.webapp
        # the client reaches the RM at its own address on the bridge, with that alone
        with urllib.request.urlopen(f"http://{rm}/ws/v1/cluster/info", timeout=10) as response:
            assert json.load(response)["clusterInfo"]["state"] == "STARTED"
        assert rm.host == network.nodes[0].address and rm.host != "127.0.0.1"
        # the RM's key, made by `up` in node1's directory, is the one its daemon reads at its state dir
        with urllib.request.urlopen(f"http://{node1.nm_webapp}/ws/v1/ring", timeout=10) as response:
            rm_ring_id = json.load(response)["ring"]["node"]["id"]
        assert all(tomllib.loads(Path(n.config).read_text())["ring"]["resource_managers"] == [rm_ring_id] for n in cluster.nodes)
        for node, other, mine in ((node1, node2, network.nodes[0]), (node2, node1, network.nodes[1])):
            seen = inside(node.pid, "sh", "-c", f"ls -A {tmp_path}; ls -A /tmp /root /home; ls {other.directory}; ls {mine.state_dir}")
            assert str(client_file.name) not in seen.stdout and "ring-neighbours.json" in seen.stdout, seen
            assert inside(node.pid, "test", "-e", str(client_file)).returncode != 0
            assert inside(node.pid, "test", "-e", f"{other.directory}/ready.json").returncode != 0
        # node2's loopback is its own: no RM there; through the bridge there is one
        loopback = inside(node2.pid, "curl", "-s", "-m", "3", f"http://127.0.0.1:{rm.port}/ws/v1/cluster/info")
        assert loopback.returncode != 0, loopback.stdout
        bridge = inside(node2.pid, "curl", "-s", "-m", "3", f"http://{rm}/ws/v1/cluster/info")
        assert '"clusterInfo"' in bridge.stdout, bridge
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(n.netns in namespaces for n in network.nodes)
    assert subprocess.run(["ip", "link", "show", network.bridge], capture_output=True).returncode != 0
    assert IsolatedNetwork.load(workdir) is None
