"""``local-cluster down`` after a node daemon was SIGKILLed with a container running leaves nothing of the cluster.

A one-node cluster (node1 is RM and NodeManager) runs an application whose AM is ``sleep`` in a real
LXC container; the test SIGKILLs the daemon, as an operator or the kernel's OOM killer would:

* with NodeManager recovery (``local-cluster up --nm-recovery``) the container outlives its daemon
  (on purpose: a restart would take it back), and ``down`` must kill it;
* without it the container dies with its daemon (the parent-death signal; ``test_nm_leftovers.py``
  checks that bound at the runtime's level), and ``down`` finds no process to kill.

Either way, once ``down`` returns, no process of the container (by pid, by cgroup or by a command line
naming the work dir) is left, ``lxc-ls`` over the node's lxcpath lists nothing, the container's and its
application's cgroups, the node's cgroup tree (``cortex/n<block>``, in every hierarchy), its work dir,
the containers' sysfs mount, the node's nftables table and its id range's lease are gone; and so for
an ``--isolated`` node (recovery on), whose namespaces ``down`` removes.  A recovery record stays (it
is the node's state, as YARN's NM state store is kept): the next start reports that container LOST;
it names no live process.

Skipped only where LXC cannot run (not root, no lxc-execute, no cgroup v1).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from cortex_rm import local_cluster
from cortex_rm.config import load_config
from cortex_rm.container.id_ranges import IdRange
from cortex_rm.container.lxc_leftovers import LeftBehind, left_behind
from cortex_rm.container.lxc_sandbox import SYSFS_DIR
from cortex_rm.container.net_firewall import inet_tables
from cortex_rm.container.net_policy import table_name
from cortex_rm.container.node_cgroup import hierarchies, node_cgroup_name
from cortex_rm.container.nm_recovery import RECOVERY_DIR, ContainerRecordStore, same_process_alive
from cortex_rm.container.range_leases import is_free
from tests.integration.test_nm_leftovers import CGROUPS, GONE_BOUND_S, alive, cgroup_pids, left_cgroups, needs_lxc
from tests.support.cluster import RunningCluster, drop_bulk, start_cluster
from tests.support.credentials import rest_headers
from tests.support.ring_daemons import wait_for

pytestmark = pytest.mark.integration

MARKER = "down-reaps-marker"
#: How long the AM may take to be allocated and start (a container start on a loaded 2-core machine).
START_S = 120.0


def _submit_sleeping_am(cluster: RunningCluster) -> str:
    """Submit, as carol through the RM's REST API, an application whose AM prints a marker and sleeps."""
    rest = f"{cluster.rest}/ws/v1/cluster/apps"
    headers = rest_headers(cluster, "carol")
    app_id: str = requests.post(f"{rest}/new-application", headers=headers, timeout=30).json()["application-id"]
    submission = {
        "application-id": app_id,
        "application-name": "down-reaps",
        "max-app-attempts": 1,
        "resource": {"memory": 256, "vCores": 1},
        "am-container-spec": {"commands": {"command": f"echo {MARKER} > <LOG_DIR>/stdout; exec sleep 600"}},
    }
    reply = requests.post(rest, json=submission, headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    return app_id


def _running_container(node_dir: Path, app_id: str) -> LeftBehind:
    """The node's one LXC container, once its command has printed the marker."""

    def started() -> bool:
        return any(MARKER in p.read_text(errors="replace") for p in (node_dir / "nm-logs" / app_id).glob("*/stdout"))

    wait_for(started, "the AM container runs its command", START_S)
    (container,) = left_behind(node_dir / "lxc")
    assert container.cgroup_dir is not None
    return container


def _processes_of(cgroup: str, workdir: Path) -> list[int]:
    """Every process on this host in ``cgroup`` (any hierarchy) or whose command line names ``workdir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"/{cgroup}" in cgroups or str(workdir).encode() in cmdline:
            if alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {path}/" in line]


@needs_lxc
@pytest.mark.parametrize(
    ("recovery", "isolated"), [(True, False), (False, False), (True, True)],
    ids=["recovery-on", "recovery-off", "isolated-recovery-on"],
)  # fmt: skip
def test_down_after_a_sigkilled_daemon_leaves_nothing_of_the_cluster(
    tmp_path: Path, recovery: bool, isolated: bool
) -> None:
    """SIGKILL of node1's daemon with its AM container running, then ``down``: see the module docstring.
    Isolated (``--isolated``), the node's records and LXC config name its paths in its own mount namespace."""
    workdir = (tmp_path / "cluster").resolve()
    cluster = start_cluster(workdir, nodes=1, nm_recovery=recovery, isolated=isolated)
    said: list[str] = []
    try:
        node = cluster.nodes[0]
        node_dir = Path(node.directory)
        ids = IdRange.parse(load_config(Path(node.config)).nodemanager.container_id_range)
        assert load_config(Path(node.config)).nodemanager.recovery is recovery
        app_id = _submit_sleeping_am(cluster)
        container = _running_container(node_dir, app_id)
        cgroup = container.cgroup_dir
        assert cgroup is not None
        pids = cgroup_pids(cgroup)
        assert pids, "the container's cgroup has no process"
        store = ContainerRecordStore(node_dir / RECOVERY_DIR)
        if recovery:  # (the record gets its init's pid once the daemon hears the container started)
            wait_for(lambda: [r.pid is not None for r in store.load()] == [True], "the record names the init", 30)
            (record,) = store.load()
            assert record.container_id == container.container_id and record.pid in pids
        else:
            assert store.load() == []

        os.kill(node.pid, signal.SIGKILL)
        wait_for(lambda: not alive(node.pid), "the daemon is gone", 10)
        if recovery:
            time.sleep(1.0)  # (a parent-death signal would have ended them within milliseconds)
            assert same_process_alive(record), "with recovery, the container outlives its daemon"
        else:
            took = wait_for(lambda: not any(alive(p) for p in pids), "the container dies with its daemon", GONE_BOUND_S)
            print(f"container gone {took * 1000:.0f} ms after its daemon's SIGKILL")

        assert local_cluster.down(workdir, say=said.append) == 0  # (no daemon was running)
        print("down said:", said)
        killed = [line for line in said if re.search(r"\bkilled [0-9]", line)]
        assert bool(killed) is recovery, said

        assert not any(alive(p) for p in pids)
        assert _processes_of(cgroup, workdir) == []
        listed = subprocess.run(
            ["lxc-ls", "-1", "-P", str(node_dir / "lxc" / "containers")], capture_output=True, text=True, timeout=30
        )
        assert (listed.returncode, listed.stdout.strip()) == (0, ""), listed
        assert left_behind(node_dir / "lxc") == []
        assert left_cgroups(cgroup) == []
        # cortex/b<block>, the application's, in this node's range: gone, unless cgroups that containers of
        # another cluster left in it before (a range is free again once its node stops) keep it
        block = cgroup.rsplit("/", 1)[0]
        application = app_id.removeprefix("application_")
        blocks = [h / block for h in CGROUPS.iterdir() if (h / block).is_dir()]
        assert [p for b in blocks for p in b.iterdir() if application in p.name] == []
        assert all(not (b / "cgroup.procs").read_text().strip() for b in blocks)
        assert [h.name for h in hierarchies(CGROUPS) if (h / node_cgroup_name(ids)).exists()] == []
        assert list((node_dir / "nm-local-dir").rglob(container.container_id)) == []  # its work dir
        assert not os.path.ismount(node_dir / "lxc" / SYSFS_DIR)
        assert _mounts_under(workdir) == []
        if not isolated:  # (isolated, the table was in the node's own network namespace, gone with it)
            assert table_name(f"{ids.base}_{ids.count}") not in inet_tables("nft")
        assert is_free(ids)
        kept = store.load()
        assert [r.container_id for r in kept] == ([container.container_id] if recovery else [])
        assert not any(same_process_alive(r) for r in kept)
    finally:
        local_cluster.down(workdir, say=lambda _: None)
        drop_bulk(workdir)
