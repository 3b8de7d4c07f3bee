"""The caps on a real one-node cluster, changed without a restart: the node's config file is
edited and the daemon gets SIGHUP (what ``systemctl reload cortex-rm`` sends).

* ``memory_mb`` and ``vcores``: the RM's REST ``/ws/v1/cluster/nodes`` shows the new
  ``totalResource`` (the next heartbeat carries it), and the node cgroup above its containers
  (``cortex/n<first block>`` in the v1 memory and cpu hierarchies) has the new limits;
* a file that does not validate is refused: the daemon runs on with the caps it had;
* ``schedule``: a window that excludes now makes the RM hold the node out of placement
  (its log says the node no longer offers), and the empty schedule brings it back;
* ``disk_gb``: set to what the node holds plus 12 MB, the node's file system takes an 8 MB file
  and refuses 16 MB more with WebHDFS's ``RemoteException`` naming the cap (the PyPI ``hdfs``
  client raises it as ``HdfsError``), leaving no file.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hdfs.util import HdfsError

from cortex_rm.config.loader import load_config
from cortex_rm.container.id_ranges import IdRange
from cortex_rm.container.node_cgroup import node_cgroup_name
from cortex_rm.container.resource_files import tree_size
from tests.support.ring_daemons import found_within
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.credentials import hdfs_client

pytestmark = pytest.mark.integration

MB = 10**6
MIB = 1 << 20
CGROUPS = Path("/sys/fs/cgroup")
LXC = os.geteuid() == 0 and (CGROUPS / "memory").is_dir()  # (the cluster's NodeManager runs LXC containers)
WAIT_S = 30.0
CAPS = "[nodemanager]\nmemory_mb = 4096\nvcores = 4\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    # one node: the RM's, which is also the NodeManager and DataNode (it gets rm_config)
    with running_cluster(tmp_path_factory.mktemp("caps"), nodes=1, rm_config=CAPS, node_config=CAPS) as c:
        yield c


def _wait(condition: Callable[[], Any], what: str) -> Any:
    return found_within(condition, what, WAIT_S)


def _total(cluster: RunningCluster) -> dict[str, Any]:
    answer = requests.get(f"{cluster.rest}/ws/v1/cluster/nodes", headers=cluster.rest_headers(), timeout=10)
    answer.raise_for_status()
    (node,) = answer.json()["nodes"]["node"]
    total: dict[str, Any] = node["totalResource"]
    return total


def _reload(cluster: RunningCluster, edit: Callable[[str], str]) -> None:
    node = cluster.nodes[0]
    config = Path(node.config)
    config.write_text(edit(config.read_text()))
    os.kill(node.pid, signal.SIGHUP)


def _log(cluster: RunningCluster) -> str:
    return (Path(cluster.nodes[0].directory) / "logs" / "daemon.out").read_text(errors="replace")


def _sandbox_mib(cluster: RunningCluster) -> int:
    """The function sandboxes' budget the node cgroup leaves room for (they run in it too)."""
    events = load_config(cluster.nodes[0].config).events
    return events.max_sandbox_memory_mb if events.execute else 0


def _node_info(cluster: RunningCluster) -> tuple[int, int]:
    """The memory and vcores the node's own ``/ws/v1/node/info`` reports."""
    answer = requests.get(f"http://{cluster.nodes[0].nm_webapp}/ws/v1/node/info", timeout=10)
    answer.raise_for_status()
    info = answer.json()["nodeInfo"]
    return info["totalPmemAllocatedContainersMB"], info["totalVCoresAllocatedContainers"]


def _node_cgroup_limits(cluster: RunningCluster) -> tuple[int, int]:
    """The node cgroup's memory.limit_in_bytes and cpu.cfs_quota_us."""
    ids = IdRange.parse(load_config(cluster.nodes[0].config).nodemanager.container_id_range)
    name = node_cgroup_name(ids)
    memory = int((CGROUPS / "memory" / name / "memory.limit_in_bytes").read_text())
    return memory, int((CGROUPS / "cpu" / name / "cpu.cfs_quota_us").read_text())


def test_new_memory_and_vcores_reach_the_rm_without_a_restart(cluster: RunningCluster) -> None:
    """4096 MB / 4 vcores, then 3072 MB / 2 vcores after SIGHUP: the RM's totalResource follows, and
    so do the node's own /ws/v1/node/info and the node cgroup (memory_mb + the 256 MB container
    overhead + the function sandboxes' budget, vcores CPUs of CFS quota); the daemon is the same process."""
    assert _wait(lambda: (t := _total(cluster))["memory"] == 4096 and t, "the registered caps")["vCores"] == 4
    assert _node_info(cluster) == (4096, 4)
    sandboxes = _sandbox_mib(cluster)
    if LXC:
        assert _node_cgroup_limits(cluster) == ((4096 + 256 + sandboxes) * MIB, 4 * 100_000)
    pid = cluster.nodes[0].pid
    _reload(cluster, lambda text: text.replace("memory_mb = 4096", "memory_mb = 3072").replace("vcores = 4", "vcores = 2"))
    total = _wait(lambda: (t := _total(cluster))["memory"] == 3072 and t, "the new memory_mb at the RM")
    assert total["vCores"] == 2
    os.kill(pid, 0)  # still the daemon that started
    assert "caps now: 3072 MB, 2 vcores" in _log(cluster)
    assert _node_info(cluster) == (3072, 2)
    if LXC:
        assert _node_cgroup_limits(cluster) == ((3072 + 256 + sandboxes) * MIB, 2 * 100_000)


def test_a_config_that_does_not_validate_is_refused_and_the_caps_stay(cluster: RunningCluster) -> None:
    """A negative memory_mb: logged as refused; the daemon runs on; the RM keeps the caps it had."""
    before = _total(cluster)
    good = Path(cluster.nodes[0].config).read_text()
    _reload(cluster, lambda text: text.replace("[nodemanager]\n", "[nodemanager]\nmemory_mb = -1\n", 1) if "memory_mb = -1" not in text else text)
    try:
        _wait(lambda: "reload: " in _log(cluster) and "refused, the caps stay" in _log(cluster), "the refusal in the log")
        os.kill(cluster.nodes[0].pid, 0)
        time.sleep(1.5)  # (a heartbeat or two: nothing may change)
        assert _total(cluster) == before
    finally:
        Path(cluster.nodes[0].config).write_text(good)


def _held_bytes(node_dir: Path) -> int:
    """What the node's disk cap counts: block replicas, unpacked runtime images, localized files."""
    blocks = sum(p.stat().st_size for p in (node_dir / "dfs-data" / "current").rglob("blk_*") if p.suffix != ".meta")
    roots = node_dir / "images" / "roots"
    images = sum(tree_size(roots / m.name.removesuffix(".complete")) for m in roots.glob("*.complete")) if roots.is_dir() else 0
    local = node_dir / "nm-local-dir"
    caches = sum(tree_size(d) for d in local.rglob("filecache") if d.is_dir()) if local.is_dir() else 0
    return blocks + images + caches


def test_a_write_over_a_lowered_disk_cap_is_refused_with_a_remote_exception_naming_it(cluster: RunningCluster) -> None:
    """disk_gb set by SIGHUP to what the node holds plus 12 MB: 8 MB fit, 16 MB more are refused
    (DiskOutOfSpaceException naming disk_gb) and leave no file; the first file reads back whole."""
    node_dir = Path(cluster.nodes[0].directory)
    cap_gb = (_held_bytes(node_dir) + 12 * MB) / 1e9
    _reload(cluster, lambda text: text.replace("[nodemanager]\n", f"[nodemanager]\ndisk_gb = {cap_gb!r}\n", 1))
    _wait(lambda: "caps now:" in _log(cluster) and f"disk {cap_gb!r} GB" in _log(cluster), "the new disk cap in force")
    client = hdfs_client(cluster, "root")
    small = os.urandom(8 * MB)
    client.write("/fits", data=small, overwrite=True, replication=1)
    with pytest.raises(HdfsError) as refused:
        client.write("/too-big", data=os.urandom(16 * MB), overwrite=True, replication=1)
    message = str(refused.value)
    assert "disk cap" in message and "disk_gb = " in message, message
    assert client.status("/too-big", strict=False) is None
    with client.read("/fits") as r:
        assert r.read() == small
    print(json.dumps({"disk_gb": cap_gb, "held_after": _held_bytes(node_dir), "refusal": message}))


def test_a_schedule_that_excludes_now_withholds_the_node_and_clearing_it_brings_it_back(cluster: RunningCluster) -> None:
    """schedule set by SIGHUP to a window two hours from now: the next heartbeat says the node does
    not offer and the RM records it (its log); the empty schedule: offering again."""
    now = time.localtime()
    start = (now.tm_hour + 2) % 24
    window = f"{start:02}:00-{(start + 1) % 24:02}:00"
    _reload(cluster, lambda text: text.replace("[nodemanager]\n", f'[nodemanager]\nschedule = "{window}"\n', 1))
    _wait(lambda: "offering False" in _log(cluster), "the RM hears the node is outside its schedule")
    assert f"schedule {window}: outside it" in _log(cluster)
    _reload(cluster, lambda text: text.replace(f'schedule = "{window}"\n', ""))
    _wait(lambda: "offering True" in _log(cluster), "the RM hears the node offers again")
