"""``local-cluster up --isolated``: each node as a machine of its own, on one host.

A real cluster's nodes share no files and no loopback with each other or with the client.
On one machine that is made with namespaces (as root):

* **network**: a bridge ``cx-<id>`` in the host's namespace with the first address of a
  /24 it picks from ``10.213.0.0/16`` (one no interface of the host uses), and per node a
  network namespace ``cortex-<id>-n<k>`` joined to the bridge by a veth pair, with the
  next address.  A node's loopback is its own; nodes reach each other, and the client on
  the host reaches them, only through the bridge; nothing is routed beyond it (the host
  forwards nothing for it).  Each node listens on YARN's usual ports on its own address.
* **files**: each daemon runs in its own mount namespace (``unshare --mount``, private
  propagation) where its state directory (``<workdir>/node<k>`` on the host) is mounted at
  ``/var/lib/cortex/<id>-n<k>`` and fresh, empty tmpfs are mounted over ``/tmp``,
  ``/root``, ``/home`` and the work dir: no node sees another's state, the host's
  temporary files or the client's files.  The software it runs (this checkout and its
  virtualenv) stays visible, as an installed package would be.

``down`` stops the daemons, then removes the namespaces, the bridge and the mount points.
What was made is recorded in ``<workdir>/isolation.json``, so ``down`` works from a new
process.  Everything here shells out to ``ip``, ``nsenter``, ``unshare`` and ``mount``
(iproute2 and util-linux).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ISOLATION_FILE = "isolation.json"
SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")
STATE_ROOT = Path("/var/lib/cortex")
HIDDEN = ("/tmp", "/root", "/home")


class IsolationError(Exception):
    """The namespaces could not be made or removed; the message says what to do."""


@dataclass(frozen=True)
class IsolatedNode:
    """One node's namespace, address and state directory as the node sees it."""

    netns: str
    veth: str
    address: str
    state_dir: str  # inside the node's mount namespace


@dataclass(frozen=True)
class IsolatedNetwork:
    """The bridge, the subnet and the nodes' namespaces of one isolated cluster."""

    cluster_id: str
    bridge: str
    gateway: str  # the bridge's address: the host (and the client) on the cluster's network
    prefix: int
    nodes: tuple[IsolatedNode, ...]

    def save(self, workdir: Path) -> None:
        (workdir / ISOLATION_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> IsolatedNetwork | None:
        path = workdir / ISOLATION_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(**{**raw, "nodes": tuple(IsolatedNode(**n) for n in raw["nodes"])})

    def command(
        self, index: int, host_state_dir: Path, workdir: Path, software: Sequence[Path], argv: list[str]
    ) -> list[str]:
        """``argv`` run as node ``index`` (0-based): in its network namespace and a mount
        namespace of its own (see the module docstring).  ``software`` (the checkout, the
        virtualenv) stays visible even under a hidden directory.  The daemon's pid is the one
        spawned (every step ``exec``s the next)."""
        node = self.nodes[index]
        q = shlex.quote
        kept = [d for d in dict.fromkeys(software) if any(_under(d, Path(h)) for h in HIDDEN)]
        stash = [f"{node.state_dir}.software-{i}" for i in range(len(kept))]
        steps = [
            "set -e",
            # first what lives under directories about to be hidden: the state dir, the software
            f"mount --bind {q(str(host_state_dir))} {q(node.state_dir)}",
            *(f"mkdir -p {q(s)}; mount --bind {q(str(d))} {q(s)}" for d, s in zip(kept, stash, strict=True)),
            *(f"mount -t tmpfs -o mode=1777 cortex-hidden {q(d)}" for d in HIDDEN),
            *(f"mkdir -p {q(str(d))}; mount --move {q(s)} {q(str(d))}" for d, s in zip(kept, stash, strict=True)),
            # the work dir (the other nodes' state, the client's config) last: it may lie in the software
            f"mkdir -p {q(str(workdir))}; mount -t tmpfs -o mode=755 cortex-hidden {q(str(workdir))}",
            f"cd {q(node.state_dir)}",
            'exec "$@"',
        ]
        script = "; ".join(steps)
        # nsenter, not `ip netns exec`: that one remounts /sys, losing the cgroup hierarchies
        # under /sys/fs/cgroup that the containers' limits need
        return [
            "nsenter", f"--net=/run/netns/{node.netns}",
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "cortex-node", *argv,
        ]  # fmt: skip


def _under(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as e:
        raise IsolationError(f"cannot run {argv[0]} ({e}): install iproute2 and util-linux") from None
    if done.returncode != 0:
        raise IsolationError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of ``SUBNETS`` that no address of the host's interfaces falls in."""
    used = []
    for line in _run("ip", "-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            used.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for subnet in SUBNETS.subnets(new_prefix=24):
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise IsolationError(f"every /24 of {SUBNETS} is in use on this host; stop other isolated clusters first")


def create(workdir: Path, count: int) -> IsolatedNetwork:
    """Make the bridge and ``count`` namespaces for the cluster in ``workdir`` (undoing what
    was made if a step fails)."""
    cluster_id = hashlib.sha256(str(workdir).encode()).hexdigest()[:6]
    subnet = _free_subnet()
    hosts = list(subnet.hosts())
    network = IsolatedNetwork(
        cluster_id=cluster_id,
        bridge=f"cx-{cluster_id}",
        gateway=str(hosts[0]),
        prefix=subnet.prefixlen,
        nodes=tuple(
            IsolatedNode(
                netns=f"cortex-{cluster_id}-n{k}",
                veth=f"cx{cluster_id}n{k}",
                address=str(hosts[k]),
                state_dir=str(STATE_ROOT / f"{cluster_id}-n{k}"),
            )
            for k in range(1, count + 1)
        ),
    )
    network.save(workdir)
    try:
        _run("ip", "link", "add", network.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{network.gateway}/{network.prefix}", "dev", network.bridge)
        _run("ip", "link", "set", network.bridge, "up")
        for node in network.nodes:
            Path(node.state_dir).mkdir(parents=True, exist_ok=True)
            _run("ip", "netns", "add", node.netns)
            _run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
            _run("ip", "link", "set", node.veth, "master", network.bridge, "up")
            inside = ("ip", "netns", "exec", node.netns)
            _run(*inside, "ip", "addr", "add", f"{node.address}/{network.prefix}", "dev", "eth0")
            _run(*inside, "ip", "link", "set", "eth0", "up")
            _run(*inside, "ip", "link", "set", "lo", "up")
    except IsolationError:
        remove(workdir)
        raise
    return network


def remove(workdir: Path) -> IsolatedNetwork | None:
    """Remove what ``create`` made for ``workdir`` (whatever of it exists); None if nothing was."""
    network = IsolatedNetwork.load(workdir)
    if network is None:
        return None
    existing = set(_run("ip", "netns", "list").split())
    for node in network.nodes:
        if node.netns in existing:
            _run("ip", "netns", "delete", node.netns)  # its veth pair goes with it
        state_dir = Path(node.state_dir)
        for mount_point in (state_dir, *state_dir.parent.glob(f"{state_dir.name}.software-*")):
            try:
                mount_point.rmdir()  # empty: what was mounted there was the namespace's
            except OSError:
                pass
    if subprocess.run(["ip", "link", "show", network.bridge], capture_output=True).returncode == 0:
        _run("ip", "link", "delete", network.bridge)
    (workdir / ISOLATION_FILE).unlink(missing_ok=True)
    return network
