"""One endpoint: a user who knows only one node's address reaches the cluster (``client-config --rm``).

A real local cluster of three daemons: node1 the active RM, node2 a standby RM (``--rm-standbys 1``),
node3 a plain NodeManager.  ``cortex-rm client-config --rm <node3's web address>`` (the command as a
user runs it) asks node3 for its RM directory and writes YARN's HA configuration with an rm-id for each
eligible RM, in the configured order, and says which is active; the real YARN CLI (``ApplicationCLI``:
``yarn application -list``) from pyspark's jars then lists the cluster's applications with it.  Given the
active RM's client (IPC) address instead, the command writes the plain one-RM configuration as before
(the IPC port answers its HTTP probe as Hadoop's does); given a port where nothing listens, likewise,
saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from cortex_rm.local_cluster import USER_TOKEN, free_ports
from cortex_rm.roles.rm_directory import DIRECTORY_PATH
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import LOG4J2_STDERR_PROPERTIES, run_driver
from tests.support.ring_daemons import REPO, wait_for

pytestmark = pytest.mark.integration

APPLICATION_CLI = "org.apache.hadoop.yarn.client.cli.ApplicationCLI"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("one-endpoint"), nodes=3, rm_standbys=1) as c:
        yield c


def directory_of(address: str) -> dict[str, Any] | None:
    """The node's RM directory (as served), None while it has none."""
    try:
        with urllib.request.urlopen(f"http://{address}{DIRECTORY_PATH}", timeout=2) as response:
            section = json.loads(response.read())["resourceManagers"]
            return section if isinstance(section, dict) else None
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def both_rms_listed(address: str) -> bool:
    section = directory_of(address)
    return section is not None and len(section["rm"]) == 2 and section["active"] is not None


def client_config(cluster: RunningCluster, out: Path, rm: str) -> subprocess.CompletedProcess[str]:
    """``cortex-rm client-config`` as a user runs it, with the user's credential and no Spark upload."""
    return subprocess.run(
        [sys.executable, "-m", "cortex_rm", "client-config", "--out", str(out), "--rm", rm,
         "--credential", str(cluster.workdir / USER_TOKEN), "--no-spark-upload"],
        capture_output=True, text=True, timeout=60, cwd=out.parent,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def properties(path: Path) -> dict[str, str]:
    root = ElementTree.parse(path).getroot()
    return {p.findtext("name", ""): p.findtext("value", "") for p in root.iter("property")}


def test_a_plain_nodes_web_address_is_enough_for_the_yarn_cli(cluster: RunningCluster, tmp_path: Path) -> None:
    """``--rm <node3's web address>``: both eligible RMs are written as rm1 (node1, active) and rm2
    (node2, standby), and ``yarn application -list`` works with that configuration."""
    node1, node2, node3 = cluster.nodes
    assert node1.rm is not None and node2.rm is not None and node3.rm is None
    wait_for(lambda: both_rms_listed(node3.nm_webapp), "node3's directory to list both RMs and the active", 60, 0.5)
    out = tmp_path / "conf"
    result = client_config(cluster, out, node3.nm_webapp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{node3.nm_webapp} is a Cortex node; it knows 2 ResourceManagers:" in result.stdout
    assert f"rm1  client {node1.rm.client}  web {node1.rm.webapp}  (active" in result.stdout
    assert f"rm2  client {node2.rm.client}  web {node2.rm.webapp}  (standby" in result.stdout
    yarn = properties(out / "yarn-site.xml")
    assert yarn["yarn.resourcemanager.ha.rm-ids"] == "rm1,rm2"
    assert yarn["yarn.resourcemanager.address.rm1"] == str(node1.rm.client)
    assert yarn["yarn.resourcemanager.address.rm2"] == str(node2.rm.client)
    assert yarn["yarn.resourcemanager.scheduler.address.rm2"] == str(node2.rm.scheduler)
    assert properties(out / "core-site.xml")["dfs.namenode.http-address.cortex.rm2"] == str(node2.rm.webapp)

    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(LOG4J2_STDERR_PROPERTIES)
    (tmp_path / "classes").mkdir()
    listed = run_driver(
        APPLICATION_CLI, ["application", "-list"], classes=tmp_path / "classes", conf_dir=out, timeout=180,
        jvm_options=[f"-Dlog4j2.configurationFile={log4j}", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"],
    )  # fmt: skip
    assert listed.returncode == 0, f"{listed.stdout}\n{listed.stderr[-6000:]}"
    assert "Total number of applications" in listed.stdout, listed.stdout


def test_an_rms_client_address_or_a_silent_port_is_taken_as_an_rm_as_before(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """The active RM's IPC port answers the probe as Hadoop IPC: the plain one-RM configuration for it.  A
    port where nothing listens (a standby's, say) is an RM's client address too, and the command says so."""
    rm = cluster.nodes[0].rm
    assert rm is not None
    result = client_config(cluster, tmp_path / "ipc", str(rm.client))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Cortex node" not in result.stdout
    yarn = properties(tmp_path / "ipc" / "yarn-site.xml")
    assert yarn["yarn.resourcemanager.address"] == str(rm.client)
    assert not any(".ha." in key for key in yarn)

    (silent,) = free_ports(1)
    result = client_config(cluster, tmp_path / "silent", f"127.0.0.1:{silent}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1:{silent}: no connection: " in result.stdout
    assert "taken as a ResourceManager's client address" in result.stdout
    assert properties(tmp_path / "silent" / "yarn-site.xml")["yarn.resourcemanager.address"] == f"127.0.0.1:{silent}"


def test_the_rms_own_web_port_is_refused_saying_what_to_give(cluster: RunningCluster, tmp_path: Path) -> None:
    """The RM's web port serves no directory (only the nodes' own sites do): exit 1, nothing written, and the
    message names both addresses a user may give."""
    rm = cluster.nodes[0].rm
    assert rm is not None
    result = client_config(cluster, tmp_path / "web", str(rm.webapp))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "answered neither as a Cortex node's web port nor as a ResourceManager's client port" in result.stderr
    assert "status_address" in result.stderr
    assert not (tmp_path / "web").exists()
