"""``cortex-rm local-cluster up|down``: N daemons on one machine, for trying Cortex.

``up`` builds the runtime image (cached), picks ports, writes one directory per node under
the work dir (its config, from ``local_cluster_config.py``, state, logs and pid file), starts each daemon in the background
(on loopback, or ``--isolated`` in namespaces of its own: ``isolation.py``), waits until
every one answers, uploads the image and waits until every node has it, writes the client
configuration to ``<workdir>/hadoop-conf`` and prints how to reach the cluster.  Node 1 is also the ResourceManager;
with ``--rm-standbys N``, nodes 2..N+1 are RM-eligible too (standbys, each with RM ports of its own).
``down`` stops them (SIGTERM, then SIGKILL after a grace period), checks that no
process is left, and kills and removes what a daemon that had died left of its containers
(``local_cluster_reap.py``; with ``--nm-recovery`` they outlive it).  The cluster's layout
is kept in ``<workdir>/cluster.json``.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cortex_rm import isolation
from cortex_rm.client_config import RMAddresses, installed_spark_home, write_client_config
from cortex_rm.cluster_wait import LocalClusterError as LocalClusterError
from cortex_rm.config import RingSection
from cortex_rm import cluster_wait
from cortex_rm.cluster_wait import wait_active, wait_ready, wait_registered
from cortex_rm.container.runtime_image import BuiltImage, ImageError, ImageRecipe, build_image, default_build_cache
from cortex_rm.image_push import push_image
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.local_cluster_reap import NodeReap, reap_stopped_node
from cortex_rm.local_cluster_config import (
    YARN_PORTS as YARN_PORTS, free_range_indices, plan_nodes, rm_identities, with_tables,
)  # fmt: skip
from cortex_rm.node import PID_FILE, READY_FILE
from cortex_rm.processes import alive, kill_marked
from cortex_rm.user_credential import CredentialError, UserCredential, load_credential, request_credential, write_private
from cortex_rm.webhdfs_client import WebHdfsError
from cortex_rm.yarn.addresses import HostPort

CLUSTER_FILE = "cluster.json"
#: The credential ``up`` issues to the user who ran it (``client-config --workdir`` embeds it).
USER_TOKEN = "user.token"
#: Where the RM keeps its admin's credential, in its state dir.
ADMIN_TOKEN = cluster_wait.ADMIN_TOKEN
#: How long the nodes may take to fetch and unpack the runtime image (about 100 MB, 380 MB unpacked).
IMAGE_TIMEOUT_S = 300.0


@dataclass
class LocalNode:
    name: str
    directory: str  # on this machine
    config: str  # on this machine
    pid: int
    nm_webapp: str
    rm: RMAddresses | None = None
    daemon_config: str = ""  # the config's path as the daemon sees it (isolated: in its mount namespace)

    @property
    def isolated(self) -> bool:
        """The daemon runs in namespaces of its own (its config is elsewhere in its mount namespace)."""
        return bool(self.daemon_config) and Path(self.daemon_config).parent != Path(self.directory)


def _software() -> list[Path]:
    """What an isolated daemon must still see: this checkout (Cortex's code), the virtualenv and
    the Python installation it was made from."""
    return [Path(__file__).resolve().parents[1], Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound together, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_host(index: int) -> str:
    """Node ``index`` (1-based) of a local cluster lives at its own loopback address, 127.0.0.<index>.

    Distinct addresses make the nodes distinct hosts to Spark: otherwise executors of
    different nodes would believe they share a disk and read each other's shuffle
    files directly, which their containers cannot see.
    """
    if not 1 <= index <= 254:
        raise LocalClusterError("a local cluster has at most 254 nodes (one loopback address each)")
    return f"127.0.0.{index}"


def _say(msg: str) -> None:
    print(msg, flush=True)


def rm_identity(
    workdir: Path, nodes: int, say: Callable[[str], None], key_bits: int = RingSection().key_bits
) -> NodeIdentity:
    """The key of the RM node (node1) of a cluster without standbys: ``rm_identities`` for one."""
    return rm_identities(workdir, nodes, 1, say, key_bits)[0]


def up(
    workdir: Path,
    nodes: int,
    timeout: float = 60.0,
    say: Callable[[str], None] = _say,
    *,
    spark_archive: bool = True,
    image: bool = True,
    isolated: bool = False,
    rm_config: str = "",
    ring_settings: tuple[str, ...] = (),
    node_config: str = "",
    rm_standbys: int = 0,
    nm_recovery: bool = False,
) -> list[LocalNode]:
    """Start the cluster, wait for it, and write the client configuration (uploading this
    machine's Spark jars into the cluster's file system, unless ``spark_archive`` is False).
    With ``image`` (what containers need), the runtime image is built first (once per
    recipe, cached), named in the RM's configuration, uploaded, and every node has
    unpacked it before this returns.  ``isolated``: each node in network and mount
    namespaces of its own (``isolation.py``), on YARN's usual ports at its own address.
    ``rm_standbys``: nodes 2..N+1 are RM-eligible too (standbys; node1 is the first active RM),
    each with RM ports of its own; every node's ``[ring] resource_managers`` names them all.
    ``rm_config``: TOML tables added to the RM-eligible nodes' configuration (queues and their
    ACLs...); ``ring_settings``: ``key = value`` lines added to every node's ``[ring]`` table;
    ``node_config``: TOML tables added to the configuration of every node that is not RM-eligible;
    ``nm_recovery``: every NodeManager has ``recovery = true`` (its containers outlive its daemon)."""
    workdir = workdir.resolve()
    if (workdir / CLUSTER_FILE).exists():
        running = [n for n in _load(workdir) if _is_daemon_of(n)]
        if running:
            raise LocalClusterError(
                f"a local cluster is already running in {workdir} ({len(running)} daemons); "
                f"stop it first: cortex-rm local-cluster down --workdir {workdir}"
            )
    if nodes < 1:
        raise LocalClusterError("--nodes must be at least 1")
    if not 0 <= rm_standbys < nodes:
        raise LocalClusterError(
            f"--rm-standbys must be at least 0 and less than --nodes ({nodes}): node1 and the standbys are RM-eligible"
        )
    for given, flag in ((rm_config, "--rm-config"), (node_config, "the nodes' added config")):
        try:
            with_tables("", given, "")
        except ValueError as e:
            raise LocalClusterError(f"{flag}: {e}") from None
    eligible = 1 + rm_standbys
    workdir.mkdir(parents=True, exist_ok=True)
    built = _runtime_image(say) if image else None
    network = None
    if isolated:
        try:
            network = isolation.create(workdir, nodes)
        except isolation.IsolationError as e:
            raise LocalClusterError(f"cannot isolate the nodes: {e}") from None
        say(f"isolated: bridge {network.bridge} at {network.gateway}/{network.prefix}, one network and mount namespace per node")
    ports = iter(free_ports(4 * eligible + 3 * nodes)) if network is None else None
    resource_managers = tuple(identity.ring_id_hex for identity in rm_identities(workdir, nodes, eligible, say))
    try:
        indices = free_range_indices(nodes)  # id ranges no node of another local cluster holds
    except ValueError as e:
        raise LocalClusterError(str(e)) from None
    directories = [workdir / f"node{i}" for i in range(1, nodes + 1)]
    state_dirs = directories if network is None else [Path(n.state_dir) for n in network.nodes]
    hosts = [node_host(i) for i in range(1, nodes + 1)] if network is None else [n.address for n in network.nodes]
    plans = plan_nodes(
        hosts, state_dirs, ports, resource_managers, indices, isolated=network is not None,
        runtime_image=built.sha256 if built is not None else "", ring_settings=ring_settings, rm_config=rm_config,
        node_config=node_config, nm_recovery=nm_recovery,
    )  # fmt: skip
    for plan, directory in zip(plans, directories):  # every config written and checked before any daemon starts
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        (directory / "cortex.toml").write_text(plan.config_text)
        if rm_config or node_config or ring_settings or eligible > 1:
            _check_config(directory / "cortex.toml")
    started: list[LocalNode] = []
    for i, (plan, directory, state_dir) in enumerate(zip(plans, directories, state_dirs), start=1):
        config = directory / "cortex.toml"
        for stale in (READY_FILE, PID_FILE):
            (directory / stale).unlink(missing_ok=True)
        daemon_config = state_dir / "cortex.toml"
        argv = [sys.executable, "-m", "cortex_rm", "node", "--config", str(daemon_config)]
        if network is not None:
            argv = network.command(i - 1, directory, workdir, _software(), argv)
        proc = _launch(argv, directory)
        nm_webapp = f"{plan.host}:{plan.ports['nm_web']}"
        node = LocalNode(plan.name, str(directory), str(config), proc.pid, nm_webapp, plan.rm, str(daemon_config))
        started.append(node)
        role = "" if plan.rm is None else " as the ResourceManager" if i == 1 else " as a standby ResourceManager"
        say(f"started {plan.name} (pid {proc.pid}){role}")
    _save(workdir, started)
    try:
        for node in started:
            wait_ready(node, timeout, say)
        assert started[0].rm is not None
        wait_active(started[0], started[0].rm, timeout, say)
        admin = admin_credential(workdir)
        wait_registered(started[0].rm, admin, len(started), timeout, say, states="RUNNING,UNHEALTHY")
        if built is not None:
            push_image(started[0].rm.webapp, built.path, admin.webhdfs_delegation(), say, built.sha256)
            say(f"waiting for {len(started)} node(s) to fetch and unpack the runtime image {built.sha256[:12]} ...")
            wait_registered(started[0].rm, admin, len(started), max(timeout, IMAGE_TIMEOUT_S), say)
    except (LocalClusterError, WebHdfsError) as e:
        down(workdir, say=lambda _: None)
        if isinstance(e, WebHdfsError):
            raise LocalClusterError(f"the cluster started, but uploading the runtime image failed: {e}") from None
        raise
    conf = workdir / "hadoop-conf"
    assert started[0].rm is not None
    try:
        user = getpass.getuser()
        token = request_credential(started[0].rm.webapp, admin, user)
        write_private(workdir / USER_TOKEN, token)
        say(f"issued a credential for {user}: {workdir / USER_TOKEN}")
        credential = load_credential(workdir / USER_TOKEN)
        rms = [node.rm for node in started if node.rm is not None]
        write_client_config(conf, rms, credential, installed_spark_home(), upload_spark=spark_archive, say=say)
    except CredentialError as e:
        down(workdir, say=lambda _: None)
        raise LocalClusterError(f"the cluster started, but issuing your credential failed: {e}") from None
    except WebHdfsError as e:
        down(workdir, say=lambda _: None)
        raise LocalClusterError(f"the cluster started, but uploading Spark's jars failed: {e}") from None
    rm = started[0].rm
    say("")
    say(f"Cortex local cluster is up: {nodes} node(s) under {workdir}")
    say(f"  ResourceManager   {rm.client} (clients), {rm.scheduler} (AMs)")
    say(f"  REST API          http://{rm.webapp}/ws/v1/cluster")
    for node in started[1:eligible]:
        assert node.rm is not None
        rm_node = node.rm
        say(f"  standby RM        {rm_node.client} (clients), {rm_node.scheduler} (AMs), http://{rm_node.webapp}")
    for node in started:
        say(f"  {node.name:<17} http://{node.nm_webapp}/ws/v1/node/info   logs: {node.directory}/logs")
    say("To use it:")
    say(f"  export HADOOP_CONF_DIR={conf} SPARK_CONF_DIR={conf}")
    say("  spark-submit --master yarn --deploy-mode cluster your_job.py")
    say(f"Stop it with: cortex-rm local-cluster down --workdir {workdir}")
    return started


def _launch(argv: list[str], directory: Path) -> subprocess.Popen[bytes]:
    """Start one daemon in the background, its output appended to ``logs/daemon.out``."""
    with open(directory / "logs" / "daemon.out", "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory
        )


def restart_node(workdir: Path, name: str, timeout: float = 60.0, say: Callable[[str], None] = _say) -> LocalNode:
    """Start a stopped node of a (not isolated) local cluster again, with its state; wait until it is ready."""
    workdir = workdir.resolve()
    nodes = _load(workdir)
    index = next((i for i, n in enumerate(nodes) if n.name == name), None)
    if index is None:
        raise LocalClusterError(f"no node {name} in the cluster in {workdir}")
    node = nodes[index]
    if _is_daemon_of(node):
        raise LocalClusterError(f"{name} is running (pid {node.pid}); stop it first")
    if node.isolated:
        raise LocalClusterError("restarting a node of an isolated cluster is not supported; restart the cluster")
    for stale in (READY_FILE, PID_FILE):
        (Path(node.directory) / stale).unlink(missing_ok=True)
    config = node.daemon_config or node.config
    proc = _launch([sys.executable, "-m", "cortex_rm", "node", "--config", config], Path(node.directory))
    nodes[index] = node = replace(node, pid=proc.pid)
    _save(workdir, nodes)
    say(f"restarted {name} (pid {proc.pid})")
    wait_ready(node, timeout, say)
    return node


def _check_config(path: Path) -> None:
    """Refuse, before any daemon starts, a configuration its daemon would refuse."""
    from cortex_rm.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as e:
        raise LocalClusterError(f"a node's configuration would not be valid: {e}") from None


def _runtime_image(say: Callable[[str], None]) -> BuiltImage:
    """The runtime image of the default recipe, built the first time (a minute or two)."""
    try:
        return build_image(ImageRecipe(), default_build_cache(), say)
    except ImageError as e:
        raise LocalClusterError(f"cannot build the containers' runtime image: {e}") from None


def down(workdir: Path, grace: float = 15.0, say: Callable[[str], None] = _say) -> int:
    """Stop every daemon of the cluster; returns how many were running."""
    workdir = workdir.resolve()
    if not (workdir / CLUSTER_FILE).exists():
        raise LocalClusterError(f"no local cluster in {workdir} (no {CLUSTER_FILE})")
    nodes = _load(workdir)
    running = [n for n in nodes if _is_daemon_of(n)]
    for node in running:  # SIGINT: at once (SIGTERM would be a graceful leave, pointless as all go)
        say(f"stopping {node.name} (pid {node.pid})")
        os.kill(node.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(n.pid) for n in running):
        time.sleep(0.05)
    for node in running:
        if alive(node.pid):
            say(f"{node.name} did not stop within {grace:.0f} s; killing it")
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(n.pid) for n in running):
        time.sleep(0.05)
    left = [n for n in running if alive(n.pid)]
    if left:
        raise LocalClusterError(f"processes still running: {', '.join(str(n.pid) for n in left)}")
    # a daemon killed outright could not stop its containers (with NodeManager recovery they run on):
    # kill and remove them as its next start would (local_cluster_reap.py) ...
    reaped = {n.name: _reap_node(n, say) for n in nodes}
    # ... and any other process whose command line names its dirs
    orphans = kill_marked([(str(Path(d)) + "/").encode() for n in nodes for d in _state_dirs(n)])
    if orphans:
        say(f"killed {orphans} container process(es) left by daemons that had died")
    problems = [
        *(f"a live process (pid {r.held_by}) holds {name}'s state dir" for name, r in reaped.items() if r.held_by),
        *(f"{name}'s {', '.join(r.outlived)} outlived SIGKILL" for name, r in reaped.items() if r.outlived),
    ]
    if problems:
        raise LocalClusterError(f"the daemons stopped, but {'; '.join(problems)}: those were left; run down again")
    try:
        network = isolation.remove(workdir)
    except isolation.IsolationError as e:
        raise LocalClusterError(f"the daemons stopped, but removing their namespaces failed: {e}") from None
    if network is not None:
        say(f"removed bridge {network.bridge} and {len(network.nodes)} network namespace(s)")
    say(f"stopped {len(running)} daemon(s); state kept under {workdir}")
    return len(running)


def _reap_node(node: LocalNode, say: Callable[[str], None]) -> NodeReap:
    """What the node's dead daemon left of its containers, killed and removed (``local_cluster_reap``)."""
    found = reap_stopped_node(Path(node.directory), Path(node.config), isolated=node.isolated)
    if found.skipped:
        say(f"{node.name}: its containers were left alone: {found.skipped}")
    if found.killed_inits:
        say(f"{node.name}: killed {len(found.killed_inits)} container(s) its daemon had left running: "
            f"{', '.join(found.killed_inits)}")  # fmt: skip
    if found.removed:
        say(f"{node.name}: removed {len(found.removed)} LXC container(s) its daemon had left (cgroups, work dirs)")
    if found.table_removed:
        say(f"{node.name}: deleted its nftables table {found.table_removed}")
    if found.cgroups_skipped:
        say(f"{node.name}: left its node cgroup trees: {found.cgroups_skipped}")
    if found.cgroups is not None and found.cgroups.removed:
        say(f"{node.name}: removed {len(found.cgroups.removed)} empty cgroup(s) of its node cgroup trees")
    if found.cgroups is not None and found.cgroups.kept:
        say(f"{node.name}: kept cgroups with processes in them: "
            f"{', '.join(f'{path} ({pids})' for path, pids in found.cgroups.kept.items())}")  # fmt: skip
    return found


def _state_dirs(node: LocalNode) -> list[str]:
    """The node's state dir on this machine and, isolated, as the daemon sees it."""
    return [node.directory, *([str(Path(node.daemon_config).parent)] if node.daemon_config else [])]


def _is_daemon_of(node: LocalNode) -> bool:
    """Whether ``node.pid`` still is that node's daemon (a pid may have been reused since)."""
    if not alive(node.pid):
        return False
    try:
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (node.daemon_config or node.config).encode() in cmdline


def _save(workdir: Path, nodes: list[LocalNode]) -> None:
    entries = [{**asdict(n), "rm": n.rm.to_json() if n.rm is not None else None} for n in nodes]
    (workdir / CLUSTER_FILE).write_text(json.dumps(entries, indent=2))


def _load(workdir: Path) -> list[LocalNode]:
    raw = json.loads((workdir / CLUSTER_FILE).read_text())
    out = []
    for entry in raw:
        rm = entry.pop("rm")
        out.append(LocalNode(**entry, rm=RMAddresses.from_json(rm) if rm else None))
    return out


def admin_credential(workdir: Path) -> UserCredential:
    """The admin's credential that the local cluster's RM wrote into its state dir."""
    nodes = _load(workdir.resolve())
    rm_node = next((n for n in nodes if n.rm is not None), None)
    if rm_node is None:
        raise LocalClusterError(f"the cluster in {workdir} has no ResourceManager")
    try:
        return load_credential(Path(rm_node.directory) / ADMIN_TOKEN)
    except CredentialError as e:
        raise LocalClusterError(f"{e}; is the cluster in {workdir} up?") from None


def rm_config(workdir: Path) -> Path:
    """The configuration file of the local cluster's RM node (for ``ledger verify --workdir``)."""
    path = workdir.resolve() / CLUSTER_FILE
    if not path.exists():
        raise LocalClusterError(f"no local cluster in {workdir}")
    for node in _load(workdir.resolve()):
        if node.rm is not None:
            return Path(node.config)
    raise LocalClusterError(f"the cluster in {workdir} has no ResourceManager")


def rm_addresses(workdir: Path) -> RMAddresses:
    """The first RM of the local cluster in ``workdir`` (node1's, the first active one)."""
    return all_rm_addresses(workdir)[0]


def all_rm_addresses(workdir: Path) -> list[RMAddresses]:
    """Every RM-eligible node's RM of the local cluster in ``workdir``, node1's first (``client-config --workdir``)."""
    path = workdir.resolve() / CLUSTER_FILE
    if not path.exists():
        raise LocalClusterError(
            f"no local cluster in {workdir}; start one with: cortex-rm local-cluster up --nodes 3 --workdir {workdir}"
        )
    found = [node.rm for node in _load(workdir.resolve()) if node.rm is not None]
    if not found:
        raise LocalClusterError(f"the cluster in {workdir} has no ResourceManager")
    return found
