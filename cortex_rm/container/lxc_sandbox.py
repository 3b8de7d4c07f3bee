"""What makes an LXC container a sandbox beyond its config: its application's ids, the
ownership of what it writes, its cgroup, and its place in the node's network policy.

``ContainerSandbox.admit`` runs (on the reactor, a few syscalls) before each start:

* the container's application takes (or keeps) its block of the node's host ids
  (``id_ranges.IdBlocks``); the container's root is the block's first id;
* the dirs the container writes (work dir and its direct entries — ``tmp/``,
  ``container_tokens``, the launch script — log dir and the application's own
  dirs, ``ContainerSpec.own_dirs``) are given to that root; read-only dirs keep
  their owner and must be readable by "other" (they are: resources the
  NodeManager localizes are 0644 in 0755 dirs);
* on the application's first container, its cgroup ``cortex/n<node>/b<block>`` is
  made in the cgroup2 hierarchy (every container of the application is created below
  it, ``cortex/n<node>/b<block>/<container id>``, below the node's cgroup that holds
  the caps: ``node_cgroup.py``) and the network policy is told
  (``ContainerFirewall.application_added``), so the rules that name the
  application's cgroup and ids are in place before its first process runs.

The containers' ``/sys`` is a sysfs the runtime mounts once, read-only and private, at
``<base_dir>/sysfs`` (``mount_sysfs``; ``unmount_sysfs`` when the runtime closes): a
user namespace may not mount a sysfs of a network namespace it does not own, and the
host's ``/sys`` would bring the host's cgroup mounts along (see ``lxc_config.py``).

``release`` undoes the last step when the NodeManager cleans the application up:
the block is free for another application, its rules and its (empty) cgroups go.
The files it left are deleted by the NodeManager as root, whoever owns them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from twisted.logger import Logger

from cortex_rm.container import pinned_dirs
from cortex_rm.container.id_ranges import IdBlock, IdBlocks, IdRange, IdRangeError
from cortex_rm.container.net_policy import Endpoint
from cortex_rm.container.node_cgroup import hierarchies, node_cgroup_name
from cortex_rm.container.runtime import ContainerSpec, ContainerStartError

log = Logger()

#: The containers' sysfs, in the runtime's base dir.
SYSFS_DIR: Final = "sysfs"
#: Where the cgroup2 hierarchy is mounted, tried in this order (hybrid hosts, then pure v2).
CGROUP2_MOUNTS: Final = ("unified", "")


class ContainerFirewall(Protocol):
    """The node's network policy as the runtime sees it (``net_firewall.NftFirewall``)."""

    def application_added(self, block: IdBlock, cgroup: str, peers: frozenset[Endpoint], slot: int | None) -> None:
        """Rules for a new application's containers (``cgroup``: its cgroup2 path below the
        cgroup2 root, as ``nft`` names it; ``slot``: its slot of source ports, None for none);
        ContainerStartError when they cannot be installed."""

    def peers_added(self, block: IdBlock, peers: frozenset[Endpoint]) -> None:
        """More endpoints outside the cluster that the application's containers may reach."""

    def application_removed(self, block: IdBlock, cgroup: str) -> None:
        """The application has ended here: its rules go."""


@dataclass(frozen=True)
class Admission:
    """What a container was given: its application's ids and its cgroup (below each hierarchy's root)."""

    ids: IdBlock
    cgroup_dir: str


def cgroup2_root(cgroup_root: Path) -> Path:
    """The cgroup2 hierarchy's mount under ``cgroup_root`` (``unified/`` on a hybrid host)."""
    for name in CGROUP2_MOUNTS:
        path = cgroup_root / name if name else cgroup_root
        if (path / "cgroup.controllers").exists():
            return path
    raise ContainerStartError(f"no cgroup2 hierarchy at {cgroup_root}/unified or {cgroup_root}: the network policy needs it")


class ContainerSandbox:
    """Blocks of ids per application, ownership, cgroups and the firewall (see the module docstring)."""

    def __init__(self, ids: IdRange, cgroup_root: Path, firewall: ContainerFirewall | None = None) -> None:
        self.blocks = IdBlocks(ids)
        #: The node's cgroup, parent of its applications' (``node_cgroup.py``).
        self.node_cgroup = node_cgroup_name(ids)
        self.cgroup_root = cgroup_root
        self.firewall = firewall
        self._peers: dict[str, frozenset[Endpoint]] = {}

    def app_cgroup(self, block: IdBlock) -> str:
        return f"{self.node_cgroup}/b{block.number}"

    def nft_cgroup(self, block: IdBlock) -> str:
        """The application's cgroup as ``nft`` names it: relative to /sys/fs/cgroup."""
        v2 = cgroup2_root(self.cgroup_root)
        return str((v2 / self.app_cgroup(block)).relative_to(self.cgroup_root))

    def admit(self, spec: ContainerSpec) -> Admission:
        """Ids, ownership, cgroup and rules for ``spec`` (see the module docstring)."""
        try:
            block, new = self.blocks.take(spec.application)
        except IdRangeError as e:
            raise ContainerStartError(f"{spec.container_id}: {e}") from e
        peers = spec.peers  # (the NodeManager kept only those on the host the application came from)
        try:
            if new:
                (cgroup2_root(self.cgroup_root) / self.app_cgroup(block)).mkdir(parents=True, exist_ok=True)
                if self.firewall is not None:
                    self.firewall.application_added(block, self.nft_cgroup(block), peers, spec.port_slot)
                self._peers[spec.application] = peers
                log.info("application {app}: host ids {root}+65536", app=spec.application, root=block.root)
            elif self.firewall is not None and not peers <= self._peers.get(spec.application, frozenset()):
                self.firewall.peers_added(block, peers)
                self._peers[spec.application] = self._peers.get(spec.application, frozenset()) | peers
            give_to(spec, block.root)
        except (OSError, ContainerStartError) as e:
            if new:
                self.release(spec.application)
            if isinstance(e, ContainerStartError):
                raise
            raise ContainerStartError(f"{spec.container_id}: could not prepare its sandbox: {e}") from e
        return Admission(block, f"{self.app_cgroup(block)}/{spec.container_id}")

    def readmit(self, application: str, block_number: int, peers: frozenset[Endpoint], slot: int | None) -> IdBlock:
        """A container of ``application`` found running at a restart (NodeManager recovery): its
        application holds the block it ran with again and its rules are back (the node's table was
        replaced at start); ContainerStartError when that cannot be."""
        known = self.blocks.of(application)
        try:
            block = self.blocks.take_again(application, block_number)
        except IdRangeError as e:
            raise ContainerStartError(f"{application}: {e}") from e
        if self.firewall is not None:
            if known is None:
                self.firewall.application_added(block, self.nft_cgroup(block), peers, slot)
            elif not peers <= self._peers.get(application, frozenset()):
                self.firewall.peers_added(block, peers)
        self._peers[application] = self._peers.get(application, frozenset()) | peers
        return block

    def release(self, application: str) -> None:
        """``application`` has ended on this node: free its ids, drop its rules and cgroups."""
        block = self.blocks.release(application)
        self._peers.pop(application, None)
        if block is None:
            return
        if self.firewall is not None:
            try:
                self.firewall.application_removed(block, self.nft_cgroup(block))
            except ContainerStartError as e:
                log.warn("application {app}: {error}", app=application, error=str(e))
        for hierarchy in hierarchies(self.cgroup_root):
            try:
                (hierarchy / self.app_cgroup(block)).rmdir()
            except OSError:
                pass


def give_to(spec: ContainerSpec, uid: int) -> None:
    """Make the dirs ``spec``'s container writes its root's (uid = gid = ``uid`` on the host).

    Every dir is reached without following a symlink and chowned through its descriptor,
    the work dir's entries (if the dir is still root's) without following theirs; the work dir and
    log dir must still be the ones the NodeManager made (or gave ``uid`` when the id ran
    before: ``pinned_dirs``): a container of the application may have swapped them for a
    symlink (say to /etc) after ``check_spec_paths``."""
    me = os.geteuid()
    with ExitStack() as fds:
        for own in (spec.work_dir, spec.log_dir):
            parent_fd = fds.enter_context(_closing(pinned_dirs.open_dir(own.parent)))
            fd = fds.enter_context(_closing(pinned_dirs.open_own_dir(parent_fd, own.name, own.parent, given_to=uid)))
            ours = os.fstat(fd).st_uid == me  # else given before: its entries too, or the container's
            os.fchown(fd, uid, uid)
            if own == spec.work_dir and ours:  # nothing in it can be planted (root's, 0755)
                with os.scandir(fd) as entries:
                    for entry in entries:
                        os.chown(entry.name, uid, uid, dir_fd=fd, follow_symlinks=False)
        for directory in dict.fromkeys(spec.own_dirs):
            if directory not in (spec.work_dir, spec.log_dir):
                os.fchown(fds.enter_context(_closing(pinned_dirs.open_dir(directory))), uid, uid)


@contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def mount_sysfs(path: Path) -> None:
    """A sysfs of this process's network namespace at ``path`` (read-only, nosuid, nodev,
    noexec; private, so unmounting it later does not reach the containers' copies), unless
    one is there already (left by a runtime that died); ContainerStartError when it fails."""
    if os.path.ismount(path):
        return
    path.mkdir(parents=True, exist_ok=True)
    for argv in (
        ["mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(path)],
        ["mount", "--make-private", str(path)],
    ):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ContainerStartError(f"cannot mount the containers' sysfs at {path}: {e}") from e
        if done.returncode != 0:
            raise ContainerStartError(f"cannot mount the containers' sysfs at {path}: {done.stderr.strip()}")


def unmount_sysfs(path: Path) -> None:
    """Undo ``mount_sysfs`` (lazily: containers that still run keep their copies)."""
    if os.path.ismount(path):
        done = subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            log.warn("cannot unmount {path}: {error}", path=str(path), error=done.stderr.strip())
            return
    try:
        path.rmdir()
    except OSError:
        pass
