"""A real local Cortex cluster for integration and end-to-end tests.

It is started exactly as a user starts one (``cortex_rm.local_cluster.up``: real
daemon processes on loopback with free ports) and stopped with ``down``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cortex_rm import local_cluster
from cortex_rm.client_config import RMAddresses
from cortex_rm.isolation import IsolatedNetwork
from tests.support.reachable import make_reachable
from cortex_rm.processes import alive
from cortex_rm.user_credential import UserCredential, load_credential
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER


@dataclass
class RunningCluster:
    workdir: Path
    conf_dir: Path
    rm: RMAddresses
    nodes: list[local_cluster.LocalNode]

    isolated: IsolatedNetwork | None = None

    @property
    def rest(self) -> str:
        return f"http://{self.rm.webapp}"

    @property
    def client_ip(self) -> str:
        """The address a client on this machine has on the cluster's network (a client-mode
        driver binds it: SPARK_LOCAL_IP)."""
        return "127.0.0.1" if self.isolated is None else self.isolated.gateway

    @property
    def credential(self) -> UserCredential:
        """The credential ``local-cluster up`` issued to the user who ran it (this process's user)."""
        return load_credential(self.workdir / local_cluster.USER_TOKEN)

    def rest_headers(self) -> dict[str, str]:
        """The REST header that authenticates this process's user."""
        return {REST_TOKEN_HEADER: self.credential.rest_header()}

    def daemon_log(self, name: str = "node1") -> str:
        return (self.workdir / name / "logs" / "daemon.out").read_text(errors="replace")


def start_cluster(
    workdir: Path, nodes: int, spark: bool = False, isolated: bool = False, rm_config: str = "",
    ring_settings: tuple[str, ...] = (), node_config: str = "", rm_standbys: int = 0, nm_recovery: bool = False,
) -> RunningCluster:
    """``spark``: upload this machine's Spark jars (``spark.yarn.archive``), as a Spark user's cluster needs.
    ``isolated``: every node in namespaces of its own (``local-cluster up --isolated``).
    ``rm_config``: TOML added to the RM's configuration (``local-cluster up --rm-config``);
    ``ring_settings``: lines added to every node's ``[ring]`` table; ``node_config``: TOML added to
    every node's configuration but the RM's; ``rm_standbys``: nodes 2..N+1 RM-eligible too;
    ``nm_recovery``: NodeManager recovery on every node (``local-cluster up --nm-recovery``)."""
    make_reachable(workdir)  # the nodes' containers are unprivileged: they must reach its dirs
    started = local_cluster.up(
        workdir, nodes, timeout=60, say=lambda _: None, spark_archive=spark, isolated=isolated, rm_config=rm_config,
        ring_settings=ring_settings, node_config=node_config, rm_standbys=rm_standbys, nm_recovery=nm_recovery,
    )
    rm = started[0].rm
    assert rm is not None
    return RunningCluster(workdir, workdir / "hadoop-conf", rm, started, IsolatedNetwork.load(workdir))


@contextmanager
def running_cluster(
    workdir: Path, nodes: int = 2, spark: bool = False, isolated: bool = False, drop_data: bool = True,
    rm_config: str = "", ring_settings: tuple[str, ...] = (), node_config: str = "", rm_standbys: int = 0,
) -> Iterator[RunningCluster]:
    """Start a cluster, yield it, and always stop it (asserting no daemon and no namespace is left);
    then drop its bulky data (``drop_bulk``) unless ``drop_data`` is False (a test that starts the
    cluster again on the same work dir)."""
    cluster = start_cluster(workdir, nodes, spark, isolated, rm_config, ring_settings, node_config, rm_standbys)
    try:
        yield cluster
    finally:
        local_cluster.down(workdir, say=lambda _: None)
        for node in json.loads((workdir / local_cluster.CLUSTER_FILE).read_text()):
            assert not alive(node["pid"]), f"{node['name']} still running"
        assert IsolatedNetwork.load(workdir) is None, "the cluster's namespaces were not removed"
        if drop_data:
            drop_bulk(workdir)


# What a stopped test cluster need not keep: block replicas, unpacked runtime images and
# the NodeManagers' local dirs (localized Spark archives) — gigabytes per cluster.  The
# daemons' and containers' logs stay for a failure's post-mortem.
BULK_DIRS = ("dfs-data", "images", "nm-local-dir")


def drop_bulk(workdir: Path) -> None:
    for name in BULK_DIRS:
        for path in sorted(workdir.rglob(name)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
