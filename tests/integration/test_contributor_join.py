"""A node started from the config `contributor install` wrote joins a local cluster and advertises exactly its
caps: a real one-node cluster (`local-cluster up`), a real `cortex-rm node` on the installed config, the
RM's REST API (`/ws/v1/cluster/nodes`) and Hadoop's own NodeCLI (`yarn node -status`).

The installed config is used as written but for what a second daemon on this machine must have of its own:
its state dir (under the test's tmp dir, not /var/lib/cortex-rm), its three ports (free ones, not YARN's
usual ones) and its container id range (one no running node of this host holds).  Each of those lines is
replaced exactly once, so a change of the installed text fails here rather than passing unnoticed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from cortex_rm import local_cluster
from cortex_rm.config import load_config
from cortex_rm.container.id_ranges import node_id_range
from cortex_rm.contributor_files import NM_PORT, NM_WEB_PORT, RING_PORT, STATE_DIR
from cortex_rm.local_cluster_config import free_range_indices
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import quiet_jvm_options, run_driver
from tests.support.reachable import make_reachable
from tests.support.ring_daemons import REPO, stop_process

pytestmark = pytest.mark.integration

NODE_CLI = "org.apache.hadoop.yarn.client.cli.NodeCLI"
JOIN_S = 120.0  # the new node makes its key (the ring's default key puzzle) and proof of work first


def nodes_by_id(cluster: RunningCluster) -> dict[str, dict[str, Any]]:
    headers = {"Accept": "application/json", **cluster.rest_headers()}
    response = requests.get(f"{cluster.rest}/ws/v1/cluster/nodes", headers=headers, timeout=5)
    response.raise_for_status()
    return {n["id"]: n for n in response.json()["nodes"]["node"]}


def redirected(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the installed config once"
    return text.replace(old, new)


def test_a_node_from_the_installed_config_joins_and_advertises_its_caps(tmp_path: Path) -> None:
    """The contributed node registers with the cluster's RM, RUNNING, with 2 vcores and 2048 MB, no more: in
    the RM's REST API and in NodeCLI's -status."""
    with running_cluster(tmp_path / "cluster", nodes=1) as cluster:
        node1 = load_config(cluster.nodes[0].config)
        root = tmp_path / "root"
        root.mkdir()
        install = subprocess.run(
            [sys.executable, "-m", "cortex_rm", "contributor", "install", "--root", str(root),
             "--introducer", str(node1.ring.address), "--resource-manager", node1.ring.resource_managers[0],
             "--host", "127.0.0.1", "--cpus", "2", "--memory-mb", "2048", "--disk-gb", "10"],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60,
        )  # fmt: skip
        assert install.returncode == 0, install.stderr

        state = make_reachable(tmp_path / "state")
        ring, nm, web = local_cluster.free_ports(3)
        text = (root / "etc/cortex-rm/cortex.toml").read_text()
        text = redirected(text, f'state_dir = "{STATE_DIR}"', f'state_dir = "{state}"')
        text = redirected(text, f'"127.0.0.1:{RING_PORT}"', f'"127.0.0.1:{ring}"')
        text = redirected(text, f'"127.0.0.1:{NM_PORT}"', f'"127.0.0.1:{nm}"')
        text = redirected(text, f'"127.0.0.1:{NM_WEB_PORT}"', f'"127.0.0.1:{web}"')
        installed_range = load_config(root / "etc/cortex-rm/cortex.toml").nodemanager.container_id_range
        free_range = node_id_range(free_range_indices(1)[0])
        text = redirected(text, f'"{installed_range}"', f'"{free_range}"')
        config = tmp_path / "cortex.toml"
        config.write_text(text)
        caps = load_config(config).nodemanager
        assert (caps.vcores, caps.memory_mb, caps.disk_gb) == (2, 2048, 10)

        with open(tmp_path / "daemon.out", "wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "cortex_rm", "node", "--config", str(config)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
            )  # fmt: skip
        try:
            node_id = f"127.0.0.1:{nm}"
            deadline = time.monotonic() + JOIN_S
            while nodes_by_id(cluster).get(node_id, {}).get("state") != "RUNNING":
                log = (tmp_path / "daemon.out").read_text(errors="replace")
                assert daemon.poll() is None, f"the contributed node exited:\n{log[-3000:]}"
                assert time.monotonic() < deadline, f"not RUNNING after {JOIN_S:g} s:\n{log[-3000:]}"
                time.sleep(0.5)
            node = nodes_by_id(cluster)[node_id]
            assert (node["availableVirtualCores"], node["availMemoryMB"]) == (2, 2048)
            assert (node["usedVirtualCores"], node["usedMemoryMB"]) == (0, 0)
            assert node["nodeHTTPAddress"] == f"127.0.0.1:{web}"
            classes = tmp_path / "classes"  # empty: NodeCLI's own main class is run
            classes.mkdir()
            status = run_driver(
                NODE_CLI, ["-status", node_id], classes=classes, conf_dir=cluster.conf_dir,
                jvm_options=quiet_jvm_options(), timeout=180,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr[-3000:]
            assert re.search(r"Node-State\s*:\s*RUNNING\s*$", status.stdout, re.MULTILINE), status.stdout
            assert re.search(r"Memory-Capacity\s*:\s*2048MB\s*$", status.stdout, re.MULTILINE), status.stdout
            assert re.search(r"CPU-Capacity\s*:\s*2 vcores\s*$", status.stdout, re.MULTILINE), status.stdout
        finally:
            stop_process(daemon, grace_s=30)
